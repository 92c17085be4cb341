//! The console's credentials: passwords, sessions, CSRF tokens, lock-out.
//!
//! Passwords are Argon2id PHC strings with the crate's defaults (19 MiB,
//! 2 passes, 1 lane: OWASP's recommended minimum); verifying one costs
//! tens of milliseconds, which is the point, so it runs on a blocking
//! thread. A sign-in for a username that does not exist verifies against
//! a fixed dummy hash, so the answer takes as long as for a real one.
//! Sessions and CSRF tokens are 256 random bits; the store keeps only the
//! session's SHA-256, and tokens are compared in constant time. After
//! `lockout_after` failures a username is locked for `lockout_base`,
//! doubled with every further failure up to `lockout_max`: a guesser is
//! slowed to a few tries an hour, while the owner is never locked for good.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Password problems.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password is 12 to 1024 characters")]
    Length,
    /// Argon2 or the system's randomness failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The shortest password accepted (NIST SP 800-63B asks for at least 8;
/// a console that shows health data asks for more).
pub const MIN_PASSWORD: usize = 12;

/// Hashes a new password into an Argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=1024).contains(&n) {
        return Err(PasswordError::Length);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A hash of a password nobody has, verified when the username is
/// unknown so that both answers take the same time.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jm1Zp0n0KxH0SOKy0Ljmx2WQF16yH/Qe0QUiwKx7HSk";

/// Whether `password` matches `phc` (`None`: no such user; verified
/// against a dummy hash, always false).
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    let real = phc.is_some();
    let Ok(parsed) = PasswordHash::new(phc.unwrap_or(DUMMY_HASH)) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// 32 random bytes, hex.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf)?;
    Ok(hex::encode(buf))
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The lock-out policy of `[console]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failures before the first lock.
    pub after: u32,
    /// The first lock.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
}

impl Lockout {
    /// Until when (ms) a username with `failures` failures, the last at
    /// `last_ms`, is locked; `None` when it is not locked at all.
    pub fn locked_until(&self, failures: u32, last_ms: i64) -> Option<i64> {
        if failures < self.after {
            return None;
        }
        let doublings = (failures - self.after).min(30);
        let wait = self.base.saturating_mul(1u32 << doublings).min(self.max);
        Some(last_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// Why a session is no longer valid, if it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request for `idle_timeout`.
    Idle,
    /// Older than `session_lifetime`.
    Lifetime,
}

impl Expiry {
    /// The word the sign-in page explains.
    pub fn reason(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::Lifetime => "expired",
        }
    }
}

/// Whether a session created at `created_ms` and last used at
/// `last_seen_ms` has ended at `now_ms`.
pub fn expired(
    created_ms: i64,
    last_seen_ms: i64,
    now_ms: i64,
    idle: Duration,
    lifetime: Duration,
) -> Option<Expiry> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(last_seen_ms) >= ms(idle) {
        Some(Expiry::Idle)
    } else if now_ms.saturating_sub(created_ms) >= ms(lifetime) {
        Some(Expiry::Lifetime)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_argon2id_and_verify_only_themselves() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("correct horse batterx", Some(&h)));
        assert!(!verify_password("correct horse battery", None));
        assert!(!verify_password("x", Some("not a phc string")));
        assert!(matches!(hash_password("short"), Err(PasswordError::Length)));
        let again = hash_password("correct horse battery").unwrap();
        assert_ne!(h, again, "a fresh salt each time");
    }

    #[test]
    fn the_dummy_hash_parses_so_unknown_users_cost_a_real_verification() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token().unwrap());
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &a[..63]));
        assert!(!same_token(&a, ""));
        let mut b = a.clone().into_bytes();
        b[10] ^= 1;
        assert!(!same_token(&a, &String::from_utf8(b).unwrap()));
    }

    #[test]
    fn lockout_backs_off_exponentially_and_is_never_permanent() {
        let l = Lockout {
            after: 3,
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        assert_eq!(l.locked_until(2, 1_000), None);
        assert_eq!(l.locked_until(3, 1_000), Some(61_000));
        assert_eq!(l.locked_until(4, 1_000), Some(121_000));
        assert_eq!(l.locked_until(5, 1_000), Some(241_000));
        assert_eq!(l.locked_until(60, 1_000), Some(3_601_000), "capped");
        assert_eq!(l.locked_until(u32::MAX, 0), Some(3_600_000));
    }

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let (idle, life) = (Duration::from_secs(900), Duration::from_secs(3600));
        assert_eq!(expired(0, 0, 899_999, idle, life), None);
        assert_eq!(expired(0, 0, 900_000, idle, life), Some(Expiry::Idle));
        assert_eq!(expired(0, 3_000_000, 3_100_000, idle, life), None);
        assert_eq!(
            expired(0, 3_500_000, 3_600_000, idle, life),
            Some(Expiry::Lifetime)
        );
    }
}
