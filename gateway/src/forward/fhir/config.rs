//! `[forward.fhir]`: which FHIR server the care team's records are pushed
//! to, what is pushed, and how the gateway proves who it is.
//!
//! Validated at config load (file, line, field) like `[forward.influxdb]`:
//! a URL the client cannot use, a key file that is not there or an auth
//! section missing its client id must stop `check-config`, not surface as
//! a retry loop at run time. Secrets (the bearer token, the private key)
//! are only ever named here by file or environment variable.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::forward::config::check_url;

/// Environment variable read for a static bearer token when neither
/// `token_env` nor `token_file` is set.
pub const DEFAULT_TOKEN_ENV: &str = "RPM_FHIR_TOKEN";

/// Identifier system of patients when the EHR has not told us its own.
pub const DEFAULT_PATIENT_SYSTEM: &str = "urn:rpm-gateway:patient";

/// What the push sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// Readings as Observations (with their Devices and Patients).
    Readings,
    /// Alerts as Flags.
    Alerts,
    /// Follow-up tasks as Tasks.
    Tasks,
}

/// `[forward.fhir]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FhirPushConfig {
    /// The server's FHIR base, e.g. `https://ehr.example.org/fhir/R4`.
    pub base_url: String,
    /// Observations per transaction Bundle (their Devices and Patients
    /// ride along). Servers bound transactions: Medplum allows 8 entries
    /// when they hold conditional creates.
    pub batch_size: usize,
    /// How often to look for new records when caught up.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Longest wait for one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest wait between retries while the server is away.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// What to push; default all three.
    pub push: Vec<Push>,
    /// Identifier system the EHR knows our patient ids by (its MRN system
    /// when the patient ids are MRNs).
    pub patient_system: String,
    /// How the gateway authenticates.
    pub auth: AuthConfig,
}

impl Default for FhirPushConfig {
    fn default() -> Self {
        FhirPushConfig {
            base_url: String::new(),
            batch_size: 2,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            push: vec![Push::Readings, Push::Alerts, Push::Tasks],
            patient_system: DEFAULT_PATIENT_SYSTEM.into(),
            auth: AuthConfig::None,
        }
    }
}

impl FhirPushConfig {
    /// Whether `what` is pushed.
    pub fn pushes(&self, what: Push) -> bool {
        self.push.contains(&what)
    }
}

/// `[forward.fhir.auth]`, chosen by `kind`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No `Authorization` header (a server on a private network).
    #[default]
    None,
    /// A static bearer token from the environment or a file.
    Bearer {
        /// Environment variable holding the token (default `RPM_FHIR_TOKEN`).
        token_env: Option<String>,
        /// File holding the token.
        token_file: Option<PathBuf>,
    },
    /// SMART Backend Services: `client_credentials` with a JWT client
    /// assertion signed by the gateway's own ES384 key.
    Smart {
        /// The client id the EHR registered for this gateway.
        client_id: String,
        /// The EHR's token endpoint.
        token_url: String,
        /// The gateway's private key (PKCS#8), made by
        /// `rpm-gateway forward fhir-key`; owner-only.
        key_file: PathBuf,
        /// Scopes asked for.
        #[serde(default = "default_scope")]
        scope: String,
    },
}

fn default_scope() -> String {
    "system/Observation.write system/Device.write system/Patient.write system/Flag.write system/Task.write".into()
}

impl AuthConfig {
    /// The static bearer token, from env or file (never logged).
    pub fn bearer_token(
        token_env: Option<&str>,
        token_file: Option<&std::path::Path>,
    ) -> Result<String, String> {
        if let Some(f) = token_file {
            return std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read token file {}: {e}", f.display()));
        }
        let var = token_env.unwrap_or(DEFAULT_TOKEN_ENV);
        std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
    }
}

/// Checks `[forward.fhir]`; `err(table, key, message)` records an error
/// located in the file.
pub fn validate(c: &FhirPushConfig, err: &mut dyn FnMut(&str, &str, String)) {
    let t = "forward.fhir";
    if let Err(e) = check_base(&c.base_url) {
        err(t, "base_url", e);
    }
    if c.batch_size == 0 || c.batch_size > 1000 {
        err(t, "batch_size", "must be between 1 and 1000".into());
    }
    crate::forward::config::check_timing(t, c.timeout, c.flush_interval, c.max_backoff, err);
    if c.push.is_empty() {
        err(
            t,
            "push",
            "name at least one of readings, alerts, tasks".into(),
        );
    }
    if c.patient_system.trim().is_empty() || c.patient_system.contains('|') {
        err(t, "patient_system", "must be a URI without `|`".into());
    }
    let t = "forward.fhir.auth";
    match &c.auth {
        AuthConfig::None => {}
        AuthConfig::Bearer {
            token_env,
            token_file,
        } => {
            if token_env.is_some() && token_file.is_some() {
                err(t, "token_file", "set one of token_env, token_file".into());
            }
            if let Some(p) = token_file {
                if !p.exists() {
                    err(
                        t,
                        "token_file",
                        format!("file {} does not exist", p.display()),
                    );
                }
            }
        }
        AuthConfig::Smart {
            client_id,
            token_url,
            scope,
            ..
        } => {
            if client_id.trim().is_empty() {
                err(t, "client_id", "must not be empty".into());
            }
            if let Err(e) = check_url(token_url) {
                err(t, "token_url", e);
            }
            if scope.trim().is_empty() {
                err(t, "scope", "must not be empty".into());
            }
            // The key file may not exist yet: `rpm-gateway forward fhir-key`
            // makes it, and the push says so at start if it is missing.
        }
    }
}

/// A FHIR base: an http(s) URL with a host, a path, no query.
pub fn check_base(s: &str) -> Result<url::Url, String> {
    check_url(s)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn errors_name_file_line_and_field() {
        let text = "[forward.fhir]\nbase_url = \"ehr:8080\"\nbatch_size = 0\npush = []\n\n[forward.fhir.auth]\nkind = \"smart\"\nclient_id = \"\"\ntoken_url = \"http://ehr/token\"\nkey_file = \"k.pk8\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = e.0.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "forward.fhir.base_url"),
                (3, "forward.fhir.batch_size"),
                (4, "forward.fhir.push"),
                (8, "forward.fhir.auth.client_id"),
            ],
            "{e}"
        );
        let ok = "[forward.fhir]\nbase_url = \"http://127.0.0.1:8103/fhir/R4\"\npush = [\"readings\", \"tasks\"]\n[forward.fhir.auth]\nkind = \"bearer\"\ntoken_env = \"X\"\n";
        let c = Config::from_toml(ok, Path::new("g.toml")).unwrap();
        let f = c.forward.fhir.unwrap();
        assert!(f.pushes(super::Push::Tasks) && !f.pushes(super::Push::Alerts));
        assert!(matches!(f.auth, super::AuthConfig::Bearer { .. }));
        let e = Config::from_toml(
            "[forward.fhir]\nbase_url = \"http://h/fhir\"\n[forward.fhir.auth]\nkind = \"smart\"\nclient = \"x\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `client`"), "{e}");
    }
}
