//! `[normalize]`, `[profiles]` and `[questionnaires]`: the device profiles
//! and questionnaire definitions the pipeline decodes with, and the clock
//! and size policy of normalization.

use chrono::FixedOffset;
use device_profiles::canonical::BadTimePolicy;
use device_profiles::ClockPolicy;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[normalize]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// A measured-at further ahead of receipt than this is wrong.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// A measured-at older than this is wrong (clock reset to 1970/2000).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// `correct` (use receipt time, keep the device time, flag) or `quarantine`.
    pub on_bad_time: BadTimePolicy,
    /// Offset for device-local wall times without a zone, e.g. `+01:00`.
    pub device_utc_offset: String,
    /// Larger payloads are quarantined (first 64 KiB kept).
    pub max_payload_bytes: usize,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            max_future_skew: Duration::from_secs(300),
            max_age: Duration::from_secs(365 * 24 * 3600),
            on_bad_time: BadTimePolicy::Correct,
            device_utc_offset: "+00:00".into(),
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// `[profiles]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    /// Load the profiles built into the binary.
    pub bundled: bool,
    /// More directories of `*.toml` profiles (relative to the config file).
    pub dirs: Vec<PathBuf>,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            bundled: true,
            dirs: Vec::new(),
        }
    }
}

/// `[questionnaires]`: the patient-reported outcome definitions responses
/// are validated and scored by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuestionnairesConfig {
    /// Load the definitions built into the binary (PHQ-2, PHQ-9, GAD-7,
    /// mMRC, the heart-failure check-in and the COPD diary).
    pub bundled: bool,
    /// More directories of FHIR `Questionnaire` JSON files (relative to the
    /// config file): a program's own and licensed instruments.
    pub dirs: Vec<PathBuf>,
}

impl Default for QuestionnairesConfig {
    fn default() -> Self {
        QuestionnairesConfig {
            bundled: true,
            dirs: Vec::new(),
        }
    }
}

impl QuestionnairesConfig {
    /// Loads the definitions; every broken file's error.
    pub fn load(
        &self,
    ) -> Result<device_profiles::questionnaire::QuestionnaireSet, Vec<device_profiles::FileError>>
    {
        let mut set = if self.bundled {
            device_profiles::questionnaire::bundled()
        } else {
            Default::default()
        };
        let mut errors = Vec::new();
        for dir in &self.dirs {
            if let Err(mut e) = set.add_dir(dir) {
                errors.append(&mut e);
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }
}

impl NormalizeConfig {
    /// The configured device-local offset.
    pub fn utc_offset(&self) -> Result<FixedOffset, String> {
        self.device_utc_offset
            .parse::<FixedOffset>()
            .map_err(|_| format!("`{}` is not an offset like +01:00", self.device_utc_offset))
    }

    /// The clock policy for canonicalization.
    pub fn clock_policy(&self) -> ClockPolicy {
        let to = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        ClockPolicy {
            max_future_skew: to(self.max_future_skew),
            max_age: to(self.max_age),
            on_bad_time: self.on_bad_time,
            local_offset: self
                .utc_offset()
                .unwrap_or(ClockPolicy::default().local_offset),
        }
    }
}

/// The checks of `[normalize]`.
pub fn validate(n: &NormalizeConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if let Err(e) = n.utc_offset() {
        err("normalize", "device_utc_offset", e);
    }
    if n.max_payload_bytes == 0 {
        err(
            "normalize",
            "max_payload_bytes",
            "must be greater than 0".into(),
        );
    }
}
