//! Configuration: one TOML file, parsed into typed structs and validated up
//! front. Every error names the file, the line and the field; all errors are
//! reported at once. Secrets may come from the environment or files and are
//! never printed.
//!
//! Two phases (as ripgrep's low/high args): [`Config::load`] parses and
//! validates without side effects (used by `check-config`); the runtime
//! builds components from the validated config.

mod api;
mod delivery;
mod rules;
mod tls;

use chrono::FixedOffset;
use device_profiles::canonical::BadTimePolicy;
use device_profiles::profile::{line_col, parse_toml, FileError};
use device_profiles::{ClockPolicy, ProfileSet};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::ApiConfig;
pub use delivery::{DeliveryConfig, WebhookConfig};
pub use rules::{PatientEnrolment, RulesClock, RulesConfig};
pub use tls::{client_tls_config, install_crypto_provider, TlsError};
pub(crate) use tls::{read_certs, read_key};

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
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file; created on first start.
    pub path: PathBuf,
    /// Most items in one transaction.
    pub max_batch_items: usize,
    /// Bounded queue of batches waiting for the writer.
    pub queue: usize,
    /// Input without a device time, received again with the same bytes
    /// within this window, is a redelivery, not a new reading.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Key sealing the secrets kept in the store (64 hex digits, owner-only
    /// file). `RPM_STORE_KEY` or the systemd credential `rpm-store-key`
    /// take precedence; without any, `<path>.key` is created next to the store.
    pub key_file: Option<PathBuf>,
    /// Encrypt the whole store (database and WAL) with SQLCipher, under
    /// the store key (see `key_file`). Off by default: a key created next
    /// to the store would protect copies of the file, not a stolen disk;
    /// give the key from elsewhere and turn this on (an existing plain
    /// store: `rpm-gateway store encrypt`). See docs/security-at-rest.md.
    pub encryption: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("rpm-gateway.db"),
            max_batch_items: 4096,
            queue: 4096,
            dedup_window: Duration::from_secs(24 * 3600),
            key_file: None,
            encryption: false,
        }
    }
}

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

/// `[sources.ble]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    /// Off without removing the table.
    pub enabled: bool,
    /// Adapter name (`hci0`); default: the first one BlueZ reports.
    pub adapter: Option<String>,
    /// Also connect to devices advertising these services (16-bit hex like
    /// `"fff0"` or 128-bit), beyond the SIG health services and profiles.
    pub scan_services: Vec<String>,
    /// Directories of BLE device profiles and byte layouts (relative to
    /// the config file), in addition to the bundled ones.
    pub profile_dirs: Vec<PathBuf>,
    /// Address → profile overrides (a device whose advertisement matches
    /// nothing, or matches the wrong profile).
    pub devices: Vec<BleDeviceOverride>,
    /// Most devices connected at once.
    pub max_connections: usize,
    /// First wait before reconnecting to a device that failed.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_backoff: Duration,
    /// Longest wait between attempts (device or adapter).
    #[serde(with = "humantime_serde")]
    pub reconnect_max_backoff: Duration,
    /// Longest time for connect + discovery.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Write the Current Time characteristic on connect where it is writable.
    pub set_device_clock: bool,
    /// A device clock (read from Current Time) off by more than this has
    /// its readings' times corrected, flagged, with the device time kept.
    #[serde(with = "humantime_serde")]
    pub clock_offset_threshold: Duration,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: true,
            adapter: None,
            scan_services: Vec::new(),
            profile_dirs: Vec::new(),
            devices: Vec::new(),
            max_connections: 4,
            reconnect_min_backoff: Duration::from_secs(1),
            reconnect_max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            set_device_clock: true,
            clock_offset_threshold: Duration::from_secs(120),
        }
    }
}

/// `[[sources.ble.devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleDeviceOverride {
    /// Bluetooth address `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Profile name (bundled or from `profile_dirs`); absent = the SIG
    /// characteristics the device offers.
    pub profile: Option<String>,
}

/// `[sources.mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Fixed client id: required for a persistent session.
    pub client_id: Option<String>,
    /// Keep the broker session (and its queued QoS 1 messages) across
    /// restarts. Default true: readings published while the gateway is down
    /// are delivered when it returns.
    pub persistent_session: bool,
    /// Keep-alive interval.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// User name (env `RPM_MQTT_USERNAME` overrides).
    pub username: Option<String>,
    /// Environment variable holding the password (default `RPM_MQTT_PASSWORD`).
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// TLS (rustls); absent = plain TCP.
    pub tls: Option<TlsSettings>,
    /// Largest MQTT message ingested. A larger one is acknowledged and
    /// quarantined as `payload_too_large` with its first 64 KiB (the client
    /// takes any size MQTT allows, so that no message can break the
    /// connection and be sent first again for ever; the broker's
    /// `message_size_limit` bounds the memory one message takes).
    pub max_packet_bytes: usize,
    /// Longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_backoff: Duration,
    /// Acknowledgements queued for the MQTT client, and the MQTT 5 Receive
    /// Maximum (unacknowledged publishes a v5 broker may send at once).
    pub pipeline_depth: usize,
    /// MQTT protocol version: `"3.1.1"` (default) or `"5"`.
    pub protocol: MqttProtocol,
    /// MQTT 5 only: how long the broker keeps the session (and queues
    /// readings) while the gateway is away. Sent as the session expiry
    /// interval; without it a v5 broker drops the session on disconnect.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

impl MqttProtocol {
    /// As written in config.
    pub const fn name(self) -> &'static str {
        match self {
            MqttProtocol::V311 => "3.1.1",
            MqttProtocol::V5 => "5",
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            persistent_session: true,
            keep_alive: Duration::from_secs(30),
            username: None,
            password_env: None,
            password_file: None,
            tls: None,
            max_packet_bytes: 16 * 1024 * 1024,
            reconnect_max_backoff: Duration::from_secs(30),
            pipeline_depth: 4096,
            protocol: MqttProtocol::V311,
            session_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[sources.mqtt.tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of extra CA certificates (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// PEM client private key.
    pub client_key: Option<PathBuf>,
    /// Server name to verify (default: host).
    pub server_name: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// Level filter (`info`, `debug`, or an env-filter directive). At debug,
    /// logs may carry patient and device identifiers.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
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
        if let Some(b) = &mut config.sources.ble {
            b.profile_dirs = b.profile_dirs.iter().map(|d| base.join(d)).collect();
        }
        if config.store.path.is_relative() && file != Path::new("") {
            config.store.path = base.join(&config.store.path);
        }
        if let Some(k) = config.store.key_file.as_mut().filter(|k| k.is_relative()) {
            *k = base.join(&*k);
        }
        for p in [&mut config.api.tls_cert, &mut config.api.tls_key]
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
        if let Some(ca) = config.delivery.ca_file.as_mut() {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        for w in &mut config.webhooks {
            if let Some(f) = w.secret_file.as_mut() {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        let mut errors = config.validate(text, file);
        errors.extend(delivery::validate(
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
            let (line, column) = locate(text, table, key)
                .map(|o| line_col(text, o))
                .unwrap_or((0, 0));
            let field = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            errors.push(FileError {
                file: file.to_path_buf(),
                line,
                column,
                field,
                message,
            });
        };
        if let Err(e) = self.normalize.utc_offset() {
            err("normalize", "device_utc_offset", e);
        }
        if self.normalize.max_payload_bytes == 0 {
            err(
                "normalize",
                "max_payload_bytes",
                "must be greater than 0".into(),
            );
        }
        if self.store.max_batch_items == 0 || self.store.queue == 0 {
            err(
                "store",
                "max_batch_items",
                "batch size and queue must be greater than 0".into(),
            );
        }
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
            let t = "sources.mqtt";
            match m.client_id.as_deref() {
                Some(id) if id.trim().is_empty() => err(t, "client_id", "must not be empty".into()),
                None if m.persistent_session => err(
                    t,
                    "client_id",
                    "a persistent session needs a fixed client id (a random one would silently lose the messages queued while the gateway is down); set client_id or persistent_session = false".into(),
                ),
                _ => {}
            }
            if m.host.trim().is_empty() {
                err(t, "host", "must not be empty".into());
            }
            if m.keep_alive < Duration::from_secs(5) {
                err(t, "keep_alive", "must be at least 5s".into());
            }
            if m.max_packet_bytes < self.normalize.max_payload_bytes {
                err(
                    t,
                    "max_packet_bytes",
                    "must be at least normalize.max_payload_bytes".into(),
                );
            }
            if m.pipeline_depth == 0 {
                err(t, "pipeline_depth", "must be greater than 0".into());
            }
            if m.protocol == MqttProtocol::V5
                && m.persistent_session
                && m.session_expiry < Duration::from_secs(60)
            {
                err(
                    t,
                    "session_expiry",
                    "MQTT 5 with a persistent session needs a session expiry of at least 60s (with 0 the broker drops queued readings the moment the gateway disconnects)".into(),
                );
            }
            if m.session_expiry.as_secs() > u64::from(u32::MAX) {
                err(
                    t,
                    "session_expiry",
                    "must be at most 136 years (u32 seconds)".into(),
                );
            }
            if let Some(tls) = &m.tls {
                if tls.client_cert.is_some() != tls.client_key.is_some() {
                    err(
                        "sources.mqtt.tls",
                        "client_cert",
                        "client_cert and client_key go together".into(),
                    );
                }
                for (key, p) in [
                    ("ca_file", &tls.ca_file),
                    ("client_cert", &tls.client_cert),
                    ("client_key", &tls.client_key),
                ] {
                    if let Some(p) = p {
                        if !p.exists() {
                            err(
                                "sources.mqtt.tls",
                                key,
                                format!("file {} does not exist", p.display()),
                            );
                        }
                    }
                }
            }
            if let Some(p) = &m.password_file {
                if !p.exists() {
                    err(
                        t,
                        "password_file",
                        format!("file {} does not exist", p.display()),
                    );
                }
            }
        }
        crate::forward::config::validate(&self.forward, &self.retention, &mut err);
        if let Some(b) = &self.sources.ble {
            let t = "sources.ble";
            if b.max_connections == 0 {
                err(t, "max_connections", "must be greater than 0".into());
            }
            if b.reconnect_min_backoff.is_zero()
                || b.reconnect_min_backoff > b.reconnect_max_backoff
            {
                err(
                    t,
                    "reconnect_min_backoff",
                    "must be greater than 0 and at most reconnect_max_backoff".into(),
                );
            }
            if b.connect_timeout < Duration::from_secs(1) {
                err(t, "connect_timeout", "must be at least 1s".into());
            }
            if let Some(a) = &b.adapter {
                if !a.starts_with("hci") || a[3..].parse::<u16>().is_err() {
                    err(
                        t,
                        "adapter",
                        format!("`{a}` is not an adapter name like hci0"),
                    );
                }
            }
            for s in &b.scan_services {
                if device_profiles::gatt::device::BleUuid::parse(s).is_none() {
                    err(t, "scan_services", format!("`{s}` is not a UUID"));
                }
            }
            match self.ble_profiles() {
                Ok(set) => {
                    for d in &b.devices {
                        if device_profiles::gatt::device::normalize_address(&d.address).is_none() {
                            err(
                                t,
                                "devices",
                                format!("`{}` is not a Bluetooth address", d.address),
                            );
                        }
                        if let Some(p) = &d.profile {
                            if set.by_name(p).is_none() {
                                err(t, "devices", format!("profile `{p}` is not known"));
                            }
                        }
                    }
                }
                Err(problems) => {
                    for p in problems {
                        err(t, "profile_dirs", p);
                    }
                }
            }
        }
        if self.rules.enabled || !self.patients.is_empty() {
            rules::validate(&self.rules, &self.patients, text, file, &mut errors);
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

impl MqttConfig {
    /// User name and password, from env, file or config (never logged).
    pub fn credentials(&self) -> Result<Option<(String, String)>, String> {
        let user = std::env::var("RPM_MQTT_USERNAME")
            .ok()
            .or_else(|| self.username.clone());
        let Some(user) = user else { return Ok(None) };
        let var = self.password_env.as_deref().unwrap_or("RPM_MQTT_PASSWORD");
        let password = match (std::env::var(var).ok(), &self.password_file) {
            (Some(p), _) => p,
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read password file {}: {e}", f.display()))?,
            (None, None) => String::new(),
        };
        Ok(Some((user, password)))
    }
}

/// Byte offset of `key` inside `[table]` (or at top level when `table` is empty).
fn locate(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    let mut current = String::new();
    let mut table_at = None;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == table && table_at.is_none() {
                table_at = Some(offset);
            }
        } else if current == table {
            let k = t.split('=').next().unwrap_or("").trim();
            if k == key {
                return Some(offset + (line.len() - line.trim_start().len()));
            }
        }
        offset += line.len();
    }
    table_at
}

#[cfg(test)]
mod tests {
    use super::*;

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
