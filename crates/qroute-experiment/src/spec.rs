//! What an experiment is: its arms (each a routing strategy with a traffic
//! weight), the unit key that makes assignment sticky, its time window and
//! holdout. The same shape is read from config (`[[experiments]]`) and from
//! `POST /v1/experiments`, and stored as JSON in the experience store.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::assign::{Arm, Assigner};
use qroute_core::policy::Strategy;
use qroute_core::{Error, Result};

/// The arm name a held-out unit is logged under.
pub const HOLDOUT: &str = "holdout";

/// Which request attribute identifies a unit. Every request of a unit gets
/// the same arm; a request without the attribute is not enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKey {
    /// `user_id` on `/v1/execute`, `user` on `/v1/chat/completions`.
    User,
    /// The caller's API key (`Authorization: Bearer …` or `x-api-key`).
    ApiKey,
    /// A request header, by name (case-insensitive), e.g. `x-tenant-id`.
    Header(String),
}

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitKey::User => f.write_str("user"),
            UnitKey::ApiKey => f.write_str("api_key"),
            UnitKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

impl std::str::FromStr for UnitKey {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "user" => Ok(UnitKey::User),
            "api_key" => Ok(UnitKey::ApiKey),
            _ => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) => {
                    Ok(UnitKey::Header(h.to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "unit {s:?}: expected \"user\", \"api_key\" or \"header:<header name>\""
                )),
            },
        }
    }
}

impl Serialize for UnitKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnitKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fn one() -> f64 {
    1.0
}

/// `Serialize` for structs derived with `#[serde(remote = "Self")]`: as
/// derived.
macro_rules! serialize_as_derived {
    ($($t:ty),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    )+};
}

qroute_core::objects_only!(ArmSpec, ExperimentSpec);
serialize_as_derived!(ArmSpec, ExperimentSpec);

/// One arm: a strategy, the share of traffic it gets, and optionally a
/// frozen checkpoint it scores with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ArmSpec {
    pub name: String,
    /// Relative traffic weight (normalised over the arms).
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(deserialize_with = "qroute_core::objects::object")]
    pub strategy: Strategy,
    /// The policy this arm scores with, frozen, by name: `vN` for version N
    /// of the policy registry, or a directory name inside the configured
    /// `policy.checkpoints_dir`. Never a path: callers of the API must not
    /// make the gateway read arbitrary files. Absent: the live policy the
    /// online trainer keeps improving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// Whether `name` can only name a policy, never a path.
pub fn checkpoint_name_ok(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(ok)
}

/// An experiment as configured or posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ExperimentSpec {
    /// Letters, digits, `-`, `_` and `.`; at most 64 characters.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub unit: UnitKey,
    pub arms: Vec<ArmSpec>,
    /// The arm every other is compared with (the first when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Share of units left out (served by the gateway's default strategy and
    /// logged as arm `holdout`), in `[0, 1)`.
    #[serde(default)]
    pub holdout: f64,
    /// Unix ms when enrolment starts (at creation when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// Unix ms when enrolment ends (runs until stopped when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Requests per arm the always-valid intervals are tuned for (tightest
    /// near there; valid at any sample size), in `1..=MAX_HORIZON`.
    #[serde(default = "default_horizon")]
    pub horizon: u64,
}

fn default_horizon() -> u64 {
    1000
}

/// Largest `horizon`: a billion requests per arm.
pub const MAX_HORIZON: u64 = 1_000_000_000;

/// Where an experiment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Running,
    /// Its `end_ms` passed.
    Ended,
    /// Stopped through the API.
    Stopped,
}

impl Status {
    /// The name it is serialised as.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Ended => "ended",
            Status::Stopped => "stopped",
        }
    }
}

/// An experiment as stored: the spec and its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub spec: ExperimentSpec,
    pub created_ms: u64,
    /// When a stop ended enrolment. The decisions it made stay in the store.
    #[serde(default)]
    pub stopped_ms: Option<u64>,
    /// The store's decision count at creation: results scan from here.
    pub first_seq: u64,
}

impl ExperimentSpec {
    /// Checks what can be checked without the gateway: the id, arm names,
    /// weights, holdout, control and time window.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(id_ok) {
            return bad(format!(
                "id {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        if let Some(a) = self
            .arms
            .iter()
            .find(|a| a.checkpoint.as_deref().is_some_and(|c| !checkpoint_name_ok(c)))
        {
            return bad(format!(
                "arms[{:?}].checkpoint: a policy name (`v7` for a registered version, or a name in \
                 policy.checkpoints_dir): 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                a.name
            ));
        }
        if let Some(a) = self.arms.iter().find(|a| a.name == HOLDOUT || a.name.is_empty()) {
            return bad(format!("arms: the name {:?} is reserved or empty", a.name));
        }
        self.assigner().map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("arms: {m}")),
            e => e,
        })?;
        if let Some(c) = &self.control {
            if !self.arms.iter().any(|a| &a.name == c) {
                return bad(format!("control: no arm is named {c:?}"));
            }
        }
        if let (Some(s), Some(e)) = (self.start_ms, self.end_ms) {
            if e <= s {
                return bad(format!("end_ms ({e}) must come after start_ms ({s})"));
            }
        }
        if !(1..=MAX_HORIZON).contains(&self.horizon) {
            return bad(format!("horizon: must lie in 1..={MAX_HORIZON}, got {}", self.horizon));
        }
        Ok(())
    }

    /// The sticky assigner over this spec's arms and holdout.
    pub fn assigner(&self) -> Result<Assigner> {
        let arms = self.arms.iter().map(|a| Arm::new(&a.name, a.weight)).collect();
        Assigner::new(&self.id, arms, self.holdout)
    }

    /// The control arm's name.
    pub fn control(&self) -> &str {
        self.control.as_deref().unwrap_or(&self.arms[0].name)
    }
}

impl Experiment {
    /// When enrolment starts.
    pub fn start_ms(&self) -> u64 {
        self.spec.start_ms.unwrap_or(self.created_ms)
    }

    /// When enrolment ends or ended, if it does.
    pub fn end_ms(&self) -> Option<u64> {
        match (self.stopped_ms, self.spec.end_ms) {
            (Some(s), Some(e)) => Some(s.min(e)),
            (s, e) => s.or(e),
        }
    }

    pub fn status(&self, now_ms: u64) -> Status {
        match (self.stopped_ms, self.spec.end_ms) {
            (Some(s), _) if self.spec.end_ms.is_none_or(|e| s < e) => Status::Stopped,
            _ if self.end_ms().is_some_and(|e| now_ms >= e) => Status::Ended,
            _ if now_ms < self.start_ms() => Status::Scheduled,
            _ => Status::Running,
        }
    }

    /// Whether requests are enrolled at `now_ms`.
    pub fn enrolling(&self, now_ms: u64) -> bool {
        self.status(now_ms) == Status::Running
    }

    /// Whether this experiment's window meets `other`'s: two experiments
    /// over the same traffic would compete for it.
    pub fn overlaps(&self, other: &Experiment) -> bool {
        let ends_after = |e: Option<u64>, s: u64| e.is_none_or(|e| e > s);
        ends_after(self.end_ms(), other.start_ms()) && ends_after(other.end_ms(), self.start_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ExperimentSpec {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#"{"id":"e1","unit":"header:X-Tenant","arms":[
        {"name":"learned","strategy":{"kind":"learned"}},
        {"name":"cheap","weight":2,"strategy":{"kind":"cost_optimized"}}]}"#;

    #[test]
    fn parses_and_validates() {
        let s = spec(BASE);
        assert_eq!(s.unit, UnitKey::Header("x-tenant".into()));
        assert_eq!(s.control(), "learned");
        assert_eq!(s.arms[0].weight, 1.0);
        s.validate().unwrap();
        let round: ExperimentSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(round, s);

        let mut bad = s.clone();
        bad.id = "has space".into();
        assert!(bad.validate().unwrap_err().to_string().contains("id"));
        let mut bad = s.clone();
        bad.arms[1].name = HOLDOUT.into();
        assert!(bad.validate().unwrap_err().to_string().contains("reserved"));
        let mut bad = s.clone();
        bad.control = Some("nope".into());
        assert!(bad.validate().unwrap_err().to_string().contains("control"));
        let mut bad = s.clone();
        bad.holdout = 1.0;
        assert!(bad.validate().unwrap_err().to_string().contains("holdout"));
        let mut bad = s.clone();
        (bad.start_ms, bad.end_ms) = (Some(10), Some(5));
        assert!(bad.validate().unwrap_err().to_string().contains("end_ms"));
        assert!(serde_json::from_str::<ExperimentSpec>(&BASE.replace("header:X-Tenant", "cookie")).is_err());
        assert!(serde_json::from_str::<ExperimentSpec>(&BASE.replace("\"unit\"", "\"colour\":1,\"unit\"")).is_err());
    }

    #[test]
    fn lifecycle_and_overlap() {
        let mut e = Experiment {
            spec: ExperimentSpec {
                start_ms: Some(100),
                end_ms: Some(200),
                ..spec(BASE)
            },
            created_ms: 50,
            stopped_ms: None,
            first_seq: 0,
        };
        assert_eq!(e.status(99), Status::Scheduled);
        assert!(e.enrolling(100) && e.enrolling(199));
        assert_eq!(e.status(200), Status::Ended);
        let mut later = e.clone();
        later.spec.start_ms = Some(200);
        later.spec.end_ms = None;
        assert!(!e.overlaps(&later) && !later.overlaps(&e));
        later.spec.start_ms = Some(150);
        assert!(e.overlaps(&later) && later.overlaps(&e));
        e.stopped_ms = Some(120);
        assert_eq!(e.status(121), Status::Stopped);
        assert!(!e.enrolling(121));
        assert!(!e.overlaps(&later));
    }
}
