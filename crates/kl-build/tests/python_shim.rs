//! The Python shim against raw HTTP/1.1 on its unix socket, run by a real `python3` exactly as
//! the platform runs it (`-u -S`): keep-alive, chunked bodies, `Expect: 100-continue`, HEAD,
//! malformed and oversized requests, handler shapes (async, bound method, callable object,
//! arity), `/healthz` while a handler is busy, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

const DEADLINE: Duration = Duration::from_secs(30);

const HANDLERS: &str = r#"
import os
import time

def echo(event, context):
    return {"event": event, "method": context.method, "path": context.path, "query": context.query,
            "ce": context.cloudevent}

def event_only(event):
    return event

def no_args():
    return "none"

def blocked(event):
    """Says it started, then waits until the test releases it."""
    open("started", "w").close()
    while not os.path.exists("release"):
        time.sleep(0.01)
    return "released"

def boom(event):
    raise RuntimeError("boom " + str(event))

async def async_echo(event, context):
    import asyncio
    await asyncio.sleep(0)
    return {"statusCode": 201, "headers": {"x-kind": "async"}, "body": event}

class Greeter:
    def greet(self, event):
        return "hi " + event

    def __call__(self, event, context):
        return "called " + context.method

greet = Greeter().greet
callable_object = Greeter()
"#;

/// A running shim serving one handler of [`HANDLERS`].
struct Shim {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shim {
    fn start(handler: &str) -> Shim {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("code");
        std::fs::create_dir(&code).unwrap();
        std::fs::write(code.join("handlers.py"), HANDLERS).unwrap();
        let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("shims/python/kl_shim.py");
        let socket = dir.path().join("shim.sock");
        let child = Command::new("python3")
            .args(["-u", "-S"])
            .arg(&shim)
            .env("KL_SOCKET", &socket)
            .env("KL_CODE_DIR", &code)
            .env("KL_HANDLER", format!("handlers.{handler}"))
            .env("KL_FUNCTION", "shim-test")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let shim = Shim {
            child,
            socket,
            _dir: dir,
        };
        wait_for("the shim to listen", || UnixStream::connect(&shim.socket).is_ok());
        shim
    }

    fn connect(&self) -> Connection {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// One request on a fresh connection.
    fn call(&self, request: &str) -> Response {
        let mut conn = self.connect();
        conn.send(request);
        conn.response()
    }

    fn terminate(&mut self) -> ExitStatus {
        // A second SIGTERM while stopping is ignored up to the exit, so this is safe after an
        // earlier one.
        kill_process(Pid::from_child(&self.child), Signal::TERM).unwrap();
        let mut status = None;
        wait_for("the shim to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Connection {
    fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).unwrap();
    }

    /// Reads one response; its body is read unless it answers a HEAD request.
    fn read_response(&mut self, head_only: bool) -> Response {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        if !head_only {
            let length: usize = response.header("content-length").unwrap().parse().unwrap();
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).unwrap();
            response.body = String::from_utf8(body).unwrap();
        }
        response
    }

    fn response(&mut self) -> Response {
        self.read_response(false)
    }

    /// Whether the shim closed the connection (EOF) rather than waiting for another request.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        rest.is_empty()
    }
}

fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: fn\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json(response: &Response) -> serde_json::Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let shim = Shim::start("echo");
    let mut conn = shim.connect();
    for i in 0..3 {
        conn.send(&post_json(&format!("/items/{i}?a=1&a=2&b="), &i.to_string()));
        let response = conn.response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        assert_eq!(
            json(&response),
            serde_json::json!({"event": i, "method": "POST", "path": format!("/items/{i}"),
                "query": {"a": "1", "b": ""}, "ce": null})
        );
    }
    conn.send("GET / HTTP/1.1\r\nconnection: close\r\nce-type: a%20b\r\nce-id: 1\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(
        json(&response)["ce"],
        serde_json::json!({"type": "a b", "id": "1"})
    );
    assert!(conn.closed());
}

#[test]
fn chunked_bodies_and_expect_continue_are_read() {
    let shim = Shim::start("echo");
    let response = shim.call(
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\n",
    );
    assert_eq!(json(&response)["event"], "hello world");

    let mut conn = shim.connect();
    conn.send(
        "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\n",
    );
    let interim = conn.read_response(true);
    assert_eq!(interim.status, 100);
    conn.send("body");
    assert_eq!(json(&conn.response())["event"], "body");
}

#[test]
fn malformed_and_oversized_requests_get_an_error_and_a_closed_connection() {
    let shim = Shim::start("echo");
    let too_long = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let cases: [(&str, &str, u16, &str); 7] = [
        ("bad request line", "NONSENSE\r\n\r\n", 400, "BadRequest"),
        ("bad version", "GET / HTTP/2.0\r\n\r\n", 400, "BadRequest"),
        (
            "bad header",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            400,
            "BadRequest",
        ),
        (
            "two lengths",
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            400,
            "BadRequest",
        ),
        (
            "bad length",
            "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            400,
            "BadRequest",
        ),
        (
            "gzip coding",
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            501,
            "NotImplemented",
        ),
        ("head too large", &too_long, 431, "HeadersTooLarge"),
    ];
    for (case, request, status, code) in cases {
        let mut conn = shim.connect();
        conn.send(request);
        let response = conn.response();
        assert_eq!(response.status, status, "{case}: {response:?}");
        assert_eq!(json(&response)["error"]["code"], code, "{case}");
        assert!(conn.closed(), "{case}: the connection stays open");
    }
    let response = shim.call(&post_json("/", "{not json"));
    assert_eq!(
        (response.status, json(&response)["error"]["code"].as_str()),
        (400, Some("InvalidJSON"))
    );
    // A body larger than the limit is refused before it is read.
    let response = shim.call("POST / HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n");
    assert_eq!(response.status, 413);
}

#[test]
fn head_requests_get_headers_without_a_body() {
    let shim = Shim::start("echo");
    let mut conn = shim.connect();
    conn.send("HEAD / HTTP/1.1\r\n\r\n");
    let response = conn.read_response(true);
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    // The next response on the connection starts right away: no body bytes were sent.
    conn.send("GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(json(&conn.response())["status"], "ok");
}

#[test]
fn every_handler_shape_gets_the_arguments_it_takes() {
    let cases = [
        ("event_only", post_json("/", "[1,2]"), 200, "[1,2]"),
        ("no_args", post_json("/", "1"), 200, "\"none\""),
        ("greet", post_json("/", "\"Ada\""), 200, "\"hi Ada\""),
        ("callable_object", post_json("/", "1"), 200, "\"called POST\""),
        ("async_echo", post_json("/", "\"x\""), 201, "x"),
    ];
    for (handler, request, status, body) in cases {
        let shim = Shim::start(handler);
        let response = shim.call(&request);
        assert_eq!(
            (response.status, response.body.as_str()),
            (status, body),
            "{handler}"
        );
    }
    let shim = Shim::start("async_echo");
    assert_eq!(shim.call(&post_json("/", "1")).header("x-kind"), Some("async"));
}

#[test]
fn a_failing_handler_answers_500_and_logs_its_own_traceback() {
    let mut shim = Shim::start("boom");
    let response = shim.call(&post_json("/", "7"));
    assert_eq!(response.status, 500);
    assert_eq!(
        json(&response)["error"],
        serde_json::json!({"code": "FunctionError", "message": "boom 7", "type": "RuntimeError"})
    );
    assert!(shim.terminate().success());
    let mut log = String::new();
    shim.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("handlers.py"), "{log}");
    assert!(
        !log.contains("kl_shim.py"),
        "the shim's own frames are hidden: {log}"
    );
}

#[test]
fn healthz_answers_while_a_handler_is_busy_and_sigterm_lets_it_finish() {
    let mut shim = Shim::start("blocked");
    let code = shim.socket.with_file_name("code");
    let mut busy = shim.connect();
    busy.send(&post_json("/", "1"));
    wait_for("the handler to start", || code.join("started").exists());
    // The handler is blocked: a health check still answers (or this read times out).
    assert_eq!(json(&shim.call("GET /healthz HTTP/1.1\r\n\r\n"))["status"], "ok");

    kill_process(Pid::from_child(&shim.child), Signal::TERM).unwrap();
    wait_for("the listener to close", || {
        UnixStream::connect(&shim.socket).is_err()
    });
    assert!(
        shim.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    std::fs::write(code.join("release"), "").unwrap();
    let response = busy.response();
    assert_eq!((response.status, response.body.as_str()), (200, "\"released\""));
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "a stopping shim closes"
    );
    let status = shim.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!shim.socket.exists(), "the socket file is removed");
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
