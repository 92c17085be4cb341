//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! Every delivery carries `webhook-id` (the event id, stable across
//! retries), `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`, one per active secret. Two active secrets
//! during a rotation let receivers switch keys without a window in which
//! valid deliveries fail verification.
//!
//! Secrets are `whsec_` + base64 of the key bytes. A [`Secret`] never prints
//! its key (its `Debug` is redacted): secrets are never logged.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Header names.
pub const HEADER_ID: &str = "webhook-id";
/// Header names.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header names.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Default tolerance between a timestamp and the receiver's clock (the spec's 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Secret parsing and verification failures. None of them carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret is not `whsec_` + base64.
    #[error("a webhook secret must be `whsec_` followed by base64 (got something else)")]
    BadSecretFormat,
    /// The key is too short to be safe.
    #[error("a webhook secret must hold 24 to 64 bytes of key (got {0})")]
    BadSecretLength(usize),
    /// A header is missing.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("invalid webhook-timestamp")]
    BadTimestamp,
    /// The timestamp is outside the tolerance (replay or a skewed clock).
    #[error("webhook-timestamp is {0} s away from now, beyond the tolerance")]
    TimestampOutOfTolerance(i64),
    /// No `v1` signature matched any secret.
    #[error("no matching signature")]
    NoMatch,
}

/// A signing key (decoded from `whsec_...`).
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`. The prefix is required so that a secret
    /// pasted from another system is recognised as one.
    pub fn parse(text: &str) -> Result<Secret, SigningError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::BadSecretFormat)?;
        let bytes = B64.decode(b64).map_err(|_| SigningError::BadSecretFormat)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SigningError::BadSecretLength(bytes.len()));
        }
        Ok(Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A new random secret (32 bytes from the system CSPRNG), as text.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        // The system RNG does not fail on Linux; if it ever did, refusing
        // to generate is the only safe answer, so fall back to a second try
        // rather than to a weak source.
        let rng = SystemRandom::new();
        if rng.fill(&mut bytes).is_err() {
            let _ = rng.fill(&mut bytes);
        }
        format!("{SECRET_PREFIX}{}", B64.encode(bytes))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &signed_content(msg_id, timestamp, body));
        format!("v1,{}", B64.encode(tag.as_ref()))
    }

    fn verify_raw(&self, msg_id: &str, timestamp: i64, body: &[u8], sig: &[u8]) -> bool {
        // ring compares in constant time.
        hmac::verify(&self.key, &signed_content(msg_id, timestamp, body), sig).is_ok()
    }
}

fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(msg_id.len() + body.len() + 24);
    m.extend_from_slice(msg_id.as_bytes());
    m.push(b'.');
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// The `webhook-signature` header value: one `v1,` signature per active
/// secret, space-separated, newest first.
pub fn signature_header(secrets: &[Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a delivery as a receiver should: the timestamp within
/// `tolerance_secs` of `now`, then any `v1` signature matching any of
/// `secrets` (constant-time comparison). Deduplication on `webhook-id` is
/// the receiver's job after this succeeds.
pub fn verify(
    secrets: &[Secret],
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    let msg_id = msg_id.ok_or(SigningError::MissingHeader(HEADER_ID))?;
    let ts = timestamp.ok_or(SigningError::MissingHeader(HEADER_TIMESTAMP))?;
    let signature = signature.ok_or(SigningError::MissingHeader(HEADER_SIGNATURE))?;
    let ts: i64 = ts.trim().parse().map_err(|_| SigningError::BadTimestamp)?;
    let skew = now - ts;
    if skew.abs() > tolerance_secs {
        return Err(SigningError::TimestampOutOfTolerance(skew));
    }
    for part in signature.split(' ') {
        let Some(b64) = part.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(b64) else { continue };
        if secrets.iter().any(|s| s.verify_raw(msg_id, ts, body, &sig)) {
            return Ok(());
        }
    }
    Err(SigningError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks reference
    // libraries (also checked against the Python `standardwebhooks` package).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn spec_test_vector() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(MSG_ID, TS, BODY), SIG);
        verify(
            &[s],
            Some(MSG_ID),
            Some("1614265330"),
            Some(SIG),
            BODY,
            TS + 10,
            300,
        )
        .unwrap();
    }

    #[test]
    fn rotation_two_signatures_either_key_verifies() {
        let old = Secret::parse(SECRET).unwrap();
        let new = Secret::parse(&Secret::generate()).unwrap();
        let header = signature_header(&[new.clone(), old.clone()], MSG_ID, TS, BODY);
        assert_eq!(header.split(' ').count(), 2);
        for key in [old, new] {
            verify(
                &[key],
                Some(MSG_ID),
                Some("1614265330"),
                Some(&header),
                BODY,
                TS,
                300,
            )
            .unwrap();
        }
    }

    #[test]
    fn rejects_tampering_replay_and_bad_secrets() {
        let s = Secret::parse(SECRET).unwrap();
        let ts = Some("1614265330");
        let e = verify(
            std::slice::from_ref(&s),
            Some(MSG_ID),
            ts,
            Some(SIG),
            b"{}",
            TS,
            300,
        );
        assert_eq!(e, Err(SigningError::NoMatch));
        let e = verify(
            std::slice::from_ref(&s),
            Some("msg_other"),
            ts,
            Some(SIG),
            BODY,
            TS,
            300,
        );
        assert_eq!(e, Err(SigningError::NoMatch));
        let e = verify(
            std::slice::from_ref(&s),
            Some(MSG_ID),
            ts,
            Some(SIG),
            BODY,
            TS + 301,
            300,
        );
        assert_eq!(e, Err(SigningError::TimestampOutOfTolerance(301)));
        let e = verify(
            std::slice::from_ref(&s),
            Some(MSG_ID),
            ts,
            Some("v2,abc v1,!!"),
            BODY,
            TS,
            300,
        );
        assert_eq!(e, Err(SigningError::NoMatch));
        let e = verify(&[s], Some(MSG_ID), None, Some(SIG), BODY, TS, 300);
        assert_eq!(e, Err(SigningError::MissingHeader(HEADER_TIMESTAMP)));
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SigningError::BadSecretFormat
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SigningError::BadSecretLength(5)
        );
        assert!(format!("{:?}", Secret::parse(SECRET).unwrap()).contains('…'));
        assert!(Secret::parse(&Secret::generate()).is_ok());
    }
}
