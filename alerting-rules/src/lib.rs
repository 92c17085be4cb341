//! # alerting-rules
//!
//! The clinical alert rules of rpm-gateway as a pure library: a TOML rule
//! language a clinician can read, bundled packs with their guideline
//! sources, and a deterministic alert state machine the gateway wires to its
//! SQLite store. Nothing here does I/O except [`RuleSet::load_dir`].
//!
//! - [`load`], [`ruleset`], [`plan`]: reading and validating packs and care
//!   plans, every error with file, line and field;
//! - [`rule`], [`duration`], [`quantity`], [`message`]: the compiled model;
//! - [`overrides`]: per-patient limits and disabled rules;
//! - [`history`], [`condition`]: evaluating a condition on bounded windows;
//! - [`engine`], [`state`], [`missing`]: transitions, hysteresis, flapping,
//!   snooze, missing data with gateway downtime;
//! - [`mod@replay`], [`input`]: the offline `rules test` tool;
//! - [`tier`]: risk tiers (`[[tier]]` entries) from alerts, data days and
//!   follow-up tasks, with their reasons.
//!
//! The bundled packs are defaults a program edits, not medical advice.
#![warn(missing_docs)]

pub mod condition;
pub mod duration;
pub mod engine;
pub mod error;
pub mod history;
pub mod input;
pub mod load;
pub mod message;
pub mod missing;
pub mod model;
pub mod overrides;
pub mod plan;
pub mod quantity;
mod raw;
mod reading_id;
pub mod replay;
pub mod rule;
pub mod ruleset;
pub mod state;
pub mod tier;

pub use condition::{LeafOutcome, Status};
pub use duration::RuleDuration;
pub use engine::{
    Engine, EngineConfig, Evaluation, Input, MissingInput, Note, Transition, TransitionKind,
    DEFAULT_SETTLE,
};
pub use error::{FileError, LoadErrors};
pub use history::{History, MemoryHistory, Needs, Point, Reach};
pub use load::SourceFile;
pub use model::{Evidence, NewReading, Patient};
pub use overrides::{EffectiveLimit, OverrideError, Overrides, RuleOverride};
pub use plan::CarePlans;
pub use quantity::Quantity;
pub use reading_id::ReadingId;
pub use replay::{replay, replay_with, AlertEvent, ReplayOptions, ReplayReading};
pub use rule::{Rule, Severity};
pub use ruleset::RuleSet;
pub use state::{acknowledge, AckError, AlertState, AlertStatus, OpenAlert};
pub use tier::{Tier, TierFacts, TierOutcome, TierSet};
