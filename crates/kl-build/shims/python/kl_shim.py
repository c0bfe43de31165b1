"""kl Python shim: serves a user handler over HTTP/1.1, as described in shims/CONTRACT.md.

Loads KL_HANDLER ("module.func", default "main.handler") from KL_CODE_DIR (with KL_DEPS_DIR
after it on sys.path), exiting with status 3 if that fails, then listens on the unix socket
KL_SOCKET or on TCP 0.0.0.0:$PORT (default 8080). Each request body becomes `event`, the
handler's result becomes the response. Standard library only; run as `python3 -u kl_shim.py`
(the platform runs it compiled, `-S`).

Start-up time is the cold start the user pays for, so the shim imports only what every request
needs (a thread per connection on plain sockets; no asyncio, inspect or http.server) and the rest
(asyncio for async handlers, traceback, base64, urllib.parse, collections.abc) when first used.
"""

import json
import os
import socket
import sys
import threading
import time

EXIT_LOAD_FAILED = 3
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HEX_DIGITS = b"0123456789abcdefABCDEF"
# Code flags (CPython's `inspect.CO_*`), read directly so `inspect` stays unimported.
CO_VARARGS = 0x04
CO_COROUTINE = 0x80
# Reason phrases of the statuses a handler or the shim commonly sends; others say "Unknown".
REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def log(message):
    sys.stderr.write(f"kl: {message}\n")


# ---------------------------------------------------------------------------------------------
# Handler loading


def load_handler():
    """Import the handler named by KL_HANDLER; any failure exits with status 3."""
    spec = os.environ.get("KL_HANDLER") or "main.handler"
    module_name, _, func_name = spec.rpartition(".")
    if not module_name or not func_name:
        fail_load(f'KL_HANDLER must look like "module.func", got "{spec}"')
    code_dir = os.environ.get("KL_CODE_DIR") or os.getcwd()
    os.chdir(code_dir)
    sys.path.insert(0, code_dir)
    deps_dir = os.environ.get("KL_DEPS_DIR")
    if deps_dir:
        sys.path.insert(1, deps_dir)
    try:
        __import__(module_name)
        module = sys.modules[module_name]
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit at import, ...
        fail_load(f'cannot import handler module "{module_name}" from {code_dir}:\n{format_exception(exc)}')
    if not hasattr(module, func_name):
        fail_load(f'module "{module_name}" has no attribute "{func_name}"')
    handler = getattr(module, func_name)
    if not callable(handler):
        fail_load(f'"{spec}" is not callable (it is a {type(handler).__name__})')
    return handler


def fail_load(message):
    log(message)
    sys.exit(EXIT_LOAD_FAILED)


def code_of(fn):
    """The code object a call to `fn` runs and whether `fn` binds its first parameter, if known."""
    func = getattr(fn, "__func__", None)  # a bound method (which also forwards `__code__`)
    if func is not None and hasattr(func, "__code__"):
        return func.__code__, True
    if hasattr(fn, "__code__"):
        return fn.__code__, False
    call = getattr(type(fn), "__call__", None)  # an instance with a __call__ method
    if call is not None and hasattr(call, "__code__") and not isinstance(fn, type):
        return call.__code__, True
    return None, False


def is_async(fn):
    code, _ = code_of(fn)
    if code is not None:
        return bool(code.co_flags & CO_COROUTINE)
    import inspect

    return inspect.iscoroutinefunction(fn)


def arity(fn):
    """How many of (event, context) to pass: the positional parameter count, at most 2."""
    code, bound = code_of(fn)
    if code is not None:
        if code.co_flags & CO_VARARGS:
            return 2
        return max(0, min(2, code.co_argcount - bound))
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return min(2, sum(p.kind in positional for p in params))


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 requests


class HttpError(Exception):
    """A request the shim answers with an error itself (when reading it: then closes)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code


class ClientGone(Exception):
    """The client closed the connection in the middle of a request."""


class Request:
    __slots__ = ("method", "target", "version", "headers", "body")

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = b""

    @property
    def keep_alive(self):
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


def bad_request(message):
    return HttpError(400, "BadRequest", message)


def read_request(rfile, conn):
    """The next request on the connection, or None when the client closed it cleanly."""
    lines = read_head(rfile)
    if lines is None:
        return None
    request = parse_head(lines)
    length = body_length(request)
    if length is None:
        expect_continue(request, conn)
        request.body = read_chunked(rfile)
    elif length:
        expect_continue(request, conn)
        request.body = read_exactly(rfile, length)
    return request


def read_head(rfile):
    """The lines of the next request head without their line ends, or None on a clean close."""
    budget = MAX_HEAD_BYTES
    line = rfile.readline(budget + 1)
    while line in (b"\r\n", b"\n"):  # tolerate stray empty lines between requests
        line = rfile.readline(budget + 1)
    if not line:
        return None
    lines = []
    while True:
        budget -= len(line)
        if budget < 0:
            raise HttpError(431, "HeadersTooLarge", f"request head exceeds {MAX_HEAD_BYTES} bytes")
        if not line.endswith(b"\n"):
            raise bad_request("incomplete request head")
        line = line.rstrip(b"\r\n")
        if not line:
            return lines
        lines.append(line.decode("latin-1"))
        line = rfile.readline(budget + 1)


def parse_head(lines):
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise bad_request("malformed request line")
    method, target, version = parts
    if not method or not TOKEN_CHARS.issuperset(method):
        raise bad_request("malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise bad_request(f"unsupported protocol version {version!r}")
    if target.startswith(("http://", "https://")):  # absolute form: keep path and query
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/") and target != "*":
        raise bad_request("malformed request target")
    return Request(method, target, version, parse_headers(lines[1:]))


def parse_headers(lines):
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or not TOKEN_CHARS.issuperset(name):
            raise bad_request(f"malformed header line {line[:100]!r}")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def body_length(request):
    """The Content-Length of the body (0 if none), or None for a chunked body."""
    headers = request.headers
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise bad_request("both Transfer-Encoding and Content-Length")
        if headers["transfer-encoding"].strip().lower() != "chunked":
            raise HttpError(501, "NotImplemented", "only the chunked transfer coding is supported")
        return None
    values = {v.strip() for v in headers.get("content-length", "0").split(",")}
    value = values.pop()
    if values or not value.isdigit() or not value.isascii():
        raise bad_request("malformed Content-Length")
    if int(value) > MAX_BODY_BYTES:
        raise HttpError(413, "PayloadTooLarge", f"body exceeds {MAX_BODY_BYTES} bytes")
    return int(value)


def expect_continue(request, conn):
    if request.version == "HTTP/1.1" and request.headers.get("expect", "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def read_exactly(rfile, size):
    data = rfile.read(size)
    if len(data) != size:
        raise ClientGone()
    return data


def read_chunked(rfile):
    chunks, size = [], 0
    while True:
        line = read_line(rfile)
        digits = line.rstrip(b"\r\n").split(b";", 1)[0].strip()
        if not digits or digits.strip(HEX_DIGITS):
            raise bad_request("malformed chunk size")
        chunk_size = int(digits, 16)
        if chunk_size == 0:
            break
        size += chunk_size
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "PayloadTooLarge", f"body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(read_exactly(rfile, chunk_size))
        if read_exactly(rfile, 2) != b"\r\n":
            raise bad_request("malformed chunk")
    trailers = 0
    while (line := read_line(rfile)).rstrip(b"\r\n"):
        trailers += len(line)
        if trailers > MAX_HEAD_BYTES:
            raise HttpError(431, "HeadersTooLarge", f"trailers exceed {MAX_HEAD_BYTES} bytes")
    return b"".join(chunks)


def read_line(rfile):
    line = rfile.readline(MAX_HEAD_BYTES + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEAD_BYTES:
            raise bad_request("chunk line too long")
        raise ClientGone()
    return line


# ---------------------------------------------------------------------------------------------
# Request -> event and context


def decode_event(body, content_type):
    if not body:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower() if content_type else ""
    if not media_type:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
            raise HttpError(400, "InvalidJSON", str(err)) from None
    if media_type.startswith("text/") or media_type == "application/x-www-form-urlencoded":
        return body.decode("utf-8", errors="replace")
    return body


class Context:
    """The handler's second argument: who is being called, for which request, until when."""

    __slots__ = (
        "request_id", "function_name", "revision", "tenant", "deadline_ms",
        "method", "path", "query", "headers", "cloudevent",
    )

    def __init__(self, request):
        headers = request.headers
        path, _, query = request.target.partition("?")
        self.request_id = headers.get("x-kl-request-id")
        self.function_name = os.environ.get("KL_FUNCTION")
        self.revision = os.environ.get("KL_REVISION")
        self.tenant = os.environ.get("KL_TENANT")
        deadline = headers.get("x-kl-deadline-ms", "")
        self.deadline_ms = int(deadline) if deadline.isdigit() and deadline.isascii() else None
        self.method = request.method
        self.path = path
        self.query = {}
        if query:
            from urllib.parse import parse_qsl

            for key, value in parse_qsl(query, keep_blank_values=True):
                self.query.setdefault(key, value)
        self.headers = headers
        self.cloudevent = None
        attributes = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        if attributes:
            from urllib.parse import unquote

            # Binary mode percent-encodes attribute values (space, '"', '%', non-ASCII).
            self.cloudevent = {name: unquote(value) for name, value in attributes.items()}

    def get_remaining_time_in_millis(self):
        """Milliseconds left before the deadline (never negative); infinite without a deadline."""
        if self.deadline_ms is None:
            return float("inf")
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return f"Context(request_id={self.request_id!r}, function_name={self.function_name!r})"


# ---------------------------------------------------------------------------------------------
# Result -> response


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body


def to_json(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def json_response(status, value):
    return Response(status, [("content-type", "application/json")], to_json(value))


def error_response(status, code, message, error_type=None):
    error = {"code": code, "message": message}
    if error_type is not None:
        error["type"] = error_type
    return json_response(status, {"error": error})


def is_mapping(value):
    if isinstance(value, dict):
        return True
    if value is None or isinstance(value, (str, bytes, bytearray, memoryview, int, float, list, tuple)):
        return False
    from collections.abc import Mapping

    return isinstance(value, Mapping)


def map_result(result):
    if is_mapping(result) and is_number(result.get("statusCode")):
        return map_http_result(result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(200, [("content-type", "application/octet-stream")], bytes(result))
    return json_response(200, result)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def map_http_result(result):
    """A {statusCode, headers, body, isBase64Encoded} result, as AWS Lambda HTTP integrations."""
    status = result["statusCode"]
    if status != int(status) or not 200 <= status <= 599:
        raise ValueError(f"statusCode must be an integer from 200 to 599, got {status!r}")
    headers = response_headers(result.get("headers"))
    body, default_type = encode_body(result.get("body"), result.get("isBase64Encoded") is True)
    if default_type and not any(name == "content-type" for name, _ in headers):
        headers.append(("content-type", default_type))
    return Response(int(status), headers, body)


def response_headers(headers):
    if headers is None:
        return []
    if not is_mapping(headers):
        raise TypeError(f"headers must be a mapping, got {type(headers).__name__}")
    pairs = []
    for name, value in headers.items():
        name = str(name).lower()
        if value is None or name in ("content-length", "transfer-encoding", "connection"):
            continue
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ValueError(f"invalid header name {name!r}")
        for item in value if isinstance(value, (list, tuple)) else (value,):
            item = str(item)
            if any(c in item for c in "\r\n\0") or not is_latin1(item):
                raise ValueError(f"header {name!r} has a value HTTP cannot carry: {item!r}")
            pairs.append((name, item))
    return pairs


def is_latin1(text):
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def encode_body(body, is_base64):
    """The body bytes and their default content type (None for no body)."""
    if body is None:
        return b"", None
    if isinstance(body, str) and is_base64:
        import base64

        try:
            return base64.b64decode(body), "application/octet-stream"
        except ValueError as err:  # binascii.Error
            raise ValueError(f"body is not valid base64: {err}") from None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), "application/octet-stream"
    return to_json(body), "application/json"


def render(response, keep_alive, head_only):
    lines = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"content-length: {len(response.body)}")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


# ---------------------------------------------------------------------------------------------
# Server


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT to leave the accept loop."""


class Shim:
    def __init__(self, handler):
        self.handler = handler
        self.handler_is_async = is_async(handler)
        self.handler_arity = arity(handler)
        self.stopping = False
        self.in_flight = 0
        self.idle = threading.Condition()
        self.loop = None  # the asyncio loop of async handlers, started on first use
        self.loop_lock = threading.Lock()

    def serve_connection(self, conn):
        """One thread per connection, so a slow handler never holds up `/healthz` or others."""
        rfile = conn.makefile("rb")
        try:
            while not self.stopping:
                try:
                    request = read_request(rfile, conn)
                except HttpError as err:
                    conn.sendall(render(error_response(err.status, err.code, str(err)), False, False))
                    break
                if request is None or not self.answer(request, conn):
                    break
        except (OSError, ClientGone):
            pass  # the client went away or sent garbage mid-body
        finally:
            rfile.close()
            conn.close()

    def answer(self, request, conn):
        """Serve one request; returns whether the connection stays open."""
        with self.idle:
            self.in_flight += 1
        try:
            response = self.respond(request)
            keep_alive = request.keep_alive and not self.stopping
            conn.sendall(render(response, keep_alive, request.method == "HEAD"))
            return keep_alive
        finally:
            with self.idle:
                self.in_flight -= 1
                if not self.in_flight:
                    self.idle.notify_all()

    def respond(self, request):
        if request.method == "GET" and request.target == "/healthz":
            return json_response(200, {"status": "ok"})
        try:
            event = decode_event(request.body, request.headers.get("content-type"))
        except HttpError as err:
            return error_response(err.status, err.code, str(err))
        context = Context(request)
        try:
            result = self.invoke(event, context)
        except Exception as exc:  # noqa: BLE001 - any handler failure becomes a 500
            log(f"handler failed (request {context.request_id or '-'}):\n{format_exception(exc)}")
            return error_response(500, "FunctionError", str(exc), type(exc).__name__)
        try:
            return map_result(result)
        except Exception as exc:  # noqa: BLE001 - anything that cannot become a response
            log(f"cannot encode result (request {context.request_id or '-'}): {type(exc).__name__}: {exc}")
            return error_response(500, "SerializationError", str(exc), type(exc).__name__)

    def invoke(self, event, context):
        args = (event, context)[: self.handler_arity]
        if self.handler_is_async:
            return self.run_async(self.handler(*args))
        result = self.handler(*args)
        if hasattr(result, "__await__"):
            result = self.run_async(result)
        return result

    def run_async(self, awaitable):
        """Runs an awaitable on the one event loop all async handlers share, and waits for it."""
        import asyncio

        with self.loop_lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, name="kl-asyncio", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(awaited(awaitable), self.loop).result()

    def run(self):
        import signal

        signals = (signal.SIGTERM, signal.SIGINT)

        def stop(_signum, _frame):
            # Later signals are ignored, up to the exit: the interpreter's finalization puts
            # back the default handler (death by signal) for a Python handler, not for SIG_IGN.
            for sig in signals:
                signal.signal(sig, signal.SIG_IGN)
            self.stopping = True
            raise Stop()

        for sig in signals:
            signal.signal(sig, stop)
        socket_path = os.environ.get("KL_SOCKET")
        listener = listen(socket_path)
        try:
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()
        except Stop:
            pass
        # Stop accepting and let the requests in progress finish (each gets `connection: close`);
        # idle keep-alive connections end with the process.
        listener.close()
        with self.idle:
            self.idle.wait_for(lambda: not self.in_flight)
        if socket_path:
            remove_file(socket_path)


async def awaited(awaitable):
    return await awaitable


def listen(socket_path):
    if socket_path:
        remove_file(socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_path)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", int(os.environ.get("PORT") or 8080)))
    listener.listen(1024)
    return listener


# Frames of the shim's own plumbing are left out of the tracebacks shown to the user. (This
# file's name is taken from its code: when the platform runs the precompiled `kl_shim.pyc`,
# `__file__` names that, while frames name the source.)
SHIM_FILE = awaited.__code__.co_filename


def format_exception(exc):
    """The traceback, starting at the first frame that is not the shim's own plumbing."""
    import traceback

    plumbing_dirs = tuple(
        os.path.dirname(sys.modules[name].__file__) + os.sep
        for name in ("asyncio", "concurrent.futures")
        if name in sys.modules
    )
    tb = exc.__traceback__
    while tb is not None and is_plumbing(tb.tb_frame.f_code.co_filename, plumbing_dirs):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def is_plumbing(filename, plumbing_dirs):
    return filename == SHIM_FILE or filename.startswith("<frozen importlib") or filename.startswith(plumbing_dirs)


def remove_file(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main():
    Shim(load_handler()).run()


if __name__ == "__main__":
    main()
