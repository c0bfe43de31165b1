//! What usage costs (DESIGN §6): the rates in the server configuration ([`Rates`]), and their
//! checked, exact form ([`RateCard`]) that the cost model computes with. Two models apply side
//! by side, as the platform bills both ways: OpenCost's for resources an instance holds (CPU and
//! memory, max of reserved and used, per hour) and AWS Lambda's for invocations (requests and
//! GB-seconds). An operator who wants one model only sets the other's rates to zero.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::money::{DecimalError, float_scaled};
use crate::usage::Resource;

/// Decimal places a rate keeps: pico-units (10⁻¹²) hold every published per-unit price exactly
/// (Lambda's $0.0000166667 per GB-second has 10).
pub const RATE_DECIMALS: u32 = 12;
/// The largest rate accepted, per unit: a bound that keeps exact cost arithmetic in range and
/// catches a misplaced decimal point.
pub const MAX_RATE: f64 = 1_000_000.0;

/// Prices per unit, in `currency`, as written in the server configuration. Absent fields take
/// the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Rates {
    /// ISO 4217 code, e.g. `USD`. Default `USD`.
    pub currency: String,
    /// Per core-hour of max(reserved, used) CPU. Default 0.031611: OpenCost's default custom
    /// pricing (`configs/default.json`, GCP us-central1 on-demand vCPU).
    pub cpu_core_hour: f64,
    /// Per GB-hour (GiB) of max(reserved, used) memory. Default 0.004237: OpenCost's default
    /// custom pricing (same source).
    pub memory_gb_hour: f64,
    /// Per million invocations. Default 0.20: AWS Lambda's request price
    /// (aws.amazon.com/lambda/pricing, us-east-1).
    pub invocation_per_million: f64,
    /// Per GB-second (GiB) of configured memory × billed duration. Default 0.0000166667: AWS
    /// Lambda's x86 duration price, first tier (same source).
    pub invocation_gb_second: f64,
    /// Per minute of build CPU time. Default 0.005: AWS CodeBuild's `general1.small` Linux
    /// price per build-minute (aws.amazon.com/codebuild/pricing).
    pub build_minute: f64,
    /// Per GB-month (GiB, 730 hours) of stored bytes. Default 0.04: OpenCost's default storage
    /// price, 0.00005479452 per GiB-hour × 730.
    pub storage_gb_month: f64,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            currency: "USD".to_owned(),
            cpu_core_hour: 0.031611,
            memory_gb_hour: 0.004237,
            invocation_per_million: 0.20,
            invocation_gb_second: 0.0000166667,
            build_minute: 0.005,
            storage_gb_month: 0.04,
        }
    }
}

/// Why rates cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RatesError {
    /// The currency is not a three-letter ISO 4217 code.
    #[error("rates.currency {0:?} is not an ISO 4217 code: use three capital letters such as USD or EUR")]
    Currency(String),
    /// A rate is negative, infinite or not a number.
    #[error("rates.{field} is {value}: a rate must be a finite number, zero or more")]
    Invalid { field: &'static str, value: f64 },
    /// A rate has more decimal places than rates keep.
    #[error("rates.{field} {value} has more than {RATE_DECIMALS} decimal places")]
    TooPrecise { field: &'static str, value: f64 },
    /// A rate is above [`MAX_RATE`].
    #[error("rates.{field} {value} is above the largest rate accepted, {MAX_RATE}")]
    TooLarge { field: &'static str, value: f64 },
}

impl Rates {
    /// The configuration key of each resource's rate.
    fn field(resource: Resource) -> &'static str {
        match resource {
            Resource::Cpu => "cpuCoreHour",
            Resource::Memory => "memoryGbHour",
            Resource::Requests => "invocationPerMillion",
            Resource::Duration => "invocationGbSecond",
            Resource::Build => "buildMinute",
            Resource::Storage => "storageGbMonth",
        }
    }

    /// The rate for one resource, per its [`Resource::rate_unit`].
    pub fn rate(&self, resource: Resource) -> f64 {
        match resource {
            Resource::Cpu => self.cpu_core_hour,
            Resource::Memory => self.memory_gb_hour,
            Resource::Requests => self.invocation_per_million,
            Resource::Duration => self.invocation_gb_second,
            Resource::Build => self.build_minute,
            Resource::Storage => self.storage_gb_month,
        }
    }

    /// Checks the rates and turns them into exact pico-units.
    pub fn validate(&self) -> Result<RateCard, RatesError> {
        let code = self.currency.as_bytes();
        if code.len() != 3 || !code.iter().all(u8::is_ascii_uppercase) {
            return Err(RatesError::Currency(self.currency.clone()));
        }
        let mut pico = [0u128; Resource::ALL.len()];
        for (slot, resource) in pico.iter_mut().zip(Resource::ALL) {
            let (field, value) = (Rates::field(resource), self.rate(resource));
            if !value.is_finite() || value < 0.0 {
                return Err(RatesError::Invalid { field, value });
            }
            if value > MAX_RATE {
                return Err(RatesError::TooLarge { field, value });
            }
            *slot = float_scaled(value, RATE_DECIMALS).map_err(|e| match e {
                DecimalError::TooPrecise => RatesError::TooPrecise { field, value },
                DecimalError::Invalid | DecimalError::TooLarge => RatesError::Invalid { field, value },
            })?;
        }
        Ok(RateCard {
            currency: self.currency.clone(),
            pico,
        })
    }
}

/// Checked rates in exact pico-units of the currency per rate unit. Only [`Rates::validate`]
/// makes one, so the cost model never sees a negative, infinite or imprecise rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    currency: String,
    pico: [u128; Resource::ALL.len()],
}

impl RateCard {
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The rate of `resource` in pico-units (10⁻¹²) of the currency per
    /// [`Resource::rate_unit`].
    pub fn pico_per_unit(&self, resource: Resource) -> u128 {
        self.pico[resource as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_exact_and_valid() {
        let card = Rates::default().validate().unwrap();
        assert_eq!(card.currency(), "USD");
        assert_eq!(card.pico_per_unit(Resource::Cpu), 31_611_000_000);
        assert_eq!(card.pico_per_unit(Resource::Memory), 4_237_000_000);
        assert_eq!(card.pico_per_unit(Resource::Requests), 200_000_000_000);
        assert_eq!(card.pico_per_unit(Resource::Duration), 16_666_700);
        assert_eq!(card.pico_per_unit(Resource::Build), 5_000_000_000);
        assert_eq!(card.pico_per_unit(Resource::Storage), 40_000_000_000);
    }

    #[test]
    fn parse_in_camel_case_with_defaults_and_refuse_typos() {
        let rates: Rates =
            serde_json::from_str(r#"{"currency": "EUR", "cpuCoreHour": 0.05, "storageGbMonth": 0}"#).unwrap();
        assert_eq!(rates.currency, "EUR");
        assert_eq!(rates.cpu_core_hour, 0.05);
        assert_eq!(rates.storage_gb_month, 0.0);
        assert_eq!(rates.memory_gb_hour, Rates::default().memory_gb_hour);
        assert!(serde_json::from_str::<Rates>(r#"{"cpuPerHour": 1}"#).is_err());
        let json = serde_json::to_value(Rates::default()).unwrap();
        assert_eq!(json["invocationGbSecond"], 0.0000166667);
    }

    #[test]
    fn validation_names_the_field_and_the_fix() {
        let bad = |f: fn(&mut Rates)| {
            let mut r = Rates::default();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert_eq!(
            bad(|r| r.cpu_core_hour = -0.1),
            RatesError::Invalid {
                field: "cpuCoreHour",
                value: -0.1
            }
        );
        assert!(matches!(
            bad(|r| r.memory_gb_hour = f64::NAN),
            RatesError::Invalid { .. }
        ));
        assert!(matches!(
            bad(|r| r.build_minute = f64::INFINITY),
            RatesError::Invalid { .. }
        ));
        assert!(matches!(
            bad(|r| r.storage_gb_month = 1e-13),
            RatesError::TooPrecise {
                field: "storageGbMonth",
                ..
            }
        ));
        assert!(matches!(
            bad(|r| r.invocation_per_million = 2e6),
            RatesError::TooLarge { .. }
        ));
        let err = bad(|r| r.currency = "usd".into());
        assert_eq!(
            err.to_string(),
            "rates.currency \"usd\" is not an ISO 4217 code: use three capital letters such as USD or EUR"
        );
        let zero = Rates {
            cpu_core_hour: 0.0,
            memory_gb_hour: -0.0,
            ..Rates::default()
        };
        assert!(zero.validate().is_ok(), "zero switches a model off");
    }
}
