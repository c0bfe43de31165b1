//! `kl server --db postgres://…`: the metadata store in PostgreSQL (`KL_TEST_POSTGRES_URL`, a
//! fresh database per test), through a deploy, an invocation and a restart.

mod support;

use kl_testkit::postgres::FreshDatabase;
use serde_json::json;
use support::{Server, fixture, stdout, text};

#[tokio::test]
async fn a_server_on_postgres_keeps_its_functions_across_a_restart() {
    let Some(db) = FreshDatabase::create("kl server --db").await else {
        return;
    };
    let mut server = Server::start_with(&["--db", &db.url]).await;
    assert!(
        server.server_log().contains("backend=\"postgres\""),
        "{}",
        server.server_log()
    );
    server.deploy(&fixture("py-hello"), &["--name", "hello"]).await;
    let reply = server.call("hello", "", json!({"name": "pg"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["hello"], "pg");

    server.restart().await;
    assert!(
        !server.data_dir().join("kl.db").exists(),
        "no SQLite store in the data dir: the state is in PostgreSQL"
    );
    let listed = server.kl(&["ls"]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(stdout(&listed).contains("hello"), "{}", text(&listed));
    let reply = server.call("hello", "", json!({"name": "again"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["hello"], "again");
    assert_eq!(reply.header("x-kl-revision"), "hello-00001");

    drop(server);
    db.drop_database().await;
}
