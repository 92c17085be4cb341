//! `[integrations.NAME]`: a vendor cloud that pushes its devices'
//! measurements to `POST /api/v1/integrations/NAME`.
//!
//! Each integration names the profile its pushes are decoded with, the
//! devices it may push for (a push naming any other device is refused whole)
//! and the authentication the vendor sends: HTTP Basic, an API-key header,
//! or an HMAC-SHA256 signature of the raw body. A vendor cloud cannot carry
//! our bearer tokens, so its credential is configured here, per vendor,
//! rather than as an API token; the secret comes from a file or the
//! environment, is read once at start, and is never logged or shown.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shortest `stale_after` (the watch looks at half of it).
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

/// The default silence after which an integration counts as stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How the vendor authenticates its pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `Authorization: Basic` with `username` and the secret as password.
    Basic,
    /// The secret in a header (`header`, default `x-api-key`).
    ApiKey,
    /// An HMAC of the raw body with the secret, in `header` (hex or base64,
    /// optionally prefixed `sha256=`).
    Hmac,
}

/// The HMAC digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256, what vendors sign webhooks with.
    #[default]
    Sha256,
}

/// One `[integrations.NAME]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Profile its pushes are decoded with (`tenovi`, `telli`, or one of
    /// the program's own).
    pub profile: String,
    /// The devices it may push for; a push naming another is refused (403).
    pub devices: Vec<String>,
    /// How the vendor authenticates.
    pub auth: AuthKind,
    /// User name (`basic`).
    pub username: Option<String>,
    /// Header carrying the key (`api_key`, default `x-api-key`) or the
    /// signature (`hmac`, required).
    pub header: Option<String>,
    /// Digest of `hmac`.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// The password, key or HMAC secret itself (prefer `secret_env` or
    /// `secret_file`: config files get copied around).
    pub secret: Option<String>,
    /// Environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret (relative to the config file).
    pub secret_file: Option<PathBuf>,
    /// No accepted push for this long: the link counts as stale.
    #[serde(with = "humantime_serde", default = "default_stale_after")]
    pub stale_after: Duration,
}

fn default_stale_after() -> Duration {
    DEFAULT_STALE_AFTER
}

impl fmt::Debug for IntegrationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationConfig")
            .field("profile", &self.profile)
            .field("devices", &self.devices.len())
            .field("auth", &self.auth)
            .field("username", &self.username)
            .field("header", &self.header)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("stale_after", &self.stale_after)
            .finish()
    }
}

/// `[integrations]`: by name.
pub type IntegrationsConfig = BTreeMap<String, IntegrationConfig>;

impl IntegrationConfig {
    /// The header the key or signature arrives in (lower case).
    pub fn header_name(&self) -> Option<String> {
        match self.auth {
            AuthKind::Basic => None,
            AuthKind::ApiKey => Some(
                self.header
                    .clone()
                    .unwrap_or_else(|| "x-api-key".into())
                    .to_ascii_lowercase(),
            ),
            AuthKind::Hmac => self.header.as_ref().map(|h| h.to_ascii_lowercase()),
        }
    }

    /// The secret, from the file, the environment or the config (never logged).
    pub fn secret(&self) -> Result<String, String> {
        let s = match (&self.secret, &self.secret_env, &self.secret_file) {
            (Some(s), None, None) => s.clone(),
            (None, Some(var), None) => std::env::var(var)
                .map_err(|_| format!("environment variable `{var}` is not set"))?,
            (None, None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", f.display()))?,
            (None, None, None) => {
                return Err(
                    "an integration needs a secret: secret, secret_env or secret_file".into(),
                )
            }
            _ => return Err("give only one of secret, secret_env, secret_file".into()),
        };
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(s)
    }
}

/// Makes relative secret files relative to the config file's directory.
pub fn resolve_paths(integrations: &mut IntegrationsConfig, base: &Path) {
    for i in integrations.values_mut() {
        if let Some(f) = i.secret_file.as_mut().filter(|f| f.is_relative()) {
            *f = base.join(&*f);
        }
    }
}

/// Validates every integration against the loaded `profiles`.
pub fn validate(
    integrations: &IntegrationsConfig,
    profiles: Option<&device_profiles::ProfileSet>,
    err: &mut dyn FnMut(&str, &str, String),
) {
    for (name, i) in integrations {
        let t = format!("integrations.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            err(
                &t,
                "profile",
                "an integration's name is lower-case letters, digits, `-` and `_` (it is part of its URL)"
                    .into(),
            );
        }
        if let Some(set) = profiles {
            match set.by_name(&i.profile) {
                None => err(&t, "profile", format!("no profile `{}`", i.profile)),
                Some(p) if p.device_id_from != device_profiles::profile::DeviceIdFrom::Payload => {
                    err(
                        &t,
                        "profile",
                        format!(
                            "profile `{}` takes its device id from an MQTT topic; an integration's profile reads it from the payload",
                            i.profile
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        if i.devices.is_empty() || i.devices.iter().any(|d| d.trim().is_empty()) {
            err(
                &t,
                "devices",
                "name the vendor's devices this integration may push for".into(),
            );
        }
        match i.auth {
            AuthKind::Basic if i.username.as_deref().is_none_or(str::is_empty) => {
                err(&t, "username", "auth = \"basic\" needs `username`".into())
            }
            AuthKind::Hmac if i.header.is_none() => err(
                &t,
                "header",
                "auth = \"hmac\" needs the `header` the signature arrives in".into(),
            ),
            AuthKind::Basic if i.header.is_some() => {
                err(&t, "header", "auth = \"basic\" takes no `header`".into())
            }
            _ => {}
        }
        if let Some(h) = &i.header {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                err(&t, "header", "not a valid header name".into());
            }
        }
        if i.auth != AuthKind::Basic && i.username.is_some() {
            err(
                &t,
                "username",
                "`username` applies to auth = \"basic\" only".into(),
            );
        }
        if i.secret.is_none() && i.secret_env.is_none() && i.secret_file.is_none() {
            err(
                &t,
                "secret",
                "an integration needs a secret: secret, secret_env or secret_file".into(),
            );
        } else if [
            i.secret.is_some(),
            i.secret_env.is_some(),
            i.secret_file.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count()
            > 1
        {
            err(
                &t,
                "secret",
                "give only one of secret, secret_env, secret_file".into(),
            );
        }
        if i.stale_after < MIN_STALE_AFTER {
            err(&t, "stale_after", "must be at least 2s".into());
        }
    }
}
