//! Command events (DESIGN §3), the seed workflow's alternative to the REST API: "upload the
//! code to object storage, send `command.build.start`". Checked at ingress (a bad command is
//! a 400 there, and needs the same role as its REST twin), executed by the dispatcher through
//! the very functions the REST handlers call. Their progress shows as lifecycle events; a
//! command that cannot succeed is dead-lettered with the reason.
//!
//! Data (`functionName` may instead be the subject, `TENANT/FUNCTION` or `FUNCTION`):
//! - `command.build.start`: `{functionName, source, options?}`: `source` is an object key of
//!   the tenant (`uploads/TENANT/…` from `kl events upload`, or a revision's `sources/TENANT/…`),
//!   `options` the deploy settings (`kl deploy` flags as JSON);
//! - `command.build.retry`: `{functionName, revision?}`: rebuilds a revision (default the
//!   newest) from its stored source and settings;
//! - `command.function.deploy`: `{functionName, revision}`: serves that ready revision;
//! - `command.function.rollback`: `{functionName, revision?}`: serves the given revision, or
//!   the newest ready one older than the serving one;
//! - `command.service.delete`: `{functionName}`: deletes the function.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use kl_core::{Action, FunctionSettings};
use kl_events::delivery::DeliveryPolicy;
use kl_events::{CloudEvent, Delivery, types};
use object_store::ObjectStoreExt;
use serde::Deserialize;

use super::dispatch::{Settled, dead_letter, settle};
use super::sink::Attempt;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{deploy, functions};

/// A command, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    BuildStart {
        function: String,
        source: String,
        options: Box<FunctionSettings>,
    },
    BuildRetry {
        function: String,
        revision: Option<i64>,
    },
    Deploy {
        function: String,
        revision: i64,
    },
    Rollback {
        function: String,
        revision: Option<i64>,
    },
    Delete {
        function: String,
    },
}

/// The data of every command; which fields a command needs is checked per type. Unknown
/// fields are ignored, so producers of the original system's payloads keep working.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    #[serde(alias = "function")]
    function_name: Option<String>,
    source: Option<String>,
    options: Option<FunctionSettings>,
    revision: Option<i64>,
}

/// Retries of a command that failed for a reason that may pass (a build slot, the store).
fn command_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        retries: 5,
        backoff_delay: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        ..DeliveryPolicy::default()
    }
}

impl Command {
    /// Reads a command event of `tenant`; the error says what to fix.
    pub fn parse(tenant: &str, event: &CloudEvent) -> Result<Command, String> {
        let data: Data = match &event.data {
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| format!("{}: the data is not a command's: {e}", event.ty))?,
            None => Data::default(),
        };
        let function = data
            .function_name
            .clone()
            .or_else(|| subject_function(tenant, event.subject.as_deref()))
            .ok_or_else(|| {
                format!(
                    "{}: name the function in data.functionName or the subject (TENANT/FUNCTION)",
                    event.ty
                )
            })?;
        kl_core::validate_function_name(&function).map_err(|e| format!("{}: {e}", event.ty))?;
        let need = |field: &str| format!("{}: data.{field} is required", event.ty);
        Ok(match event.ty.as_str() {
            types::BUILD_START => {
                let source = data.source.ok_or_else(|| need("source"))?;
                check_source(tenant, &source)?;
                Command::BuildStart {
                    function,
                    source,
                    options: Box::new(data.options.unwrap_or_default()),
                }
            }
            types::BUILD_RETRY => Command::BuildRetry {
                function,
                revision: data.revision,
            },
            types::FUNCTION_DEPLOY => Command::Deploy {
                function,
                revision: data.revision.ok_or_else(|| need("revision"))?,
            },
            types::FUNCTION_ROLLBACK => Command::Rollback {
                function,
                revision: data.revision,
            },
            types::SERVICE_DELETE => Command::Delete { function },
            other => {
                return Err(format!(
                    "unsupported command {other:?}: this server executes {}, {}, {}, {} and {}",
                    types::BUILD_START,
                    types::BUILD_RETRY,
                    types::FUNCTION_DEPLOY,
                    types::FUNCTION_ROLLBACK,
                    types::SERVICE_DELETE
                ));
            }
        })
    }

    /// What the sender must be allowed to do: the same as the REST call it stands for.
    pub fn action(&self) -> Action {
        match self {
            Command::Delete { .. } => Action::DeleteFunction,
            _ => Action::Deploy,
        }
    }

    /// The object a build reads, to check at ingress that it is there.
    pub fn source(&self) -> Option<&str> {
        match self {
            Command::BuildStart { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `TENANT/FUNCTION` (the catalog's subject) or a bare `FUNCTION`.
fn subject_function(tenant: &str, subject: Option<&str>) -> Option<String> {
    let subject = subject?;
    match subject.split_once('/') {
        Some((t, f)) if t == tenant => Some(f.to_owned()),
        Some(_) => None,
        None => Some(subject.to_owned()),
    }
}

/// A source is one of the tenant's own objects: what it uploaded, or a revision's source.
fn check_source(tenant: &str, source: &str) -> Result<(), String> {
    if source.starts_with("s3://") {
        return Err(format!(
            "source {source:?}: this server reads sources from its own object store only; upload the archive with `kl events upload` (PUT /v1/tenants/{tenant}/uploads/NAME) and name the key it returns"
        ));
    }
    let own = [format!("uploads/{tenant}/"), format!("sources/{tenant}/")];
    let inside = own.iter().any(|prefix| {
        source.strip_prefix(prefix.as_str()).is_some_and(|rest| {
            !rest.is_empty() && rest.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        })
    });
    if inside {
        Ok(())
    } else {
        Err(format!(
            "source {source:?} is not an object of tenant {tenant:?}: use a key under uploads/{tenant}/ (kl events upload) or sources/{tenant}/"
        ))
    }
}

/// Runs a command delivery and settles it: refusals that a retry cannot change (4xx other
/// than 429) are dead-lettered at once, the rest retried.
pub(crate) async fn execute(state: &Arc<AppState>, delivery: Delivery) -> Settled {
    let command = match Command::parse(&delivery.tenant, &delivery.event) {
        Ok(command) => command,
        Err(reason) => return dead_letter(state, delivery, &reason).await,
    };
    let tenant = delivery.tenant.clone();
    tracing::info!(%tenant, command = ?command, event = %delivery.event.id, "executing a command event");
    let attempt = match run(state, &tenant, command).await {
        Ok(()) => Attempt::Delivered,
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS || e.status.is_server_error() => {
            Attempt::Transient(e.message)
        }
        Err(e) => Attempt::Permanent(format!("{} ({})", e.message, e.code)),
    };
    settle(state, delivery, attempt, &command_policy()).await
}

async fn run(state: &Arc<AppState>, tenant: &str, command: Command) -> Result<(), ApiError> {
    match command {
        Command::BuildStart {
            function,
            source,
            options,
        } => {
            let archive = read_object(state, &source).await?;
            deploy::deploy_archive(state, tenant, &function, *options, archive).await?;
        }
        Command::BuildRetry { function, revision } => {
            let revisions = state.store.revisions(tenant, &function).await?;
            let rev = match revision {
                Some(n) => revisions.into_iter().find(|r| r.number == n),
                None => revisions.into_iter().next(),
            }
            .ok_or_else(|| {
                ApiError::not_found(format!("function {function:?} has no such revision to rebuild"))
            })?;
            let archive = read_object(state, &rev.source_key).await?;
            deploy::deploy_archive(state, tenant, &function, rev.settings, archive).await?;
        }
        Command::Deploy { function, revision } => {
            deploy::serve_revision(state, tenant, &function, Some(revision)).await?;
        }
        Command::Rollback { function, revision } => {
            deploy::serve_revision(state, tenant, &function, revision).await?;
        }
        Command::Delete { function } => functions::delete_function(state, tenant, &function).await?,
    }
    Ok(())
}

/// An object of the store; 422 when it is not there (the command names a missing upload).
pub(crate) async fn read_object(state: &AppState, key: &str) -> Result<bytes::Bytes, ApiError> {
    match state.objects.get(&key.into()).await {
        Ok(object) => Ok(object.bytes().await?),
        Err(object_store::Error::NotFound { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SourceNotFound",
            format!("source {key:?} is not in the object store; upload it first (kl events upload)"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(ty: &str, data: serde_json::Value) -> CloudEvent {
        CloudEvent::new(ty, "/ci".into(), data)
    }

    #[test]
    fn build_start_names_an_own_source_and_a_function() {
        let ev = event(
            types::BUILD_START,
            json!({"functionName": "hello", "source": "uploads/acme/hello.tar.gz", "options": {"memory": "128Mi"}, "thirdPartyId": 7}),
        );
        let Command::BuildStart {
            function,
            source,
            options,
        } = Command::parse("acme", &ev).unwrap()
        else {
            panic!("not a build");
        };
        assert_eq!(
            (function.as_str(), source.as_str()),
            ("hello", "uploads/acme/hello.tar.gz")
        );
        assert_eq!(options.memory.as_deref(), Some("128Mi"));
        for (source, why) in [
            ("uploads/globex/x.tgz", "not an object of tenant"),
            ("uploads/acme/../globex/x", "not an object of tenant"),
            ("uploads/acme/", "not an object of tenant"),
            ("artifacts/acme/x", "not an object of tenant"),
            ("s3://bucket/x.tgz", "own object store only"),
        ] {
            let ev = event(
                types::BUILD_START,
                json!({"functionName": "hello", "source": source}),
            );
            let err = Command::parse("acme", &ev).unwrap_err();
            assert!(err.contains(why), "{source}: {err}");
        }
        let err = Command::parse(
            "acme",
            &event(types::BUILD_START, json!({"functionName": "hello"})),
        )
        .unwrap_err();
        assert!(err.contains("data.source is required"), "{err}");
    }

    #[test]
    fn the_function_may_come_from_the_subject() {
        let mut ev = event(types::SERVICE_DELETE, serde_json::Value::Null);
        ev.subject = Some("acme/hello".into());
        assert_eq!(
            Command::parse("acme", &ev),
            Ok(Command::Delete {
                function: "hello".into()
            })
        );
        assert_eq!(
            Command::parse("acme", &ev).unwrap().action(),
            Action::DeleteFunction
        );
        ev.subject = Some("globex/hello".into());
        assert!(
            Command::parse("acme", &ev)
                .unwrap_err()
                .contains("name the function")
        );
        ev.subject = Some("Hello".into());
        assert!(Command::parse("acme", &ev).is_err());
    }

    #[test]
    fn each_command_checks_its_fields() {
        let deploy = event(types::FUNCTION_DEPLOY, json!({"function": "f", "revision": 2}));
        assert_eq!(
            Command::parse("t", &deploy),
            Ok(Command::Deploy {
                function: "f".into(),
                revision: 2
            })
        );
        let no_revision = event(types::FUNCTION_DEPLOY, json!({"function": "f"}));
        assert!(
            Command::parse("t", &no_revision)
                .unwrap_err()
                .contains("data.revision")
        );
        let rollback = event(types::FUNCTION_ROLLBACK, json!({"functionName": "f"}));
        assert_eq!(Command::parse("t", &rollback).unwrap().action(), Action::Deploy);
        let cancel = event(
            "io.knative.lambda.command.build.cancel",
            json!({"functionName": "f"}),
        );
        assert!(
            Command::parse("t", &cancel)
                .unwrap_err()
                .contains("unsupported command")
        );
        let typed = event(
            types::BUILD_RETRY,
            json!({"functionName": "f", "revision": "two"}),
        );
        assert!(
            Command::parse("t", &typed)
                .unwrap_err()
                .contains("not a command's")
        );
    }
}
