//! Configuration: one TOML file, parsed into typed structs and validated up
//! front. Every error names the file, the line and the field; all errors are
//! reported at once. Secrets may come from the environment or files and are
//! never printed.
//!
//! Two phases (as ripgrep's low/high args): [`Config::load`] parses and
//! validates without side effects (used by `check-config`); the runtime
//! builds components from the validated config.

use device_profiles::profile::{parse_toml, FileError};
use device_profiles::ProfileSet;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

// Each component owns its section and its checks; the root re-exports
// them so that `Config`'s fields read as one file.
pub use crate::api::config::ApiConfig;
pub use crate::care::config::CareConfig;
pub use crate::delivery::config::{DeliveryConfig, WebhookConfig};
pub use crate::pipeline::config::{NormalizeConfig, ProfilesConfig};
pub use crate::rules::config::{PatientEnrolment, RulesClock, RulesConfig};
pub use crate::sources::ble::config::BleConfig;
pub use crate::sources::mqtt::config::MqttConfig;
pub use crate::store::config::StoreConfig;
pub use crate::telemetry::LogConfig;

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The embedded store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Normalization rules.
    #[serde(default)]
    pub normalize: NormalizeConfig,
    /// Device profiles.
    #[serde(default)]
    pub profiles: ProfilesConfig,
    /// Questionnaire definitions (patient-reported outcomes).
    #[serde(default)]
    pub questionnaires: crate::pipeline::config::QuestionnairesConfig,
    /// Device → patient assignments loaded at start (the registry keeps
    /// run-time changes made with `rpm-gateway devices assign`).
    #[serde(default)]
    pub devices: Vec<DeviceAssignment>,
    /// Input sources.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Alert rules.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Care-plan enrolment applied at start (run-time changes are kept).
    #[serde(default)]
    pub patients: Vec<PatientEnrolment>,
    /// The webhook dispatcher.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Webhook endpoints declared in the file.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Sinks fed from the store (`[forward.influxdb]`); none by default.
    #[serde(default)]
    pub forward: crate::forward::ForwardConfig,
    /// Retention of the store and its disk check.
    #[serde(default)]
    pub retention: crate::forward::RetentionConfig,
    /// The care loop: care teams' calendars, follow-up policy.
    #[serde(default)]
    pub care: CareConfig,
    /// The program hub's watch on the home boxes that push to it.
    #[serde(default)]
    pub upstream_intake: crate::forward::boxes::IntakeConfig,
    /// The web console (served by the API's listener).
    #[serde(default)]
    pub console: crate::console::ConsoleConfig,
    /// Vendor clouds that push to `/api/v1/integrations/NAME`.
    #[serde(default)]
    pub integrations: crate::api::integrations::config::IntegrationsConfig,
    /// The FHIR mapping (the API's `/fhir` and the FHIR push): test data.
    #[serde(default)]
    pub fhir: crate::fhir::FhirConfig,
}

/// `[[devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAssignment {
    /// Device id as the device reports it.
    pub id: String,
    /// Patient id.
    pub patient: String,
}

/// `[sources]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// The MQTT source; absent = off.
    pub mqtt: Option<MqttConfig>,
    /// The Bluetooth LE source; absent = off.
    pub ble: Option<BleConfig>,
}

/// Configuration errors: every one found, each with file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<FileError>);

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![FileError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                field: "(file)".into(),
                message: e.to_string(),
            }])
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text (`file` names it in errors).
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        let mut config: Config = parse_toml(text, file).map_err(|e| ConfigErrors(vec![e]))?;
        let base = file.parent().unwrap_or(Path::new("."));
        if let Some(f) = config.forward.influxdb.as_mut() {
            f.token_file = f.token_file.as_ref().map(|p| base.join(p));
        }
        config.profiles.dirs = config.profiles.dirs.iter().map(|d| base.join(d)).collect();
        config.questionnaires.dirs = config
            .questionnaires
            .dirs
            .iter()
            .map(|d| base.join(d))
            .collect();
        if let Some(b) = &mut config.sources.ble {
            b.profile_dirs = b.profile_dirs.iter().map(|d| base.join(d)).collect();
        }
        if config.store.path.is_relative() && file != Path::new("") {
            config.store.path = base.join(&config.store.path);
        }
        if let Some(k) = config.store.key_file.as_mut().filter(|k| k.is_relative()) {
            *k = base.join(&*k);
        }
        for p in [
            &mut config.api.tls_cert,
            &mut config.api.tls_key,
            &mut config.api.address_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(d) = config.rules.dir.as_mut().filter(|d| d.is_relative()) {
            *d = base.join(&*d);
        }
        if let Some(p) = config.care.policy.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
        if let Some(ca) = config.delivery.ca_file.as_mut() {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        crate::api::integrations::config::resolve_paths(&mut config.integrations, base);
        for w in &mut config.webhooks {
            if let Some(f) = w.secret_file.as_mut() {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        let mut errors = config.validate(text, file);
        errors.extend(crate::delivery::config::validate(
            &config.delivery,
            &config.webhooks,
            text,
            file,
        ));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate(&self, text: &str, file: &Path) -> Vec<FileError> {
        let mut errors = Vec::new();
        let mut err = |table: &str, key: &str, message: String| {
            let field = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            errors.push(FileError::located(
                file,
                text,
                &field,
                field.clone(),
                message,
            ));
        };
        crate::pipeline::config::validate(&self.normalize, &mut err);
        crate::store::config::validate(&self.store, &mut err);

        let mut seen = BTreeSet::new();
        for d in &self.devices {
            if d.id.trim().is_empty() || d.patient.trim().is_empty() {
                err(
                    "devices",
                    "id",
                    "device id and patient must not be empty".into(),
                );
            }
            if !seen.insert(d.id.as_str()) {
                err(
                    "devices",
                    "id",
                    format!("device `{}` is assigned more than once", d.id),
                );
            }
        }
        for (key, message) in self.api.problems() {
            err("api", key, message);
        }
        if let Some(m) = &self.sources.mqtt {
            crate::sources::mqtt::config::validate(m, self.normalize.max_payload_bytes, &mut err);
        }
        crate::forward::config::validate(&self.forward, &self.retention, &mut err);
        crate::forward::boxes::validate(&self.upstream_intake, &mut err);
        crate::care::config::validate(&self.care, &mut err);
        crate::console::config::validate(&self.console, &mut err);
        crate::api::integrations::config::validate(
            &self.integrations,
            self.profile_set().ok().as_ref(),
            &mut err,
        );
        if let Some(b) = &self.sources.ble {
            crate::sources::ble::config::validate(b, self.ble_profiles(), &mut err);
        }
        if let Err(e) = self.questionnaires.load() {
            errors.extend(e);
        }
        if self.rules.enabled || !self.patients.is_empty() {
            crate::rules::config::validate(&self.rules, &self.patients, text, file, &mut errors);
        }
        if self.care.enabled && self.rules.enabled {
            // The follow-up policy file, with its own file and lines.
            if let Err(e) =
                crate::care::Policy::load(self.care.policy.as_deref(), self.rules.dir.as_deref())
            {
                errors.extend(e);
            }
        }
        errors
    }

    /// The BLE device profiles and layouts: bundled, then `profile_dirs`.
    pub fn ble_profiles(
        &self,
    ) -> Result<device_profiles::gatt::device::DeviceProfileSet, Vec<String>> {
        let mut set = device_profiles::gatt::device::DeviceProfileSet::bundled();
        let mut problems = Vec::new();
        if let Some(b) = &self.sources.ble {
            for dir in &b.profile_dirs {
                if let Err(e) = set.add_dir(dir) {
                    problems.extend(e.iter().map(|e| e.to_string()));
                }
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// Loads the configured profiles (bundled ones first).
    pub fn profile_set(&self) -> Result<ProfileSet, ConfigErrors> {
        let mut set = if self.profiles.bundled {
            device_profiles::profile::bundled()
        } else {
            ProfileSet::default()
        };
        let mut errors = Vec::new();
        for dir in &self.profiles.dirs {
            if let Err(mut e) = set.add_dir(dir) {
                errors.append(&mut e);
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program's own questionnaire directory, relative to the config
    /// file: loaded beside the bundled ones, a broken file refused with its
    /// place.
    #[test]
    fn questionnaire_dirs_are_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("questionnaires.d");
        std::fs::create_dir(&qdir).unwrap();
        let mmrc = std::fs::read_to_string(
            device_profiles::questionnaire::bundled_dir().join("mmrc.json"),
        )
        .unwrap();
        let own = mmrc.replace("/Questionnaire/mmrc\"", "/Questionnaire/breathless\"");
        std::fs::write(qdir.join("own.json"), &own).unwrap();
        let file = dir.path().join("gateway.toml");
        let text = "[questionnaires]\ndirs = [\"questionnaires.d\"]\n";
        let c = Config::from_toml(text, &file).unwrap();
        assert_eq!(c.questionnaires.load().unwrap().len(), 7);
        std::fs::write(qdir.join("own.json"), own.replace("\"max\"", "\"median\"")).unwrap();
        let e = Config::from_toml(text, &file).unwrap_err();
        assert!(e.0[0].to_string().contains("own.json:"), "{}", e.0[0]);
        assert!(e.0[0].message.contains("median"), "{}", e.0[0]);
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("", Path::new("gateway.toml")).unwrap();
        assert!(c.sources.mqtt.is_none());
        assert!(c.profile_set().unwrap().len() >= 5);
    }

    #[test]
    fn ble_section_is_validated_up_front() {
        let ok = "[sources.ble]\nadapter = \"hci1\"\n[[sources.ble.devices]]\naddress = \"aa:bb:cc:dd:ee:ff\"\nprofile = \"xiaomi-scale-v1\"\n";
        let c = Config::from_toml(ok, Path::new("g.toml")).unwrap();
        assert_eq!(c.sources.ble.unwrap().max_connections, 4);
        let bad = "[sources.ble]\nmax_connections = 0\nadapter = \"bt0\"\nscan_services = [\"xyz\"]\nreconnect_min_backoff = \"5m\"\n[[sources.ble.devices]]\naddress = \"nope\"\nprofile = \"missing\"\n";
        let e = Config::from_toml(bad, Path::new("g.toml")).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "sources.ble.max_connections",
            "sources.ble.adapter",
            "sources.ble.scan_services",
            "sources.ble.reconnect_min_backoff",
            "sources.ble.devices",
        ] {
            assert!(fields.contains(&f), "{f} missing in {e}");
        }
        assert_eq!(e.0[0].line, 2, "{e}");
        let e = Config::from_toml(
            "[sources.ble]\nprofile_dirs = [\"does-not-exist\"]\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert_eq!(e.0[0].field, "sources.ble.profile_dirs", "{e}");
        let e = Config::from_toml("[sources.ble]\nscan = true\n", Path::new("g.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `scan`"), "{e}");
    }

    #[test]
    fn persistent_session_needs_client_id() {
        let text = "[store]\npath = \"x.db\"\n\n[sources.mqtt]\nhost = \"localhost\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("g.toml:4:1: field `sources.mqtt.client_id`"),
            "{s}"
        );
    }

    #[test]
    fn errors_name_line_and_field_and_all_are_reported() {
        let text = "[normalize]\ndevice_utc_offset = \"CET\"\n[[devices]]\nid = \"a\"\npatient = \"p\"\n[[devices]]\nid = \"a\"\npatient = \"q\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert_eq!(
            (e.0[0].line, e.0[0].field.as_str()),
            (2, "normalize.device_utc_offset")
        );
        let text = "[store]\nmax_batch_items = \"many\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.0[0].line, 2, "{e}");
        assert_eq!(e.0[0].field, "store.max_batch_items");
        let e = Config::from_toml("[stor]\n", Path::new("g.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `stor`"), "{e}");
    }
}
