//! Checking a vendor's credential as the vendor sends it.
//!
//! Every comparison is constant-time: Basic and API-key secrets are compared
//! as SHA-256 digests with a branch-free fold (equal lengths, no early exit),
//! HMAC signatures with `ring::hmac::verify`. Secrets stay in memory only;
//! `Debug` does not show them.

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

use super::config::{AuthKind, IntegrationConfig};

/// An integration that cannot be started.
#[derive(Debug, thiserror::Error)]
#[error("integrations.{name}: {message}")]
pub struct IntegrationError {
    name: String,
    message: String,
}

/// A configured integration with its secret.
pub struct Integration {
    /// `[integrations.NAME]`.
    pub name: String,
    /// Profile its pushes are decoded with.
    pub profile: String,
    /// Devices it may push for.
    pub devices: Vec<String>,
    /// How the vendor authenticates.
    pub auth: AuthKind,
    username: Option<String>,
    header: Option<String>,
    secret: String,
}

impl fmt::Debug for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Integration {
    /// Reads the secret of `[integrations.name]`.
    pub fn new(name: &str, c: &IntegrationConfig) -> Result<Integration, IntegrationError> {
        let secret = c.secret().map_err(|message| IntegrationError {
            name: name.to_string(),
            message,
        })?;
        Ok(Integration {
            name: name.to_string(),
            profile: c.profile.clone(),
            devices: c.devices.clone(),
            auth: c.auth,
            username: c.username.clone(),
            header: c.header_name(),
            secret,
        })
    }

    /// The audit log's actor for its pushes.
    pub fn actor(&self) -> String {
        format!("integration:{}", self.name)
    }

    /// Whether it may push for `device`.
    pub fn allows(&self, device: &str) -> bool {
        self.devices.iter().any(|d| d == device)
    }

    /// The `WWW-Authenticate` challenge of a 401 (Basic only).
    pub fn challenge(&self) -> Option<String> {
        (self.auth == AuthKind::Basic).then(|| format!("Basic realm=\"{}\"", self.name))
    }

    /// Whether the request carries this integration's credential.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        match self.auth {
            AuthKind::Basic => {
                let Some((user, password)) = basic(headers) else {
                    return false;
                };
                let user_ok = same(
                    user.as_bytes(),
                    self.username.as_deref().unwrap_or("").as_bytes(),
                );
                let password_ok = same(password.as_bytes(), self.secret.as_bytes());
                user_ok & password_ok
            }
            AuthKind::ApiKey => self
                .presented(headers)
                .is_some_and(|k| same(k.trim().as_bytes(), self.secret.as_bytes())),
            AuthKind::Hmac => {
                let Some(sig) = self.presented(headers).and_then(|s| signature(&s)) else {
                    return false;
                };
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret.as_bytes());
                ring::hmac::verify(&key, body, &sig).is_ok()
            }
        }
    }

    fn presented(&self, headers: &HeaderMap) -> Option<String> {
        let h = self.header.as_deref()?;
        headers.get(h)?.to_str().ok().map(str::to_string)
    }
}

/// User and password of `Authorization: Basic`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A signature header's bytes: hex or base64, optionally `sha256=`-prefixed.
fn signature(value: &str) -> Option<Vec<u8>> {
    let v = value.trim();
    let v = v
        .strip_prefix("sha256=")
        .or_else(|| v.strip_prefix("SHA256="))
        .unwrap_or(v);
    if v.len() == 64 {
        if let Ok(b) = hex::decode(v) {
            return Some(b);
        }
    }
    base64::engine::general_purpose::STANDARD.decode(v).ok()
}

/// Constant-time equality of two secrets (of any lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn integration(toml_text: &str) -> Integration {
        let c: IntegrationConfig = toml::from_str(toml_text).unwrap();
        Integration::new("v", &c).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn basic_auth() {
        let i = integration(
            "profile = \"tenovi\"\ndevices = [\"d\"]\nauth = \"basic\"\nusername = \"tenovi\"\nsecret = \"s3cret\"\n",
        );
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = headers(&[("authorization", &format!("Basic {}", b64("tenovi:s3cret")))]);
        assert!(i.verify(&ok, b""));
        for bad in ["tenovi:wrong", "other:s3cret", "tenovi", ""] {
            let h = headers(&[("authorization", &format!("Basic {}", b64(bad)))]);
            assert!(!i.verify(&h, b""), "{bad}");
        }
        assert!(!i.verify(&headers(&[("authorization", "Bearer s3cret")]), b""));
        assert!(!i.verify(&HeaderMap::new(), b""));
        assert_eq!(i.challenge().as_deref(), Some("Basic realm=\"v\""));
        assert!(!format!("{i:?}").contains("s3cret"));
    }

    #[test]
    fn api_key() {
        let i = integration(
            "profile = \"telli\"\ndevices = [\"d\"]\nauth = \"api_key\"\nsecret = \"k-123\"\n",
        );
        assert!(i.verify(&headers(&[("x-api-key", "k-123")]), b""));
        assert!(!i.verify(&headers(&[("x-api-key", "k-124")]), b""));
        assert!(!i.verify(&headers(&[("x-other", "k-123")]), b""));
    }

    #[test]
    fn hmac_sha256_over_the_raw_body() {
        let i = integration(
            "profile = \"telli\"\ndevices = [\"d\"]\nauth = \"hmac\"\nheader = \"X-Signature\"\nsecret = \"whsec\"\n",
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec");
        let body = br#"{"deviceId":"d"}"#;
        let tag = ring::hmac::sign(&key, body);
        let hexed = hex::encode(tag.as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        assert!(i.verify(&headers(&[("x-signature", &hexed)]), body));
        assert!(i.verify(
            &headers(&[("x-signature", &format!("sha256={hexed}"))]),
            body
        ));
        assert!(i.verify(&headers(&[("x-signature", &b64)]), body));
        assert!(!i.verify(
            &headers(&[("x-signature", &hexed)]),
            b"{\"deviceId\":\"e\"}"
        ));
        assert!(!i.verify(&headers(&[("x-signature", "00")]), body));
    }
}
