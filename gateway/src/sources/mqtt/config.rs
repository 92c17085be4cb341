//! `[sources.mqtt]`: the broker, the session, credentials and TLS, and the
//! checks on them (file, line and field of each problem at load).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::tls::TlsSettings;

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

/// The checks of `[sources.mqtt]`; `max_payload_bytes` is the normalize
/// step's limit (a message the source takes must fit it).
pub fn validate(m: &MqttConfig, max_payload_bytes: usize, err: &mut dyn FnMut(&str, &str, String)) {
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
    if m.max_packet_bytes < max_payload_bytes {
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
