//! Questionnaires: patient-reported outcomes as data.
//!
//! A symptom check-in or a validated instrument (PHQ-9, GAD-7, mMRC, ...)
//! is described by a FHIR R4 `Questionnaire` JSON file, the exchange form
//! EHRs and apps already speak, not by code: its items and answer options
//! (with their codes), which items are required, the score of each answer
//! (the standard `ordinalValue` extension), and how answers become
//! readings, in two extensions of our own ([`SCORE_EXTENSION`],
//! [`READING_EXTENSION`]). A file is validated when loaded and refused with
//! its file, line and column like a device profile, so a program's own
//! (licensed) definitions are checked as strictly as the bundled ones.
//!
//! A response ([`response`]) is validated against its definition and
//! scored ([`scoring`]); the scores and the single answers a definition
//! marks become readings, so that rules, the API and forwarding treat them
//! like vitals.

mod load;
mod model;
pub mod response;
pub mod scoring;

pub use load::{bundled, bundled_dir, QuestionnaireSet};
pub use model::{AnswerOption, Item, ItemKind, Method, Questionnaire, ScoreDef};
pub use response::{Accepted, Answer, ResponseInput, Subject};

/// The FHIR extension that gives an answer option its score.
pub const ORDINAL_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";

/// Our extension on a `Questionnaire`: one score it yields (complex:
/// `metric`, `method`, `item` (repeated), `maxMissing`, optional `code`).
pub const SCORE_EXTENSION: &str =
    "https://rpm-gateway.dev/fhir/StructureDefinition/questionnaire-score";

/// Our extension on an item: its answer's score also becomes a reading of
/// this metric (`valueCode`), so that rules can test a single answer.
pub const READING_EXTENSION: &str =
    "https://rpm-gateway.dev/fhir/StructureDefinition/questionnaire-item-reading";

/// The FHIR extensions that bound an integer or decimal answer.
pub const MIN_VALUE_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/minValue";
/// See [`MIN_VALUE_EXTENSION`].
pub const MAX_VALUE_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/maxValue";

#[cfg(test)]
mod tests;
