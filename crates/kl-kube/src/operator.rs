//! `kl operator`: a kube-runtime Controller reconciling `LambdaFunction`s, woken by changes to
//! them and to their build Jobs and Knative Services. Each pass observes the function's build
//! Job and Knative Service, asks [`crate::plan::plan`] what to do, applies
//! that and writes the status. A finalizer removes the Service, Triggers and PingSources when
//! the function is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kl_k8s::crd;
use kl_k8s::names::{LABEL_FUNCTION, LABEL_TENANT};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use thiserror::Error;

use crate::apply::knative;
use crate::crd::{InlineSource, LambdaFunction};
use crate::error::target;
use crate::plan::{Observed, OperatorSettings, build_job_name, plan};
use crate::{Applier, FIELD_MANAGER, KubeError};

/// Held on every `LambdaFunction` until its objects are removed.
pub const FINALIZER: &str = "knative-lambda.io/cleanup";

/// After a failed pass, the next try comes this much later.
const RETRY: Duration = Duration::from_secs(30);

/// What every reconcile pass shares.
pub struct Context {
    pub applier: Applier,
    pub settings: OperatorSettings,
}

/// Why a reconcile pass failed; the controller retries after [`RETRY`].
#[derive(Debug, Error)]
#[error(transparent)]
pub struct ReconcileError(#[from] Box<finalizer::Error<KubeError>>);

/// One reconcile pass over `lf`.
pub async fn reconcile(lf: Arc<LambdaFunction>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = lf.namespace().unwrap_or_default();
    let api: Api<LambdaFunction> = Api::namespaced(ctx.applier.client().clone(), &ns);
    finalizer(&api, FINALIZER, lf, |event| async {
        match event {
            Event::Apply(lf) => apply(&api, &lf, &ctx).await,
            Event::Cleanup(lf) => cleanup(&lf, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError(Box::new(e)))
}

async fn apply(api: &Api<LambdaFunction>, lf: &LambdaFunction, ctx: &Context) -> Result<Action, KubeError> {
    let ns = lf.namespace().unwrap_or_default();
    let name = lf.name_any();
    let build = match build_job_name(lf) {
        Some(job) => Some(
            ctx.applier
                .build_state(&ctx.settings.platform.build_namespace, &job)
                .await?,
        ),
        None => None,
    };
    let service = ctx.applier.knative_service_status(&ns, &name).await?;
    let inline_context = match &lf.spec.source.inline {
        Some(inline) => Some(pack_inline(lf, inline, &ctx.settings).await),
        None => None,
    };
    let observed = Observed {
        build,
        service,
        inline_context,
        at: chrono::Utc::now(),
    };
    let plan = plan(lf, &observed, &ctx.settings);
    ctx.applier.apply_all(&plan.apply).await?;
    if lf.status.as_ref() != Some(&plan.status) {
        // Applied, so fields the new status leaves out (an old URL) are removed.
        let body = serde_json::json!({
            "apiVersion": LambdaFunction::api_version(&()),
            "kind": LambdaFunction::kind(&()),
            "status": plan.status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|e| KubeError::from_kube("write the status of", target("LambdaFunction", &ns, &name), e))?;
    }
    Ok(plan.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Packs `source.inline` with its shim and Dockerfile, as `kl` packs a source tree.
async fn pack_inline(
    lf: &LambdaFunction,
    inline: &InlineSource,
    settings: &OperatorSettings,
) -> Result<Vec<u8>, String> {
    let (spec, _) = crate::plan::resolve(lf, settings)?;
    kl_build::inline_context(&inline.filename, &inline.code, &spec)
        .await
        .map_err(|e| e.to_string())
}

async fn cleanup(lf: &LambdaFunction, ctx: &Context) -> Result<Action, KubeError> {
    let ns = lf.namespace().unwrap_or_default();
    // A function outside a tenant namespace never had objects applied.
    if let Some(tenant) = ns.strip_prefix(kl_k8s::names::NAMESPACE_PREFIX) {
        ctx.applier.delete_function(tenant, &lf.name_any()).await?;
    }
    Ok(Action::await_change())
}

fn error_policy(lf: Arc<LambdaFunction>, err: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(function = %lf.name_any(), namespace = ?lf.namespace(), error = %err, "reconcile failed");
    Action::requeue(RETRY)
}

/// The function a build Job or Knative Service belongs to, by the tenant and function labels
/// `kl-k8s` puts on both: a change to either wakes that function's reconcile. (The build Job
/// lives in another namespace, so no owner reference can.)
pub fn owner_of(metadata: &ObjectMeta) -> Option<ObjectRef<LambdaFunction>> {
    let labels = metadata.labels.as_ref()?;
    let namespace = kl_k8s::names::namespace(labels.get(LABEL_TENANT)?).ok()?;
    Some(ObjectRef::new(labels.get(LABEL_FUNCTION)?).within(&namespace))
}

/// Runs the controller over every namespace until SIGTERM or Ctrl-C, woken by changes to the
/// functions, their build Jobs and their Knative Services.
pub async fn run(client: Client, settings: OperatorSettings) {
    let api: Api<LambdaFunction> = Api::all(client.clone());
    let service = knative(crd::SERVING_V1, "Service", "services");
    let services: Api<DynamicObject> = Api::all_with(client.clone(), &service);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &settings.platform.build_namespace);
    let ours = watcher::Config::default().labels(LABEL_FUNCTION);
    let ctx = Arc::new(Context {
        applier: Applier::new(client),
        settings,
    });
    Controller::new(api, watcher::Config::default())
        .watches_with(services, service, ours.clone(), |s| owner_of(&s.metadata))
        .watches(jobs, ours, |j| owner_of(&j.metadata))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(function = %object.name, "reconciled"),
                Err(err) => tracing::warn!(error = %err, "reconcile"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labelled(labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_jobs_or_services_labels_name_the_function_to_reconcile() {
        let job = labelled(&[(LABEL_TENANT, "acme"), (LABEL_FUNCTION, "hello")]);
        assert_eq!(owner_of(&job), Some(ObjectRef::new("hello").within("kl-acme")));
        assert_eq!(owner_of(&labelled(&[(LABEL_FUNCTION, "hello")])), None);
        assert_eq!(
            owner_of(&labelled(&[
                (LABEL_TENANT, "Not A Tenant"),
                (LABEL_FUNCTION, "x")
            ])),
            None
        );
        assert_eq!(owner_of(&ObjectMeta::default()), None);
    }
}
