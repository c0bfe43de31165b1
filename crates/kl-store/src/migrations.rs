//! Migrations embedded in the binary, so a `kl` binary carries the schema it needs.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::dialect::Backend;

/// One list per backend, the same versions and names: `migrations/<backend>/NNNN_name.sql`.
/// Applied SQL never changes (sqlx checks each one's checksum); a change is a new migration,
/// in both directories.
macro_rules! migrations {
    ($dir:literal) => {
        &[
            (1, "init", include_str!(concat!("../migrations/", $dir, "/0001_init.sql"))),
            (2, "tenancy", include_str!(concat!("../migrations/", $dir, "/0002_tenancy.sql"))),
            (3, "events", include_str!(concat!("../migrations/", $dir, "/0003_events.sql"))),
            (4, "eventing", include_str!(concat!("../migrations/", $dir, "/0004_eventing.sql"))),
            (5, "metering", include_str!(concat!("../migrations/", $dir, "/0005_metering.sql"))),
        ]
    };
}

const SQLITE: &[(i64, &str, &str)] = migrations!("sqlite");
const POSTGRES: &[(i64, &str, &str)] = migrations!("postgres");

pub(crate) fn migrator(backend: Backend) -> Migrator {
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}
