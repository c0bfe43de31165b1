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
            (
                1,
                "init",
                include_str!(concat!("../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                "tenancy",
                include_str!(concat!("../migrations/", $dir, "/0002_tenancy.sql")),
            ),
            (
                3,
                "events",
                include_str!(concat!("../migrations/", $dir, "/0003_events.sql")),
            ),
            (
                4,
                "eventing",
                include_str!(concat!("../migrations/", $dir, "/0004_eventing.sql")),
            ),
            (
                5,
                "metering",
                include_str!(concat!("../migrations/", $dir, "/0005_metering.sql")),
            ),
            (
                6,
                "secrets",
                include_str!(concat!("../migrations/", $dir, "/0006_secrets.sql")),
            ),
            (
                7,
                "environments",
                include_str!(concat!("../migrations/", $dir, "/0007_environments.sql")),
            ),
        ]
    };
}

const SQLITE: &[(i64, &str, &str)] = migrations!("sqlite");
const POSTGRES: &[(i64, &str, &str)] = migrations!("postgres");

/// The newest migration this binary carries (the same on both backends).
pub(crate) fn latest() -> i64 {
    SQLITE.last().map_or(0, |(version, _, _)| *version)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-384 of each SQLite migration as released (what sqlx records when it applies one):
    /// a data dir refuses to open if applied SQL changed, so these must never change.
    const RELEASED_SQLITE: [&str; 5] = [
        "110c4fd511cb388aaef1342d4b83934ddca650f2c75b06fa974302fe377fa04bf7b49c065ddeefad0d8876f0e3177ccd",
        "645d2181b082abe8e3e3728954be3037ed5015ec982f789b81627f653adf19f5877b37aa5d374015d6eea4340e12f91e",
        "98dc583395e01400899c91afff7c227822ec4211215dd39a01723e2d4e174f10e3afafd11a9f91e22a9f99e1b6742e1d",
        "e656c3baa92d42281d621c5b04605ec2b54b9184e25cf410d5086c30e4438a9f7f958df58db71715058cc7277732b80c",
        "6ced291befa3d93b6529b3765c229b12c7299ee829d013381324f8f6fb4ea316ac9b4b21bd5490694e4e60e144e1fadd",
    ];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn released_sqlite_migrations_keep_their_checksums() {
        let migrator = migrator(Backend::Sqlite);
        let checksums: Vec<String> = migrator.iter().map(|m| hex(&m.checksum)).collect();
        assert_eq!(checksums[..RELEASED_SQLITE.len()], RELEASED_SQLITE);
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let names = |backend| -> Vec<(i64, String)> {
            migrator(backend)
                .iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        assert_eq!(names(Backend::Sqlite), names(Backend::Postgres));
    }
}
