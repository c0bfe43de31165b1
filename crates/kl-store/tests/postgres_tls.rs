//! The PostgreSQL store over TLS, as managed databases (RDS, Cloud SQL, Azure) require: the
//! URL's `sslmode` (and `sslrootcert`) decide, and the server's own view of the store's
//! connections shows them encrypted. Needs `KL_TEST_POSTGRES_URL` on a server with `ssl = on`
//! (`.ci/run` turns it on).

use kl_store::Store;
use kl_testkit::postgres::FreshDatabase;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

/// The certificate Debian's `ssl-cert` makes and `.ci/run` gives the test server.
const SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

#[tokio::test]
async fn the_store_connects_over_tls_when_the_url_requires_it_and_verifies_the_server() {
    let Some(db) = FreshDatabase::create("TLS to PostgreSQL").await else {
        return;
    };
    let mut probe = PgConnection::connect(&db.url).await.unwrap();
    let ssl: String = sqlx::query("SHOW ssl")
        .fetch_one(&mut probe)
        .await
        .unwrap()
        .get(0);
    assert_eq!(ssl, "on", "the test server must have ssl = on");

    for query in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&sslrootcert={SERVER_CERT}"),
    ] {
        let store = Store::open_postgres(&with_query(&db.url, &query))
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        store.ensure_tenant("acme").await.unwrap();
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
             FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
        assert!(
            encrypted >= 1 && plain == 0,
            "{query}: {encrypted} encrypted and {plain} plain connections"
        );
        drop(store);
    }

    // A CA that did not sign the server's certificate is refused, not ignored.
    let wrong_ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong_ca.path(), include_str!("support/unrelated-ca.pem")).unwrap();
    let refused = Store::open_postgres(&with_query(
        &db.url,
        &format!("sslmode=verify-ca&sslrootcert={}", wrong_ca.path().display()),
    ))
    .await;
    let Err(error) = refused else {
        panic!("a server certificate no given CA signed was accepted");
    };
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    let _ = probe.close().await;
    db.drop_database().await;
}
