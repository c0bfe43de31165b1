//! Fair share on one node (DESIGN §4): priority classes, admission that preempts strictly lower
//! classes when capacity runs out, and weighted dominant-resource fairness (DRF, as Kueue uses)
//! to order waiting work within a class. Pure decisions; the runtime and builder act on them.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::quantity::format_memory;

/// How much a workload matters when capacity runs short. Ordered lowest first, so `>` reads
/// "has priority over".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorityClass {
    /// Runs on spare capacity only: never preempts, first to be preempted.
    BestEffort,
    Low,
    #[default]
    Medium,
    High,
}

/// Why a priority class was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriorityError {
    /// The text names no class.
    #[error("unknown priority class {0:?}: use high, medium, low or best-effort")]
    Unknown(String),
    /// A function asked for a class above the one its tenant may use.
    #[error(
        "priority class {requested} is above the tenant's class {tenant_max}; pick {tenant_max} or lower, or ask a platform admin to raise the tenant's class"
    )]
    AboveTenant {
        requested: PriorityClass,
        tenant_max: PriorityClass,
    },
}

impl PriorityClass {
    /// Every class, lowest first.
    pub const ALL: [PriorityClass; 4] = [
        PriorityClass::BestEffort,
        PriorityClass::Low,
        PriorityClass::Medium,
        PriorityClass::High,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::BestEffort => "best-effort",
            PriorityClass::Low => "low",
            PriorityClass::Medium => "medium",
            PriorityClass::High => "high",
        }
    }

    /// The class a function runs with: its own choice if it made one, which may not exceed its
    /// tenant's class, else the tenant's.
    pub fn effective(
        tenant_max: PriorityClass,
        requested: Option<PriorityClass>,
    ) -> Result<PriorityClass, PriorityError> {
        match requested {
            Some(requested) if requested > tenant_max => Err(PriorityError::AboveTenant {
                requested,
                tenant_max,
            }),
            Some(requested) => Ok(requested),
            None => Ok(tenant_max),
        }
    }

    /// Whether work of this class may evict work of `victim`'s class. Only strictly lower
    /// classes, and never by best-effort work: preemption then always goes down the order, so
    /// two workloads can never preempt each other in turn.
    pub fn may_preempt(self, victim: PriorityClass) -> bool {
        self != PriorityClass::BestEffort && victim < self
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PriorityClass {
    type Err = PriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PriorityClass::ALL
            .into_iter()
            .find(|class| class.as_str() == s)
            .ok_or_else(|| PriorityError::Unknown(s.to_owned()))
    }
}

/// An amount of node capacity, or a claim on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
    };

    pub fn checked_add(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
        })
    }

    pub fn checked_sub(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
        })
    }

    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }

    /// Whether this claim fits in `available`, in every dimension.
    pub fn fits(self, available: Resources) -> bool {
        self.cpu_millis <= available.cpu_millis && self.memory_bytes <= available.memory_bytes
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}m CPU and {} memory",
            self.cpu_millis,
            format_memory(self.memory_bytes)
        )
    }
}

/// An instance holding capacity on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    pub tenant: String,
    pub class: PriorityClass,
    pub resources: Resources,
    /// No request in flight: preempting it interrupts nobody.
    pub idle: bool,
    /// When it started, in a node-wide increasing sequence; the newest has lost least work.
    pub started_seq: u64,
}

/// A claim on capacity: an instance to scale up or a build to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub tenant: String,
    pub class: PriorityClass,
    pub resources: Resources,
}

/// What to do with a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It fits in the free capacity.
    Admit,
    /// It fits once these instances are stopped (ids, in the victim order).
    Preempt(Vec<String>),
    /// It does not fit, even by preempting everything it may.
    Reject { reason: NoCapacity },
}

/// A request that cannot be admitted, with the figures that explain why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no capacity for {class} work: it needs {needed}, {free} is free, and {}", preemption_hint(*.class, *.preemptible))]
pub struct NoCapacity {
    pub class: PriorityClass,
    pub needed: Resources,
    pub free: Resources,
    /// What preempting every lower-class instance would free.
    pub preemptible: Resources,
}

fn preemption_hint(class: PriorityClass, preemptible: Resources) -> String {
    if class == PriorityClass::BestEffort {
        "best-effort work never preempts; retry when capacity frees up".to_owned()
    } else if preemptible == Resources::ZERO {
        format!("no instance below {class} runs to preempt; retry when capacity frees up")
    } else {
        format!("preempting every instance below {class} would free only {preemptible}")
    }
}

/// A sum of claims, wide enough never to overflow however many are added.
#[derive(Clone, Copy, Default)]
struct Sum {
    cpu: u128,
    memory: u128,
}

impl Sum {
    fn of<'a>(claims: impl IntoIterator<Item = &'a Resources>) -> Sum {
        claims.into_iter().fold(Sum::default(), |sum, r| sum.plus(*r))
    }

    fn plus(self, r: Resources) -> Sum {
        Sum {
            cpu: self.cpu + u128::from(r.cpu_millis),
            memory: self.memory + u128::from(r.memory_bytes),
        }
    }

    /// Callers only take away part of what they added.
    fn minus(self, other: Sum) -> Sum {
        Sum {
            cpu: self.cpu - other.cpu,
            memory: self.memory - other.memory,
        }
    }

    /// Whether `request` fits on top of this much use.
    fn leaves_room(self, request: Resources, capacity: Resources) -> bool {
        self.cpu + u128::from(request.cpu_millis) <= u128::from(capacity.cpu_millis)
            && self.memory + u128::from(request.memory_bytes) <= u128::from(capacity.memory_bytes)
    }

    fn saturated(self) -> Resources {
        Resources {
            cpu_millis: u64::try_from(self.cpu).unwrap_or(u64::MAX),
            memory_bytes: u64::try_from(self.memory).unwrap_or(u64::MAX),
        }
    }
}

/// The order victims are taken in: idle before busy (nobody is interrupted), then the lowest
/// class, then the newest (least work lost); the id makes it total.
fn victim_rank(r: &Running) -> (bool, PriorityClass, Reverse<u64>, &str) {
    (!r.idle, r.class, Reverse(r.started_seq), &r.id)
}

/// Decides whether `request` runs now, runs after preempting some instances, or waits.
///
/// Victims are only instances of strictly lower classes (see [`PriorityClass::may_preempt`]).
/// Like the Kubernetes scheduler, it starts from every candidate stopped and then spares them,
/// least preferred victim first, while the request still fits. The result is minimal (sparing
/// any one victim more would not leave room) and no victim could be swapped for a spared
/// instance that comes earlier in the victim order (idle, lowest class, newest).
pub fn plan_admission(capacity: Resources, running: &[Running], request: &Request) -> Admission {
    let used = Sum::of(running.iter().map(|r| &r.resources));
    if used.leaves_room(request.resources, capacity) {
        return Admission::Admit;
    }
    let mut candidates: Vec<&Running> = running
        .iter()
        .filter(|r| request.class.may_preempt(r.class))
        .collect();
    candidates.sort_by(|a, b| victim_rank(a).cmp(&victim_rank(b)));
    let preemptible = Sum::of(candidates.iter().map(|r| &r.resources));
    let mut kept = used.minus(preemptible);
    if !kept.leaves_room(request.resources, capacity) {
        return Admission::Reject {
            reason: NoCapacity {
                class: request.class,
                needed: request.resources,
                free: capacity.saturating_sub(used.saturated()),
                preemptible: preemptible.saturated(),
            },
        };
    }
    let mut victim = vec![true; candidates.len()];
    for (i, candidate) in candidates.iter().enumerate().rev() {
        let spared = kept.plus(candidate.resources);
        if spared.leaves_room(request.resources, capacity) {
            kept = spared;
            victim[i] = false;
        }
    }
    Admission::Preempt(
        candidates
            .iter()
            .zip(victim)
            .filter(|(_, victim)| *victim)
            .map(|(r, _)| r.id.clone())
            .collect(),
    )
}

/// The weight of a tenant absent from the weights table.
pub const DEFAULT_WEIGHT: u32 = 1;

/// The capacity a tenant holds per weight unit in its most-used dimension, as a fraction of
/// the node (DRF's dominant share divided by the weight). A zero weight yields infinity: such
/// a tenant is served after every other. Dimensions the node lacks entirely are ignored.
pub fn dominant_share(usage: Resources, weight: u32, capacity: Resources) -> f64 {
    let fraction = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        }
    };
    let dominant = fraction(usage.cpu_millis, capacity.cpu_millis)
        .max(fraction(usage.memory_bytes, capacity.memory_bytes));
    if weight == 0 {
        f64::INFINITY
    } else {
        dominant / f64::from(weight)
    }
}

/// What each tenant's running instances hold.
pub fn usage_by_tenant(running: &[Running]) -> HashMap<String, Resources> {
    let mut usage: HashMap<String, Resources> = HashMap::new();
    for r in running {
        let held = usage.entry(r.tenant.clone()).or_default();
        *held = held.saturating_add(r.resources);
    }
    usage
}

/// The order to serve waiting requests (scale-ups, or builds for build slots) in, as indices
/// into `waiting`: highest class first; within a class, the tenant with the smallest weighted
/// dominant share, counting what the requests served before it in this order add (DRF's
/// progressive filling, so tenants interleave); ties go to the earlier request.
pub fn drf_order(
    waiting: &[Request],
    usage_by_tenant: &HashMap<String, Resources>,
    weights: &HashMap<String, u32>,
    capacity: Resources,
) -> Vec<usize> {
    let mut usage = usage_by_tenant.clone();
    let mut pending: Vec<usize> = (0..waiting.len()).collect();
    let mut order = Vec::with_capacity(waiting.len());
    let share = |usage: &HashMap<String, Resources>, tenant: &str| {
        let held = usage.get(tenant).copied().unwrap_or_default();
        let weight = weights.get(tenant).copied().unwrap_or(DEFAULT_WEIGHT);
        dominant_share(held, weight, capacity)
    };
    while !pending.is_empty() {
        let at = (0..pending.len())
            .min_by(|&x, &y| {
                let (a, b) = (pending[x], pending[y]);
                let (ra, rb) = (&waiting[a], &waiting[b]);
                rb.class
                    .cmp(&ra.class)
                    .then_with(|| share(&usage, &ra.tenant).total_cmp(&share(&usage, &rb.tenant)))
                    .then(a.cmp(&b))
            })
            .expect("pending is not empty");
        let next = pending.remove(at);
        let request = &waiting[next];
        let held = usage.entry(request.tenant.clone()).or_default();
        *held = held.saturating_add(request.resources);
        order.push(next);
    }
    order
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use PriorityClass::{BestEffort, High, Low, Medium};

    const GI: u64 = 1 << 30;

    fn res(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    fn running(id: &str, class: PriorityClass, cpu: u64, idle: bool, started_seq: u64) -> Running {
        Running {
            id: id.to_owned(),
            tenant: format!("tenant-{id}"),
            class,
            resources: res(cpu, GI),
            idle,
            started_seq,
        }
    }

    fn request(tenant: &str, class: PriorityClass, cpu: u64) -> Request {
        Request {
            tenant: tenant.to_owned(),
            class,
            resources: res(cpu, GI),
        }
    }

    fn preempted(admission: Admission) -> Vec<String> {
        match admission {
            Admission::Preempt(ids) => ids,
            other => panic!("expected preemption, got {other:?}"),
        }
    }

    /// 4 CPUs and 16Gi: memory never binds in the tests that use [`running`].
    const NODE: Resources = Resources {
        cpu_millis: 4000,
        memory_bytes: 16 * GI,
    };

    #[test]
    fn classes_parse_print_and_serialize_in_kebab_case() {
        for class in PriorityClass::ALL {
            assert_eq!(class.to_string().parse::<PriorityClass>(), Ok(class));
            assert_eq!(serde_json::to_string(&class).unwrap(), format!("\"{class}\""));
        }
        assert_eq!(
            serde_json::from_str::<PriorityClass>("\"best-effort\"").unwrap(),
            BestEffort
        );
        assert_eq!(
            "urgent".parse::<PriorityClass>().unwrap_err().to_string(),
            "unknown priority class \"urgent\": use high, medium, low or best-effort"
        );
        assert!(BestEffort < Low && Low < Medium && Medium < High);
    }

    #[test]
    fn a_function_may_pick_its_tenants_class_or_lower() {
        assert_eq!(PriorityClass::effective(Medium, None), Ok(Medium));
        assert_eq!(PriorityClass::effective(Medium, Some(Medium)), Ok(Medium));
        assert_eq!(PriorityClass::effective(Medium, Some(BestEffort)), Ok(BestEffort));
        let err = PriorityClass::effective(Medium, Some(High)).unwrap_err();
        assert_eq!(
            err,
            PriorityError::AboveTenant {
                requested: High,
                tenant_max: Medium
            }
        );
        assert!(err.to_string().contains("pick medium or lower"), "{err}");
    }

    #[test]
    fn preemption_only_goes_strictly_down_and_never_from_best_effort() {
        assert!(High.may_preempt(Low) && Low.may_preempt(BestEffort));
        assert!(!High.may_preempt(High) && !Low.may_preempt(Medium));
        assert!(PriorityClass::ALL.iter().all(|&c| !BestEffort.may_preempt(c)));
    }

    #[test]
    fn resource_arithmetic_checks_every_dimension() {
        assert_eq!(res(1, 2).checked_add(res(3, 4)), Some(res(4, 6)));
        assert_eq!(res(1, u64::MAX).checked_add(res(1, 1)), None);
        assert_eq!(res(5, 5).checked_sub(res(2, 5)), Some(res(3, 0)));
        assert_eq!(res(5, 5).checked_sub(res(6, 0)), None);
        assert_eq!(res(5, 5).saturating_sub(res(6, 1)), res(0, 4));
        assert!(res(4, 4).fits(res(4, 4)));
        assert!(!res(4, 5).fits(res(4, 4)) && !res(5, 4).fits(res(4, 4)));
        assert_eq!(res(500, 256 << 20).to_string(), "500m CPU and 256Mi memory");
    }

    #[test]
    fn admits_what_fits_without_touching_anyone() {
        let node = [running("a", BestEffort, 3000, true, 1)];
        assert_eq!(
            plan_admission(NODE, &node, &request("t", High, 1000)),
            Admission::Admit
        );
    }

    #[test]
    fn takes_idle_instances_first_then_the_lowest_class_then_the_newest() {
        let node = [
            running("busy-be", BestEffort, 1000, false, 1),
            running("idle-low", Low, 1000, true, 2),
            running("old-be", BestEffort, 1000, true, 3),
            running("new-be", BestEffort, 1000, true, 4),
        ];
        let plan = |cpu| preempted(plan_admission(NODE, &node, &request("t", High, cpu)));
        assert_eq!(plan(1000), ["new-be"]);
        assert_eq!(plan(2000), ["new-be", "old-be"]);
        assert_eq!(plan(3000), ["new-be", "old-be", "idle-low"]);
        assert_eq!(plan(4000), ["new-be", "old-be", "idle-low", "busy-be"]);
    }

    #[test]
    fn takes_no_more_victims_than_needed() {
        // The preferred victim is too small alone; the bigger one suffices by itself.
        let node = [
            running("small-idle", BestEffort, 500, true, 1),
            running("big-busy", BestEffort, 3500, false, 2),
        ];
        assert_eq!(
            preempted(plan_admission(NODE, &node, &request("t", Low, 3000))),
            ["big-busy"]
        );
    }

    #[test]
    fn never_preempts_the_same_or_a_higher_class() {
        let node = [
            running("peer", Medium, 2000, true, 1),
            running("above", High, 2000, true, 2),
        ];
        let Admission::Reject { reason } = plan_admission(NODE, &node, &request("t", Medium, 1000)) else {
            panic!("a full node of equal and higher classes must refuse");
        };
        assert_eq!(
            reason.to_string(),
            "no capacity for medium work: it needs 1000m CPU and 1Gi memory, 0m CPU and 14Gi memory is free, and no instance below medium runs to preempt; retry when capacity frees up"
        );
    }

    #[test]
    fn best_effort_never_preempts() {
        let node = [running("be", BestEffort, 4000, true, 1)];
        let Admission::Reject { reason } = plan_admission(NODE, &node, &request("t", BestEffort, 1)) else {
            panic!("best-effort must not preempt");
        };
        assert!(
            reason.to_string().contains("best-effort work never preempts"),
            "{reason}"
        );
    }

    #[test]
    fn refuses_when_even_every_lower_instance_would_not_do() {
        let node = [
            running("low", Low, 1000, true, 1),
            running("high", High, 3000, false, 2),
        ];
        let Admission::Reject { reason } = plan_admission(NODE, &node, &request("t", Medium, 2000)) else {
            panic!("must refuse");
        };
        assert_eq!(reason.preemptible, res(1000, GI));
        assert!(
            reason
                .to_string()
                .ends_with("preempting every instance below medium would free only 1000m CPU and 1Gi memory"),
            "{reason}"
        );
    }

    #[test]
    fn memory_binds_like_cpu() {
        let node = [Running {
            resources: res(0, 16 * GI),
            ..running("fat", Low, 0, false, 1)
        }];
        let small = Request {
            resources: res(1, 1),
            ..request("t", Medium, 0)
        };
        assert_eq!(preempted(plan_admission(NODE, &node, &small)), ["fat"]);
    }

    #[test]
    fn drf_serves_higher_classes_first_then_the_smallest_weighted_share() {
        let usage = HashMap::from([
            ("a".to_owned(), res(2000, GI)),   // dominant: CPU, 1/2
            ("b".to_owned(), res(0, 12 * GI)), // dominant: memory, 3/4
        ]);
        let waiting = [
            request("a", Low, 100),
            request("b", Medium, 100),
            request("a", Medium, 100),
        ];
        let order = drf_order(&waiting, &usage, &HashMap::new(), NODE);
        assert_eq!(
            order,
            [2, 1, 0],
            "medium before low; within medium, a (1/2) before b (3/4)"
        );
        // With twice the weight, b's share is 3/8 and it goes first.
        let weights = HashMap::from([("b".to_owned(), 2)]);
        assert_eq!(drf_order(&waiting, &usage, &weights, NODE), [1, 2, 0]);
    }

    #[test]
    fn drf_interleaves_tenants_as_their_requests_are_served() {
        let waiting = [
            request("a", Low, 1000),
            request("a", Low, 1000),
            request("a", Low, 1000),
            request("b", Low, 1000),
            request("b", Low, 1000),
        ];
        let order = drf_order(&waiting, &HashMap::new(), &HashMap::new(), NODE);
        assert_eq!(order, [0, 3, 1, 4, 2]);
    }

    #[test]
    fn a_zero_weight_tenant_is_served_last_in_its_class() {
        let waiting = [request("zero", Low, 1), request("one", Low, 1000)];
        let weights = HashMap::from([("zero".to_owned(), 0)]);
        assert_eq!(drf_order(&waiting, &HashMap::new(), &weights, NODE), [1, 0]);
        assert_eq!(dominant_share(Resources::ZERO, 0, NODE), f64::INFINITY);
    }

    #[test]
    fn usage_is_summed_per_tenant() {
        let mut a2 = running("a2", Low, 250, true, 2);
        a2.tenant = "tenant-a1".to_owned();
        let usage = usage_by_tenant(&[
            running("a1", Low, 500, true, 1),
            a2,
            running("b", Low, 1, true, 3),
        ]);
        assert_eq!(usage["tenant-a1"], res(750, 2 * GI));
        assert_eq!(usage["tenant-b"], res(1, GI));
    }

    fn any_class() -> impl Strategy<Value = PriorityClass> {
        prop::sample::select(PriorityClass::ALL.to_vec())
    }

    fn any_resources() -> impl Strategy<Value = Resources> {
        (0u64..2000, 0u64..2000).prop_map(|(c, m)| res(c, m))
    }

    fn any_node() -> impl Strategy<Value = Vec<Running>> {
        prop::collection::vec((any_class(), any_resources(), any::<bool>(), 0u8..4), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (class, resources, idle, tenant))| Running {
                    id: format!("i{i}"),
                    tenant: format!("t{tenant}"),
                    class,
                    resources,
                    idle,
                    started_seq: i as u64,
                })
                .collect()
        })
    }

    fn any_request() -> impl Strategy<Value = Request> {
        (any_class(), any_resources(), 0u8..4).prop_map(|(class, resources, tenant)| Request {
            tenant: format!("t{tenant}"),
            class,
            resources,
        })
    }

    fn capacity() -> impl Strategy<Value = Resources> {
        (0u64..8000, 0u64..8000).prop_map(|(c, m)| res(c, m))
    }

    /// The node after applying an admission; `None` when refused.
    fn apply(node: &[Running], request: &Request, admission: &Admission, id: &str) -> Option<Vec<Running>> {
        let victims: &[String] = match admission {
            Admission::Admit => &[],
            Admission::Preempt(ids) => ids,
            Admission::Reject { .. } => return None,
        };
        let mut next: Vec<Running> = node
            .iter()
            .filter(|r| !victims.contains(&r.id))
            .cloned()
            .collect();
        next.push(Running {
            id: id.to_owned(),
            tenant: request.tenant.clone(),
            class: request.class,
            resources: request.resources,
            idle: false,
            started_seq: u64::MAX,
        });
        Some(next)
    }

    fn fits_after(capacity: Resources, node: &[Running], request: &Request, stopped: &[&Running]) -> bool {
        let kept = node.iter().filter(|r| !stopped.iter().any(|s| s.id == r.id));
        Sum::of(kept.map(|r| &r.resources)).leaves_room(request.resources, capacity)
    }

    proptest! {
        // About one case in seven needs preemption; run enough to see many of them.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn admission_never_exceeds_capacity(capacity in capacity(), node in any_node(), request in any_request()) {
            let admission = plan_admission(capacity, &node, &request);
            if let Some(after) = apply(&node, &request, &admission, "new") {
                let total = Sum::of(after.iter().map(|r| &r.resources));
                prop_assert!(total.cpu <= u128::from(capacity.cpu_millis));
                prop_assert!(total.memory <= u128::from(capacity.memory_bytes));
            }
        }

        #[test]
        fn victims_are_strictly_lower_and_best_effort_never_preempts(
            capacity in capacity(), node in any_node(), request in any_request(),
        ) {
            if let Admission::Preempt(ids) = plan_admission(capacity, &node, &request) {
                prop_assert!(request.class != BestEffort);
                prop_assert!(!ids.is_empty());
                for id in &ids {
                    let victim = node.iter().find(|r| &r.id == id).unwrap();
                    prop_assert!(victim.class < request.class, "{id} is {}", victim.class);
                }
            }
        }

        /// Minimal: sparing any victim leaves no room. Preferred: no victim can be swapped for a
        /// spared candidate that ranks earlier, so a busy victim means no idle instance of its
        /// class (or of any lower class) could have been taken instead.
        #[test]
        fn victims_are_minimal_and_idle_ones_go_first(
            capacity in capacity(), node in any_node(), request in any_request(),
        ) {
            if let Admission::Preempt(ids) = plan_admission(capacity, &node, &request) {
                let victims: Vec<&Running> = ids.iter().map(|id| node.iter().find(|r| &r.id == id).unwrap()).collect();
                for (i, victim) in victims.iter().enumerate() {
                    let mut spared = victims.clone();
                    spared.remove(i);
                    prop_assert!(!fits_after(capacity, &node, &request, &spared), "{} need not stop", victim.id);
                    for other in node.iter().filter(|r| request.class.may_preempt(r.class) && !ids.contains(&r.id)) {
                        if victim_rank(other) < victim_rank(victim) {
                            let mut swapped = spared.clone();
                            swapped.push(other);
                            prop_assert!(
                                !fits_after(capacity, &node, &request, &swapped),
                                "{} (idle: {}) should have gone instead of {} (idle: {})",
                                other.id, other.idle, victim.id, victim.idle,
                            );
                        }
                    }
                }
            }
        }

        /// Preemption always goes strictly down the class order, so along any sequence of
        /// admissions no instance is ever preempted by work it once preempted, and victims coming
        /// back can never take the place of their preemptor.
        #[test]
        fn preemption_never_loops(
            capacity in capacity(),
            node in any_node(),
            requests in prop::collection::vec(any_request(), 1..10),
        ) {
            let mut node = node;
            let mut class_of: HashMap<String, PriorityClass> = node.iter().map(|r| (r.id.clone(), r.class)).collect();
            for (n, request) in requests.iter().enumerate() {
                let id = format!("r{n}");
                let admission = plan_admission(capacity, &node, request);
                if let Admission::Preempt(victims) = &admission {
                    for victim in victims {
                        prop_assert!(class_of[victim] < request.class);
                        let comeback = Request {
                            tenant: "victim".to_owned(),
                            class: class_of[victim],
                            resources: node.iter().find(|r| &r.id == victim).unwrap().resources,
                        };
                        let after = apply(&node, request, &admission, &id).unwrap();
                        if let Admission::Preempt(again) = plan_admission(capacity, &after, &comeback) {
                            prop_assert!(!again.contains(&id), "{victim} preempted its preemptor {id}");
                        }
                    }
                }
                if let Some(after) = apply(&node, request, &admission, &id) {
                    class_of.insert(id, request.class);
                    node = after;
                }
            }
        }

        #[test]
        fn drf_orders_by_class_then_picks_the_lowest_weighted_share(
            capacity in (1u64..8000, 1u64..8000).prop_map(|(c, m)| res(c, m)),
            waiting in prop::collection::vec(any_request(), 0..10),
            usage in prop::collection::vec(any_resources(), 4),
            weights in prop::collection::vec(0u32..4, 4),
        ) {
            let usage: HashMap<String, Resources> = usage.into_iter().enumerate().map(|(i, r)| (format!("t{i}"), r)).collect();
            let weights: HashMap<String, u32> = weights.into_iter().enumerate().map(|(i, w)| (format!("t{i}"), w)).collect();
            let order = drf_order(&waiting, &usage, &weights, capacity);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..waiting.len()).collect::<Vec<_>>());
            prop_assert!(order.windows(2).all(|w| waiting[w[0]].class >= waiting[w[1]].class));
            if let Some(&first) = order.first() {
                let share = |t: &str| dominant_share(usage.get(t).copied().unwrap_or_default(), weights[t], capacity);
                let chosen = &waiting[first];
                for other in waiting.iter().filter(|r| r.class == chosen.class) {
                    prop_assert!(share(&chosen.tenant) <= share(&other.tenant));
                }
            }
        }
    }
}
