//! Migrations embedded in the binary, so a `kl` binary carries the schema it needs.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "tenancy", include_str!("../migrations/0002_tenancy.sql")),
    (3, "events", include_str!("../migrations/0003_events.sql")),
    (4, "eventing", include_str!("../migrations/0004_eventing.sql")),
    (5, "metering", include_str!("../migrations/0005_metering.sql")),
    (6, "secrets", include_str!("../migrations/0006_secrets.sql")),
    (
        7,
        "environments",
        include_str!("../migrations/0007_environments.sql"),
    ),
];

pub(crate) fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
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
