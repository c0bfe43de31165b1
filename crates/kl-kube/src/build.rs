//! A build in the cluster: apply the Kaniko Job, follow its pod's log while it runs, watch the
//! Job until it succeeds or fails, and read the pushed image's digest (Kaniko writes it to the
//! termination log).

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use kl_k8s::Object;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};

use crate::error::{target, watch_failed};
use crate::plan::BuildState;
use crate::{Applier, KubeError};

/// The label Kubernetes puts on a Job's pods (1.27+), naming the Job.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The build container in `kl_k8s::render_build_job`'s pod.
const KANIKO_CONTAINER: &str = "kaniko";
/// How long the log may still run once the Job has ended: its last lines, not a stuck stream.
const LOG_GRACE: Duration = Duration::from_secs(10);

/// A finished build Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRun {
    pub outcome: BuildOutcome,
    /// How long its Kaniko container ran (its terminated state's start to finish): what the
    /// build is metered for, at the resources it was given. `None` if it never started.
    pub ran: Option<Duration>,
}

/// How a build Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The image was pushed; `digest` (`sha256:…`) when Kaniko reported it.
    Succeeded { digest: Option<String> },
    /// The Job failed: Kubernetes' reason (`BackoffLimitExceeded`, `DeadlineExceeded`) and message.
    Failed { reason: String, message: String },
}

/// How `job` ended, or `None` while it runs. A `Complete` or `SuccessCriteriaMet` condition
/// is success; a `Failed` (or `FailureTarget`, set before the pods are gone) is failure.
pub fn job_outcome(job: &Job) -> Option<BuildOutcome> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |kind: &str| conditions.iter().find(|c| c.type_ == kind && c.status == "True");
    if holds("Complete")
        .or_else(|| holds("SuccessCriteriaMet"))
        .is_some()
    {
        return Some(BuildOutcome::Succeeded { digest: None });
    }
    holds("Failed")
        .or_else(|| holds("FailureTarget"))
        .map(|c| BuildOutcome::Failed {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
}

impl Applier {
    /// Applies a build Job and follows its pod's log to `log` line by line while it runs, until
    /// the Job succeeds or fails; returns the outcome, with the pushed digest on success.
    /// A log that cannot be read is said in `log` and does not fail the build: the Job's own
    /// outcome decides. A pod that never started has no log. Waits without a deadline of its own: the Job's `activeDeadlineSeconds`
    /// bounds it.
    pub async fn run_build(&self, job: &Job, mut log: impl FnMut(&str)) -> Result<BuildRun, KubeError> {
        self.apply(&Object::Job(Box::new(job.clone()))).await?;
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let streaming = AtomicBool::new(false);
        let outcome = {
            let mut ended = pin!(self.wait_for_job(ns, name));
            let mut followed = pin!(self.follow_log(ns, name, &streaming, &mut log));
            tokio::select! {
                () = &mut followed => ended.await?,
                outcome = &mut ended => {
                    // The Job's end can be seen before the log's last lines arrive: give them
                    // a moment, no more.
                    if streaming.load(Ordering::Acquire) {
                        let _ = tokio::time::timeout(LOG_GRACE, followed).await;
                    }
                    outcome?
                }
            }
        };
        let pod = self.build_pod(ns, name).await?;
        if !streaming.load(Ordering::Acquire)
            && let Some(pod) = pod.as_ref().filter(|p| kaniko_started(p))
        {
            // The Job ended before its pod was seen running: its whole log, once.
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            match tokio::time::timeout(LOG_GRACE, self.stream_log(ns, pod_name, &mut log)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log(&format!("(the build's log cannot be read: {e})")),
                Err(_) => log("(the build's log did not end in time)"),
            }
        }
        let outcome = match outcome {
            BuildOutcome::Succeeded { .. } => BuildOutcome::Succeeded {
                digest: pod.as_ref().and_then(termination_message),
            },
            failed => failed,
        };
        Ok(BuildRun {
            outcome,
            ran: pod.as_ref().and_then(kaniko_ran),
        })
    }

    /// Watches Job `ns/name` until it succeeds or fails.
    pub async fn wait_for_job(&self, ns: &str, name: &str) -> Result<BuildOutcome, KubeError> {
        let api: Api<Job> = Api::namespaced(self.client().clone(), ns);
        let job = await_condition(api, name, |job: Option<&Job>| job.and_then(job_outcome).is_some())
            .await
            .map_err(watch_failed(target("Job", ns, name)))?;
        match job.as_ref().and_then(job_outcome) {
            Some(outcome) => Ok(outcome),
            None => Err(KubeError::NotFound {
                action: "watch",
                target: target("Job", ns, name),
                message: "the Job was deleted before it finished".to_owned(),
            }),
        }
    }

    /// What became of Job `ns/name`: absent, running, or ended (with the pushed digest on
    /// success). One read, for the operator, which looks again later rather than watch.
    pub async fn build_state(&self, ns: &str, name: &str) -> Result<BuildState, KubeError> {
        let api: Api<Job> = Api::namespaced(self.client().clone(), ns);
        let job = api
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube("read", target("Job", ns, name), e))?;
        let Some(job) = job else {
            return Ok(BuildState::Absent);
        };
        Ok(match job_outcome(&job) {
            None => BuildState::Running,
            Some(BuildOutcome::Succeeded { .. }) => {
                let pod = self.build_pod(ns, name).await?;
                BuildState::Ended(BuildOutcome::Succeeded {
                    digest: pod.as_ref().and_then(termination_message),
                })
            }
            Some(failed) => BuildState::Ended(failed),
        })
    }

    /// The newest pod of Job `ns/name`, if one is left.
    async fn build_pod(&self, ns: &str, job: &str) -> Result<Option<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client().clone(), ns);
        let pods = api
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
            .await
            .map_err(|e| KubeError::from_kube("list", format!("pods of Job {ns}/{job}"), e))?;
        Ok(pods
            .items
            .into_iter()
            .max_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp)))
    }

    /// Follows the Kaniko container's log of Job `ns/job` from the moment it starts until it
    /// exits (setting `streaming` once it reads), saying in `log` why if it cannot.
    async fn follow_log(&self, ns: &str, job: &str, streaming: &AtomicBool, log: &mut impl FnMut(&str)) {
        let followed = match self.started_pod(ns, job).await {
            Ok(pod) => {
                streaming.store(true, Ordering::Release);
                self.stream_log(ns, &pod, log).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = followed {
            log(&format!("(the build's log cannot be followed: {e})"));
        }
    }

    /// The name of Job `ns/job`'s pod once its Kaniko container has started (or already ended).
    async fn started_pod(&self, ns: &str, job: &str) -> Result<String, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client().clone(), ns);
        let config = watcher::Config::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
        let mut pods = pin!(watcher(api, config).applied_objects());
        let pods_of = || format!("pods of Job {ns}/{job}");
        while let Some(pod) = pods.try_next().await.map_err(|source| KubeError::Watch {
            target: pods_of(),
            source,
        })? {
            if kaniko_started(&pod) {
                return Ok(pod.metadata.name.unwrap_or_default());
            }
        }
        Err(KubeError::NotFound {
            action: "watch",
            target: pods_of(),
            message: "the watch ended before a pod started".to_owned(),
        })
    }

    /// Follows the Kaniko container's log, passing each line to `log` as it arrives, until the
    /// container exits.
    async fn stream_log(&self, ns: &str, pod: &str, log: &mut impl FnMut(&str)) -> Result<(), KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client().clone(), ns);
        let params = LogParams {
            container: Some(KANIKO_CONTAINER.to_owned()),
            follow: true,
            ..LogParams::default()
        };
        let read_err = |e| KubeError::from_kube("read the log of", target("Pod", ns, pod), e);
        let stream = api.log_stream(pod, &params).await.map_err(read_err)?;
        let mut lines = pin!(stream.lines());
        while let Some(line) = lines.try_next().await.map_err(|e| KubeError::Decode {
            target: target("Pod", ns, pod),
            reason: format!("its log broke off: {e}"),
        })? {
            log(&line);
        }
        Ok(())
    }
}

/// The Kaniko container's state.
fn kaniko_state(pod: &Pod) -> Option<&ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == KANIKO_CONTAINER)?
        .state
        .as_ref()
}

/// Whether the Kaniko container runs or ran, so its log can be read.
fn kaniko_started(pod: &Pod) -> bool {
    kaniko_state(pod).is_some_and(|state| state.running.is_some() || state.terminated.is_some())
}

/// How long the Kaniko container ran, once it has ended.
fn kaniko_ran(pod: &Pod) -> Option<Duration> {
    let terminated = kaniko_state(pod)?.terminated.as_ref()?;
    let (started, finished) = (terminated.started_at.as_ref()?, terminated.finished_at.as_ref()?);
    finished.0.duration_since(started.0).try_into().ok()
}

/// The Kaniko container's termination message: the digest it wrote with `--digest-file`.
fn termination_message(pod: &Pod) -> Option<String> {
    kaniko_state(pod)?
        .terminated
        .as_ref()?
        .message
        .as_ref()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello-build-1", "namespace": "builds"},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn outcomes_follow_the_job_conditions() {
        assert_eq!(job_outcome(&job(serde_json::json!([]))), None);
        let running = job(serde_json::json!([{"type": "Complete", "status": "False"}]));
        assert_eq!(job_outcome(&running), None);
        let done = job(serde_json::json!([{"type": "SuccessCriteriaMet", "status": "True"}]));
        assert_eq!(job_outcome(&done), Some(BuildOutcome::Succeeded { digest: None }));
        let failed = job(serde_json::json!([{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"
        }]));
        assert_eq!(
            job_outcome(&failed),
            Some(BuildOutcome::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            })
        );
    }
}
