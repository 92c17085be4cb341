//! `[delivery]` and `[[webhooks]]`: the webhook dispatcher's settings and
//! the endpoints declared in the file (more can be added at run time with
//! the CLI or the API; the store keeps them).

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::delivery::endpoints::{
    validate_destination, validate_id, validate_url, NewEndpoint, UrlPolicy,
};
use crate::delivery::retry::Schedule;
use crate::delivery::route::Filter;
use crate::delivery::signing::Secret;
use device_profiles::profile::FileError;

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Run the dispatcher in `rpm-gateway run`.
    pub enabled: bool,
    /// How often the outbox and the due deliveries are polled (events
    /// committed by other processes are seen within this; in-process
    /// producers wake the dispatcher at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// TCP + TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (Standard Webhooks suggests 15–30 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delay after the 1st, 2nd, ... failure; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// ± random fraction applied to each delay.
    pub jitter: f64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a failing delivery is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Longest `Retry-After` honoured (429, 503).
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Attempts in flight per endpoint.
    pub concurrency: usize,
    /// Pending deliveries an endpoint's worker looks at per round (its
    /// bounded queue; the rest wait in the store).
    pub queue: usize,
    /// Consecutive failures that pause an endpoint (circuit breaker).
    pub breaker_threshold: u32,
    /// First pause; doubles while probes fail.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Longest pause.
    #[serde(with = "humantime_serde")]
    pub breaker_max_cooldown: Duration,
    /// Extra CA certificates (PEM) besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Allow plain http to non-loopback hosts (never in production: alerts carry health data).
    pub allow_http: bool,
    /// Lift the SSRF guard for every endpoint: webhooks may then reach
    /// loopback, private and link-local addresses. For tests and demos on
    /// one machine; in production allow single endpoints instead.
    pub allow_private_network: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let s = Schedule::default();
        DeliveryConfig {
            enabled: true,
            poll_interval: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            retry_schedule: s.delays,
            jitter: s.jitter,
            max_attempts: s.max_attempts,
            max_age: s.max_age,
            max_retry_after: s.max_retry_after,
            concurrency: 4,
            queue: 256,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            breaker_max_cooldown: Duration::from_secs(600),
            ca_file: None,
            allow_http: false,
            allow_private_network: false,
        }
    }
}

impl DeliveryConfig {
    /// What URLs endpoints may have.
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_http: self.allow_http,
            allow_private_network: self.allow_private_network,
        }
    }

    /// The retry schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            delays: self.retry_schedule.clone(),
            jitter: self.jitter,
            max_attempts: self.max_attempts,
            max_age: self.max_age,
            max_retry_after: self.max_retry_after,
        }
    }
}

/// `[[webhooks]]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoint id.
    pub id: String,
    /// URL (https; http only to loopback unless `delivery.allow_http`).
    pub url: String,
    /// `whsec_...` (prefer `secret_env` or `secret_file`).
    pub secret: Option<String>,
    /// Environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret.
    pub secret_file: Option<PathBuf>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Routing filter.
    #[serde(default)]
    pub filter: Filter,
    /// `false` disables it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// May reach loopback, private and link-local addresses (the SSRF guard
    /// is lifted for this endpoint).
    #[serde(default)]
    pub allow_private_network: bool,
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let texts: Vec<String> = Vec::deserialize(d)?;
    texts
        .iter()
        .map(|t| humantime::parse_duration(t).map_err(serde::de::Error::custom))
        .collect()
}

/// Secrets are never printed, not even in debug output.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "whsec_…"))
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("description", &self.description)
            .field("filter", &self.filter)
            .field("enabled", &self.enabled)
            .field("allow_private_network", &self.allow_private_network)
            .finish()
    }
}

fn yes() -> bool {
    true
}

impl WebhookConfig {
    /// The secret, from the file, the environment or the config (never logged).
    pub fn secret(&self) -> Result<String, String> {
        match (&self.secret, &self.secret_env, &self.secret_file) {
            (Some(s), None, None) => Ok(s.clone()),
            (None, Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            (None, None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", f.display())),
            (None, None, None) => {
                Err("a webhook needs a signing secret: secret, secret_env or secret_file".into())
            }
            _ => Err("give only one of secret, secret_env, secret_file".into()),
        }
    }

    /// As a store endpoint (with the resolved secret).
    pub fn to_endpoint(&self) -> Result<NewEndpoint, String> {
        Ok(NewEndpoint {
            endpoint_id: self.id.clone(),
            url: self.url.clone(),
            description: self.description.clone(),
            secret: Some(self.secret()?),
            filter: self.filter.clone(),
            enabled: self.enabled,
            allow_private_network: self.allow_private_network,
        })
    }
}

/// Validates `[delivery]` and `[[webhooks]]`; errors name file, line, field.
pub fn validate(
    delivery: &DeliveryConfig,
    webhooks: &[WebhookConfig],
    text: &str,
    file: &Path,
) -> Vec<FileError> {
    let mut errors = Vec::new();
    let mut err = |table: &str, n: usize, key: &str, message: String| {
        let path = match table {
            "webhooks" => format!("webhooks[{n}].{key}"),
            _ => format!("{table}.{key}"),
        };
        errors.push(FileError::located(
            file,
            text,
            &path,
            format!("{table}.{key}"),
            message,
        ));
    };
    let d = delivery;
    if d.retry_schedule.is_empty() {
        err("delivery", 0, "retry_schedule", "must not be empty".into());
    }
    if !(0.0..=1.0).contains(&d.jitter) {
        err("delivery", 0, "jitter", "must be between 0 and 1".into());
    }
    for (key, zero) in [
        ("max_attempts", d.max_attempts == 0),
        ("concurrency", d.concurrency == 0),
        ("queue", d.queue == 0),
        ("breaker_threshold", d.breaker_threshold == 0),
        ("poll_interval", d.poll_interval.is_zero()),
        ("timeout", d.timeout.is_zero()),
        ("connect_timeout", d.connect_timeout.is_zero()),
    ] {
        if zero {
            err("delivery", 0, key, "must be greater than 0".into());
        }
    }
    if let Some(ca) = &d.ca_file {
        if !ca.exists() {
            err(
                "delivery",
                0,
                "ca_file",
                format!("file {} does not exist", ca.display()),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, w) in webhooks.iter().enumerate() {
        if let Err(e) = validate_id(&w.id) {
            err("webhooks", i, "id", e.to_string());
        } else if !seen.insert(w.id.as_str()) {
            err(
                "webhooks",
                i,
                "id",
                format!("webhook `{}` is declared more than once", w.id),
            );
        }
        if let Err(e) = validate_url(&w.url, d.allow_http).and_then(|_| {
            validate_destination(&w.url, w.allow_private_network || d.allow_private_network)
        }) {
            err("webhooks", i, "url", e.to_string());
        }
        match w.secret() {
            Err(m) => err("webhooks", i, "secret", m),
            Ok(s) => {
                if let Err(e) = Secret::parse(&s) {
                    err("webhooks", i, "secret", e.to_string());
                }
            }
        }
        if let Err(m) = w.filter.validate() {
            err("webhooks", i, "filter", m);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn webhooks_are_validated_with_line_and_field() {
        let text = "[delivery]\nmax_attempts = 3\n\n[[webhooks]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/h\"\nallow_private_network = true\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n[webhooks.filter]\ncare_teams = [\"north\"]\n\n[[webhooks]]\nid = \"b\"\nurl = \"http://example.org/h\"\nsecret = \"nope\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert_eq!((e.0[0].line, e.0[0].field.as_str()), (14, "webhooks.url"));
        assert_eq!(
            (e.0[1].line, e.0[1].field.as_str()),
            (15, "webhooks.secret")
        );
        assert!(
            !e.to_string().contains("nope"),
            "secrets are never echoed: {e}"
        );
        let ok = text.split("\n\n[[webhooks]]\nid = \"b\"").next().unwrap();
        let c = Config::from_toml(ok, Path::new("g.toml")).unwrap();
        assert_eq!(c.webhooks[0].filter.care_teams, vec!["north".to_string()]);
        assert!(
            !format!("{c:?}").contains("MfKQ9r8"),
            "secrets never in debug output"
        );
        assert_eq!(c.delivery.max_attempts, 3);
    }
}
