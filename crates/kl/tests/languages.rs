//! Deploy and invoke real Python, Node.js and Go functions through the real server and CLI.

mod support;

use serde_json::json;
use support::{Server, fixture, stdout, text};

#[tokio::test]
async fn python_function_with_a_dependency_answers_with_its_context() {
    let server = Server::start().await;
    server.deploy(&fixture("py-hello"), &["--name", "py-hello"]).await;
    let reply = server
        .call("py-hello", "/some/path?x=1&y=two", json!({"name": "kl"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-type").starts_with("application/json"));
    assert_eq!(reply.header("x-kl-revision"), "py-hello-00001");
    let body = reply.json();
    assert_eq!(body["hello"], "kl");
    assert_eq!(
        body["six"], "1.16.0",
        "the requirements.txt dependency is importable"
    );
    assert_eq!(body["function"], "py-hello");
    assert_eq!(body["tenant"], "default");
    assert_eq!(body["revision"], "py-hello-00001");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], json!({"x": "1", "y": "two"}));
    assert_eq!(body["request_id"], reply.header("x-kl-request-id"));

    let out = server
        .kl(&["invoke", "py-hello", "--data", r#"{"name":"cli"}"#])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let printed: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("invoke prints the JSON body");
    assert_eq!(printed["hello"], "cli");
}

#[tokio::test]
async fn python_async_handler_sets_status_headers_and_body() {
    let server = Server::start().await;
    // The name comes from kl.yaml.
    server.deploy(&fixture("py-async"), &[]).await;
    let reply = server
        .req(reqwest::Method::POST, "/fn/default/py-async")
        .header("content-type", "text/plain")
        .body("thing")
        .send()
        .await
        .unwrap();
    let reply = support::Reply::read(reply).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("x-custom"), "yes");
    assert_eq!(reply.header("content-type"), "text/plain");
    assert_eq!(reply.text(), "created thing");
}

#[tokio::test]
async fn node_functions_in_commonjs_and_esm() {
    let server = Server::start().await;
    server.deploy(&fixture("node-cjs"), &["--name", "node-cjs"]).await;
    let reply = server.call("node-cjs", "/p?q=1", json!({"value": 42})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["isNumber"], true, "the package.json dependency is loaded");
    assert_eq!(body["requestId"], reply.header("x-kl-request-id"));
    assert_eq!(body["function"], "node-cjs");
    assert_eq!(body["path"], "/p");
    assert_eq!(body["query"], json!({"q": "1"}));

    server.deploy(&fixture("node-esm"), &["--name", "node-esm"]).await;
    let reply = server.call("node-esm", "", json!({"a": 1})).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("x-esm"), "1");
    assert_eq!(reply.json(), json!({"echoed": {"a": 1}}));
    let reply = server.call("node-esm", "", json!({"action": "raise"})).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["type"], "TypeError");
    assert_eq!(reply.json()["error"]["message"], "esm boom");

    // Handler named in kl.yaml, in an .mjs file.
    server.deploy(&fixture("node-mjs"), &["--name", "node-mjs"]).await;
    let out = server.kl(&["invoke", "node-mjs", "--data", "abc"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "\"mjs:abc\"");
}

#[tokio::test]
async fn go_function_maps_results_errors_and_panics() {
    let server = Server::start().await;
    server.deploy(&fixture("go-hello"), &["--name", "go-hello"]).await;
    let reply = server.call("go-hello", "", json!({"name": "gopher"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["hello"], "gopher");
    assert_eq!(reply.json()["deadline"], true, "the function timeout reaches ctx");
    assert_eq!(reply.json()["function"], "go-hello");

    let reply = server.call("go-hello", "", json!({"action": "status"})).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.header("x-go"), "yes");
    assert_eq!(reply.text(), "teapot");

    let reply = server
        .call("go-hello", "", json!({"action": "fail", "name": "x"}))
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["code"], "FunctionError");
    assert_eq!(reply.json()["error"]["message"], "go failure: x");

    let reply = server.call("go-hello", "", json!({"action": "panic"})).await;
    assert_eq!(reply.status, 500);
    let after = server.call("go-hello", "", json!({"name": "again"})).await;
    assert_eq!(after.status, 200, "the instance survives a panic");
    assert_eq!(after.json()["hello"], "again");
}
