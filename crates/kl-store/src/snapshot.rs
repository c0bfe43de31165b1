//! A logical, backend-neutral copy of the whole store (`kl admin backup`): every row of every
//! table, read in one transaction, as typed values by column name. Because it names columns
//! and carries only the types `Any` knows (integers, text, bytes), a snapshot of SQLite loads
//! into PostgreSQL and back, and a snapshot taken before a migration loads into a newer schema
//! (columns it lacks take their defaults).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::any::{AnyRow, AnyTypeInfoKind};
use sqlx::{Any, Column, Row, ValueRef};

use crate::dialect::Backend;
use crate::{Result, Store, StoreError};

/// A table the snapshot carries, in an order that satisfies every foreign key.
struct Table {
    name: &'static str,
    /// Rows are read in this order and written back in it: the dead letters' listing order is
    /// their insertion order, and a stable order makes snapshots comparable.
    order_by: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "tenants",
        order_by: "name",
    },
    Table {
        name: "tokens",
        order_by: "id",
    },
    Table {
        name: "functions",
        order_by: "tenant, name",
    },
    Table {
        name: "revisions",
        order_by: "tenant, function, number",
    },
    Table {
        name: "audit",
        order_by: "id",
    },
    Table {
        name: "event_deliveries",
        order_by: "seq",
    },
    Table {
        name: "event_dead_letters",
        order_by: "rowid",
    },
    Table {
        name: "triggers",
        order_by: "tenant, name",
    },
    Table {
        name: "accepted_events",
        order_by: "tenant, source, id",
    },
    Table {
        name: "invocations",
        order_by: "id",
    },
    Table {
        name: "usage_buckets",
        order_by: "tenant, function, minute",
    },
    Table {
        name: "meter_checkpoints",
        order_by: "kind, meter",
    },
    Table {
        name: "budget_notifications",
        order_by: "tenant, period_key, threshold",
    },
    Table {
        name: "secrets",
        order_by: "tenant, name",
    },
    Table {
        name: "secret_values",
        order_by: "tenant, name, key",
    },
    Table {
        name: "environments",
        order_by: "tenant, name",
    },
];

/// Columns a backend generates and never accepts on insert: PostgreSQL's stand-in for
/// SQLite's implicit `rowid` (SQLite's is not a column `SELECT *` returns).
const GENERATED: &[(&str, &str)] = &[("event_dead_letters", "rowid")];

/// Identity columns whose PostgreSQL sequence must move past the restored rows.
const IDENTITIES: &[(&str, &str)] = &[("audit", "id"), ("event_deliveries", "seq")];

/// One stored value. JSON: `null`, a number, a string, or `{"base64": "…"}` for bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One table's rows, by column name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRows {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Every row of the store, as of one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The newest migration applied to the store it was read from.
    pub schema_version: i64,
    pub tables: Vec<TableRows>,
}

impl Snapshot {
    /// A table's rows (empty when the snapshot does not have it).
    pub fn table(&self, name: &str) -> Option<&TableRows> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Rows per table.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.rows.len()))
            .collect()
    }
}

impl TableRows {
    /// The values of one column, row by row; `None` when the table has no such column.
    pub fn column<'a>(&'a self, name: &str) -> Option<impl Iterator<Item = &'a Value> + 'a> {
        let at = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(move |row| &row[at]))
    }
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Int(n) => s.serialize_i64(*n),
            Value::Text(text) => s.serialize_str(text),
            Value::Bytes(bytes) => BTreeMap::from([("base64", STANDARD.encode(bytes))]).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(Value::Null),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .ok_or_else(|| D::Error::custom(format!("{n} is not a 64-bit integer"))),
            serde_json::Value::String(text) => Ok(Value::Text(text)),
            serde_json::Value::Object(map) => match map.get("base64") {
                Some(serde_json::Value::String(b64)) if map.len() == 1 => STANDARD
                    .decode(b64)
                    .map(Value::Bytes)
                    .map_err(|e| D::Error::custom(format!("bytes: {e}"))),
                _ => Err(D::Error::custom("an object value must be {\"base64\": \"…\"}")),
            },
            other => Err(D::Error::custom(format!("unexpected value {other}"))),
        }
    }
}

/// What a column holds, as the target database declares it: decides how a value (and above
/// all a NULL, which carries no type) is bound on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Int,
    Text,
    Bytes,
}

impl ColumnKind {
    fn from_declared(declared: &str) -> ColumnKind {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("INT") {
            ColumnKind::Int
        } else if declared.contains("BLOB") || declared.contains("BYTEA") {
            ColumnKind::Bytes
        } else {
            ColumnKind::Text
        }
    }
}

impl Store {
    /// Reads every table in one read transaction: a consistent snapshot while the server keeps
    /// writing (SQLite's WAL keeps the reader's view; PostgreSQL's repeatable read does).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        };
        let mut tables = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let sql = format!("SELECT * FROM {} ORDER BY {}", table.name, table.order_by);
            // Table and column names come from the constants above: nothing to inject.
            let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await?;
            tables.push(table_rows(table.name, &rows)?);
        }
        tx.commit().await?;
        Ok(Snapshot {
            schema_version: crate::migrations::latest(),
            tables,
        })
    }

    /// Whether the store holds nothing at all: the only kind a snapshot is restored into.
    pub async fn is_empty(&self) -> Result<bool> {
        for table in TABLES {
            let sql = format!("SELECT COUNT(*) FROM {}", table.name);
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            if count > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes a snapshot into this (empty) store, in one transaction: all of it or nothing.
    pub async fn restore_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let latest = crate::migrations::latest();
        if snapshot.schema_version > latest {
            return Err(StoreError::Conflict(format!(
                "the snapshot has schema version {}, newer than this kl's {latest}: restore it with the kl that took it, or a newer one",
                snapshot.schema_version
            )));
        }
        if !self.is_empty().await? {
            return Err(StoreError::Conflict(
                "the target metadata store is not empty; restore into a fresh data dir or database".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        for table in TABLES {
            let Some(rows) = snapshot.table(table.name) else {
                continue;
            };
            let kinds = self.column_kinds(&mut tx, table.name).await?;
            let columns: Vec<(usize, &str, ColumnKind)> = rows
                .columns
                .iter()
                .enumerate()
                .map(|(at, name)| {
                    let kind = kinds.get(name.as_str()).copied().ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "the snapshot's {}.{name} is not a column of this schema",
                            table.name
                        ))
                    })?;
                    Ok((at, name.as_str(), kind))
                })
                .collect::<Result<_>>()?;
            let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
            let names: Vec<&str> = columns.iter().map(|(_, name, _)| *name).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                names.join(", "),
                placeholders.join(", ")
            );
            for row in &rows.rows {
                // The names were checked against the schema's own columns above.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for &(at, name, kind) in &columns {
                    query = bind(query, &row[at], kind)
                        .map_err(|e| StoreError::Conflict(format!("{}.{name}: {e}", table.name)))?;
                }
                query.execute(&mut *tx).await?;
            }
        }
        if self.backend == Backend::Postgres {
            for (table, column) in IDENTITIES {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                     COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The declared kind of each column of `table` that accepts inserts.
    async fn column_kinds(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        table: &str,
    ) -> Result<BTreeMap<String, ColumnKind>> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1)",
            Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let rows: Vec<(String, String)> = sqlx::query_as(sql).bind(table).fetch_all(&mut **tx).await?;
        Ok(rows
            .into_iter()
            .filter(|(name, _)| !GENERATED.contains(&(table, name.as_str())))
            .map(|(name, declared)| (name, ColumnKind::from_declared(&declared)))
            .collect())
    }

    /// The tables of the schema (migration bookkeeping aside), for the test that keeps
    /// [`TABLES`] complete.
    pub async fn schema_tables(&self) -> Result<Vec<String>> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() \
                 AND table_name NOT LIKE '_sqlx%' ORDER BY table_name"
            }
        };
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }
}

/// The names of the tables a snapshot carries.
pub fn snapshot_tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.name)
}

fn table_rows(table: &'static str, rows: &[AnyRow]) -> Result<TableRows> {
    let Some(first) = rows.first() else {
        return Ok(TableRows {
            name: table.to_owned(),
            columns: Vec::new(),
            rows: Vec::new(),
        });
    };
    let keep: Vec<(usize, String)> = first
        .columns()
        .iter()
        .filter(|c| !GENERATED.contains(&(table, c.name())))
        .map(|c| (c.ordinal(), c.name().to_owned()))
        .collect();
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let mut out = Vec::with_capacity(keep.len());
        for (at, name) in &keep {
            out.push(
                read_value(row, *at)
                    .map_err(|e| StoreError::Conflict(format!("cannot read {table}.{name}: {e}")))?,
            );
        }
        values.push(out);
    }
    Ok(TableRows {
        name: table.to_owned(),
        columns: keep.into_iter().map(|(_, name)| name).collect(),
        rows: values,
    })
}

fn read_value(row: &AnyRow, at: usize) -> std::result::Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(at)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().kind();
    Ok(match kind {
        AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
            Value::Int(row.try_get(at)?)
        }
        AnyTypeInfoKind::Text => Value::Text(row.try_get(at)?),
        AnyTypeInfoKind::Blob => Value::Bytes(row.try_get(at)?),
        other => {
            return Err(sqlx::Error::Decode(
                format!("a {} column, which snapshots do not carry", other_name(other)).into(),
            ));
        }
    })
}

fn other_name(kind: AnyTypeInfoKind) -> &'static str {
    match kind {
        AnyTypeInfoKind::Bool => "boolean",
        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => "floating-point",
        _ => "null-typed",
    }
}

type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

fn bind<'q>(query: Query<'q>, value: &Value, kind: ColumnKind) -> std::result::Result<Query<'q>, String> {
    Ok(match (value, kind) {
        (Value::Null, ColumnKind::Int) => query.bind(None::<i64>),
        (Value::Null, ColumnKind::Text) => query.bind(None::<String>),
        (Value::Null, ColumnKind::Bytes) => query.bind(None::<Vec<u8>>),
        (Value::Int(n), ColumnKind::Int) => query.bind(*n),
        (Value::Text(text), ColumnKind::Text) => query.bind(text.clone()),
        (Value::Bytes(bytes), ColumnKind::Bytes) => query.bind(bytes.clone()),
        (value, kind) => return Err(format!("{value:?} does not fit a {kind:?} column")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json() {
        let values = vec![
            Value::Null,
            Value::Int(i64::MIN),
            Value::Text("{\"base64\": \"not bytes\"}".into()),
            Value::Bytes(vec![0, 255, 10]),
        ];
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(
            json,
            r#"[null,-9223372036854775808,"{\"base64\": \"not bytes\"}",{"base64":"AP8K"}]"#
        );
        assert_eq!(serde_json::from_str::<Vec<Value>>(&json).unwrap(), values);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["1.5", "true", "[1]", r#"{"hex":"00"}"#, r#"{"base64":"%%"}"#] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn declared_types_map_to_kinds() {
        for (declared, kind) in [
            ("INTEGER", ColumnKind::Int),
            ("bigint", ColumnKind::Int),
            ("TEXT", ColumnKind::Text),
            ("text", ColumnKind::Text),
            ("BLOB", ColumnKind::Bytes),
            ("bytea", ColumnKind::Bytes),
        ] {
            assert_eq!(ColumnKind::from_declared(declared), kind, "{declared}");
        }
    }
}
