//! Domain types and pure logic of knative-lambda: names, quantities, function specs. No IO.

pub mod access;
pub mod autoscale;
pub mod billing_window;
pub mod budget;
pub mod cost;
pub mod cost_report;
pub mod environment;
pub mod launch;
pub mod metering;
pub mod money;
pub mod name;
pub mod quantity;
pub mod rates;
pub mod scheduling;
pub mod secret;
pub mod spec;
pub mod tenant;
pub mod usage;

pub use access::{Action, Decision, Role, authorize};
pub use autoscale::{
    AutoscaleError, AutoscalerConfig, DeciderSpec, Sample, SampleWindow, ScaleDecision, ScaleReason,
    ScalerState, decide,
};
pub use billing_window::{MAX_TILES, Period, PeriodKey, Step, Window, WindowError, parse_time};
pub use budget::{
    Budget, BudgetAlert, BudgetError, BudgetExceeded, DEFAULT_THRESHOLDS, MAX_THRESHOLD, Severity, Threshold,
    crossed, enforce_cap,
};
pub use cost::{CostError, Costs, IdleSplit, capacity_usage, split_idle};
pub use cost_report::{
    CapacitySpan, Dimension, Quantities, Report, ReportError, ReportRequest, ReportRow, report,
};
pub use environment::{EnvironmentError, EnvironmentSpec, environment_spec, environment_tenant};
pub use launch::{Launch, relocated};
pub use metering::{
    CgroupReading, InstanceMeter, Metered, Skipped, StorageMeter, StoredBytes, billed_ms, meter_build,
    meter_invocation,
};
pub use money::{Money, MoneyError};
pub use name::{NameError, validate_function_name, validate_secret_name, validate_tenant_name};
pub use quantity::{
    ByteQuantity, CpuQuantity, QuantityError, format_cpu, format_duration, format_memory, parse_cpu,
    parse_duration, parse_memory,
};
pub use rates::{MAX_RATE, RATE_DECIMALS, RateCard, Rates, RatesError};
pub use scheduling::{
    Admission, NoCapacity, PriorityClass, PriorityError, Request, Resources, Running, drf_order,
    plan_admission, usage_by_tenant,
};
pub use secret::{SecretError, SecretKeyRef, SecretLimits, SecretUse, check_secret};
pub use spec::{FunctionSettings, FunctionSpec, Runtime, SpecError, SpecLimits};
pub use tenant::{InstanceLimits, LimitsError, Quota, QuotaExceeded, Quotas, RateSpec, TenantSpec, admit};
pub use usage::{BucketKey, BucketMismatch, Minute, Resource, Usage, UsageBucket, compact};
