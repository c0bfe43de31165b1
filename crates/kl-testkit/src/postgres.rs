//! Fresh PostgreSQL databases for tests, on the server at `KL_TEST_POSTGRES_URL`
//! (`postgres://user:password@host:port`, a role that may create databases): one database per
//! test, so tests run in parallel and again without meeting each other's rows.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

/// The variable naming the test server.
pub const URL_VAR: &str = "KL_TEST_POSTGRES_URL";

/// A database of its own on the test server, empty when created.
#[derive(Debug)]
pub struct FreshDatabase {
    /// Its URL, for `Store::open_postgres` or `kl server --db`.
    pub url: String,
    name: String,
    /// The server's maintenance database, where databases are created and dropped.
    admin_url: String,
}

impl FreshDatabase {
    /// Creates one. `None` when `KL_TEST_POSTGRES_URL` is unset, having printed a SKIPPED line
    /// naming `what`; in CI (`CI` set) that panics instead, since CI must run the variant.
    pub async fn create(what: &str) -> Option<FreshDatabase> {
        let base = crate::service_url(
            URL_VAR,
            &format!("the PostgreSQL variant of {what}"),
            "postgres://kl:kl@127.0.0.1:5432",
        )?;
        let name = crate::unique("kl_test_");
        let admin_url = with_database(&base, "postgres");
        // A locale collation (ICU en-US: 'a' < 'B'), as a production database may have, so
        // tests show the store's ordering does not depend on the database's default.
        admin(
            &admin_url,
            format!(
                "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            ),
        )
        .await;
        Some(FreshDatabase {
            url: with_database(&base, &name),
            name,
            admin_url,
        })
    }

    /// Drops it, closing whatever connections are left. Tests call this once they passed: a
    /// failed test leaves its database to look at.
    pub async fn drop_database(&self) {
        admin(
            &self.admin_url,
            format!("DROP DATABASE {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

async fn admin(url: &str, sql: String) {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL at {url}: {e}"));
    // The name is ours (`crate::unique`): nothing to inject.
    conn.execute(AssertSqlSafe(sql.clone()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// `url` with its database (path) replaced by `database`, keeping any query.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("{scheme}://{authority}/{database}?{q}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_replaces_the_path_and_keeps_the_query() {
        for (url, want) in [
            ("postgres://u:p@h:5432", "postgres://u:p@h:5432/db"),
            ("postgres://u:p@h:5432/", "postgres://u:p@h:5432/db"),
            ("postgres://u:p@h/other", "postgres://u:p@h/db"),
            (
                "postgresql://h/other?sslmode=disable",
                "postgresql://h/db?sslmode=disable",
            ),
        ] {
            assert_eq!(with_database(url, "db"), want, "{url}");
        }
    }
}
