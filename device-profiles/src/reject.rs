//! Why an input did not become a reading.
//!
//! Every refusal has a stable machine code (used as a metrics label, stored
//! in quarantine, returned by `rpm-sim check --json`) and a human sentence.
//! The sentence may cite values: it is stored with the quarantined payload,
//! never logged at info level or above.

use serde::Serialize;

use crate::decoded::SpecialValue;
use crate::metric::Metric;
use crate::units::UnitError;

/// The reason an input was quarantined.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reject {
    /// The payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// size of the payload
        size: usize,
        /// configured limit
        limit: usize,
    },
    /// The payload is not syntactically valid for its format.
    #[error("malformed payload: {detail}")]
    MalformedPayload {
        /// parser message
        detail: String,
    },
    /// The payload parses but does not have the shape the profile expects.
    #[error("payload does not match profile `{profile}`: {detail}")]
    SchemaMismatch {
        /// profile name
        profile: String,
        /// what was wrong
        detail: String,
    },
    /// A field name the profile does not map to a metric.
    #[error("`{name}` is not mapped to a metric by profile `{profile}`")]
    UnmappedField {
        /// profile name
        profile: String,
        /// the field or SenML name
        name: String,
    },
    /// The unit is not known.
    #[error("unknown unit `{unit}` for {metric}")]
    UnknownUnit {
        /// metric
        metric: Metric,
        /// unit string as sent
        unit: String,
    },
    /// The unit is missing where the metric needs one.
    #[error("no unit given for {metric}")]
    MissingUnit {
        /// metric
        metric: Metric,
    },
    /// The unit cannot measure the metric.
    #[error("unit `{unit}` cannot measure {metric}")]
    IncompatibleUnit {
        /// metric
        metric: Metric,
        /// unit given
        unit: String,
    },
    /// An IEEE 11073 special value (or a non-finite number) where a value was required.
    #[error("{metric} is {value}, not a number")]
    SpecialValue {
        /// metric
        metric: Metric,
        /// which special value
        value: SpecialValue,
    },
    /// Outside the metric's plausibility range.
    #[error("{metric} = {value} {unit} is outside the plausible range {low}..={high}")]
    Implausible {
        /// metric
        metric: Metric,
        /// canonical value
        value: f64,
        /// canonical unit
        unit: &'static str,
        /// range low
        low: f64,
        /// range high
        high: f64,
    },
    /// The measurement time is further in the future than allowed.
    #[error("measured-at is {seconds} s in the future (limit {limit} s)")]
    FutureTimestamp {
        /// seconds ahead of receipt
        seconds: i64,
        /// configured limit
        limit: i64,
    },
    /// The measurement time is older than any device could have stored.
    #[error("measured-at is {days} days before receipt (limit {limit} days)")]
    AncientTimestamp {
        /// days before receipt
        days: i64,
        /// configured limit
        limit: i64,
    },
    /// The timestamp cannot be interpreted.
    #[error("invalid timestamp: {detail}")]
    InvalidTimestamp {
        /// what was wrong
        detail: String,
    },
    /// The device is not assigned to a patient.
    #[error("device is not assigned to a patient")]
    UnknownDevice,
    /// No profile claims this topic or device.
    #[error("no device profile matches `{topic}`")]
    NoProfile {
        /// topic or identifier
        topic: String,
    },
    /// Bytes that do not follow their GATT characteristic's layout.
    #[error("invalid {characteristic} value: {detail}")]
    InvalidGatt {
        /// characteristic, e.g. "0x2A35"
        characteristic: String,
        /// what was wrong
        detail: String,
    },
    /// The decoder says the record is not clinical data.
    #[error("not clinical data: {detail}")]
    NotClinical {
        /// What the device flagged (a control-solution test, a sensor
        /// without skin contact, a calibration or demo record).
        detail: String,
    },
    /// The measurement has no components.
    #[error("measurement has no values")]
    Empty,
    /// The payload says two different things: a JSON object names the
    /// same key twice (`"v": 70, "v": 71`). Parsers disagree on which one
    /// wins; clinical input must not depend on that.
    #[error("ambiguous payload: {detail}")]
    AmbiguousPayload {
        /// what was ambiguous
        detail: String,
    },
    /// Finite numbers that combine (SenML base value plus value) to a
    /// number that is not finite: the device sent no special value, but
    /// the result cannot be stored.
    #[error("{metric}: {detail}")]
    NumericOverflow {
        /// metric
        metric: Metric,
        /// what overflowed
        detail: String,
    },
    /// Decoding this input failed inside the gateway (a bug, not the
    /// device's fault): kept so it can be re-processed once fixed, instead
    /// of stopping everything queued behind it.
    #[error("the decoder failed on this input: {detail}")]
    DecoderFailure {
        /// what failed
        detail: String,
    },
    /// A questionnaire response names a questionnaire that is not loaded.
    #[error("unknown questionnaire `{url}`")]
    UnknownQuestionnaire {
        /// canonical URL as sent
        url: String,
    },
    /// A questionnaire response names a version that is not loaded.
    #[error("questionnaire `{url}` version `{version}` is not loaded (loaded: {loaded})")]
    QuestionnaireVersion {
        /// canonical URL
        url: String,
        /// version as sent
        version: String,
        /// the version that is loaded
        loaded: String,
    },
    /// An answer to a question the questionnaire does not ask.
    #[error("questionnaire `{questionnaire}` has no item `{link_id}`")]
    UnknownItem {
        /// questionnaire name
        questionnaire: String,
        /// linkId as sent
        link_id: String,
    },
    /// An answer that is not one of the item's options, or not of its type.
    #[error("item `{link_id}`: {detail}")]
    InvalidAnswer {
        /// linkId
        link_id: String,
        /// what was wrong
        detail: String,
    },
    /// A required item is not answered.
    #[error("required item `{link_id}` is not answered")]
    MissingAnswer {
        /// linkId
        link_id: String,
    },
    /// The patient a questionnaire response names is not enrolled.
    #[error("the response's patient is not enrolled")]
    UnknownPatient,
    /// A questionnaire response names a patient other than the one its
    /// device is assigned to (a tablet answers for its own patient only).
    #[error("the response's device is not assigned to the patient it names")]
    PatientMismatch,
}

impl Reject {
    /// The stable machine code of this reason.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::PayloadTooLarge { .. } => "payload_too_large",
            Reject::MalformedPayload { .. } => "malformed_payload",
            Reject::SchemaMismatch { .. } => "schema_mismatch",
            Reject::UnmappedField { .. } => "unmapped_field",
            Reject::UnknownUnit { .. } => "unknown_unit",
            Reject::MissingUnit { .. } => "missing_unit",
            Reject::IncompatibleUnit { .. } => "incompatible_unit",
            Reject::SpecialValue { .. } => "special_value",
            Reject::Implausible { .. } => "implausible_value",
            Reject::FutureTimestamp { .. } => "future_timestamp",
            Reject::AncientTimestamp { .. } => "ancient_timestamp",
            Reject::InvalidTimestamp { .. } => "invalid_timestamp",
            Reject::UnknownDevice => "unknown_device",
            Reject::NoProfile { .. } => "no_profile",
            Reject::InvalidGatt { .. } => "invalid_gatt",
            Reject::NotClinical { .. } => "not_clinical",
            Reject::Empty => "empty_measurement",
            Reject::DecoderFailure { .. } => "decoder_failure",
            Reject::AmbiguousPayload { .. } => "ambiguous_payload",
            Reject::NumericOverflow { .. } => "numeric_overflow",
            Reject::UnknownQuestionnaire { .. } => "unknown_questionnaire",
            Reject::QuestionnaireVersion { .. } => "questionnaire_version",
            Reject::UnknownItem { .. } => "unknown_item",
            Reject::InvalidAnswer { .. } => "invalid_answer",
            Reject::MissingAnswer { .. } => "missing_answer",
            Reject::UnknownPatient => "unknown_patient",
            Reject::PatientMismatch => "patient_mismatch",
        }
    }

    pub(crate) fn from_unit_error(err: UnitError, metric: Metric) -> Self {
        match err {
            UnitError::Unknown(u) => Reject::UnknownUnit { metric, unit: u.0 },
            UnitError::Missing(metric) => Reject::MissingUnit { metric },
            UnitError::Incompatible { metric, unit } => Reject::IncompatibleUnit {
                metric,
                unit: unit.ucum().to_string(),
            },
        }
    }
}
