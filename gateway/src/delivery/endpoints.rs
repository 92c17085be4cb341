//! Webhook endpoints and their deliveries in the store: what the CLI and the
//! HTTP API change at run time and what the dispatcher reads.
//!
//! Every function takes a `&Connection` (a `Transaction` derefs to one), so
//! callers choose the transaction. Secrets are sealed with the store key
//! (`store::secrets`: the dispatcher must sign with them, so they cannot be
//! hashed) and are never serialized out of an [`Endpoint`]: it reports only
//! how many are active.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::route::Filter;
use super::signing::Secret;
use super::ssrf;
use crate::store::secrets::{self, SecretsError};
use crate::store::webhooks::{self, EndpointField};
use crate::store::{now_ms, StoreError};

/// Endpoint management failures.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such endpoint.
    #[error("no webhook endpoint `{0}`")]
    NotFound(String),
    /// The id is taken.
    #[error("webhook endpoint `{0}` already exists")]
    Exists(String),
    /// The store key is unusable.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl From<rusqlite::Error> for EndpointError {
    fn from(e: rusqlite::Error) -> Self {
        EndpointError::Store(StoreError::Sqlite(e))
    }
}

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// Stable id (`care-team-north`).
    pub endpoint_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text for operators.
    pub description: String,
    /// Active secrets, newest first (at most two during a rotation). Never serialized.
    #[serde(skip)]
    pub secrets: Vec<String>,
    /// How many secrets are active (2 during a rotation).
    pub active_secrets: usize,
    /// Deliveries are attempted only while enabled.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone`, `by cli`).
    pub disabled_reason: Option<String>,
    /// Which events it receives.
    pub filter: Filter,
    /// May reach loopback, private and link-local addresses (the SSRF
    /// guard is off for it).
    pub allow_private_network: bool,
    /// config | cli | api.
    pub origin: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// The parsed signing keys (invalid stored ones are skipped: they were
    /// validated when written).
    pub fn keys(&self) -> Vec<Secret> {
        self.secrets
            .iter()
            .filter_map(|s| Secret::parse(s).ok())
            .collect()
    }
}

/// A new endpoint.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    /// Id: letters, digits, `-`, `_`, `.`.
    pub endpoint_id: String,
    /// URL (https, or http to loopback unless `allow_http`).
    pub url: String,
    /// Free text.
    pub description: String,
    /// `whsec_` secret; `None` generates one.
    pub secret: Option<String>,
    /// Routing filter.
    pub filter: Filter,
    /// Enabled at once.
    pub enabled: bool,
    /// May reach non-public addresses (see [`ssrf`]).
    pub allow_private_network: bool,
}

/// What URLs a gateway accepts for every endpoint (`[delivery]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlPolicy {
    /// Plain http to non-loopback hosts (`delivery.allow_http`).
    pub allow_http: bool,
    /// Non-public addresses for every endpoint (`delivery.allow_private_network`).
    pub allow_private_network: bool,
}

/// A change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New filter.
    pub filter: Option<Filter>,
    /// Enable or disable (disabling records `disabled_reason`).
    pub enabled: Option<bool>,
    /// Allow or forbid non-public addresses.
    pub allow_private_network: Option<bool>,
}

/// Checks an endpoint id.
pub fn validate_id(id: &str) -> Result<(), EndpointError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EndpointError::Invalid {
            field: "id",
            message: "1 to 64 characters: letters, digits, `-`, `_`, `.`".into(),
        })
    }
}

/// Checks a URL: https, or plain http only to a loopback host unless
/// `allow_http` (alerts carry health data: never in clear over a network).
pub fn validate_url(text: &str, allow_http: bool) -> Result<(), EndpointError> {
    let invalid = |message: String| EndpointError::Invalid {
        field: "url",
        message,
    };
    let u = url::Url::parse(text).map_err(|e| invalid(format!("not a URL: {e}")))?;
    let host = u
        .host_str()
        .ok_or_else(|| invalid("the URL has no host".into()))?;
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_http {
                Ok(())
            } else {
                Err(invalid(
                    "plain http is allowed only to a loopback host; use https (or delivery.allow_http = true)".into(),
                ))
            }
        }
        s => Err(invalid(format!("scheme `{s}` is not http(s)"))),
    }
}

/// The SSRF guard's check of a URL's literal address (names are checked
/// by the caller, which may resolve them, and at every connection), unless
/// `allowed`.
pub fn validate_destination(text: &str, allowed: bool) -> Result<(), EndpointError> {
    if allowed {
        return Ok(());
    }
    let u = url::Url::parse(text).map_err(|e| EndpointError::Invalid {
        field: "url",
        message: format!("not a URL: {e}"),
    })?;
    ssrf::check_literal(&u).map_err(|e| EndpointError::Invalid {
        field: "url",
        message: e.to_string(),
    })
}

fn validate_secret(s: &str) -> Result<(), EndpointError> {
    Secret::parse(s)
        .map(|_| ())
        .map_err(|e| EndpointError::Invalid {
            field: "secret",
            message: e.to_string(),
        })
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn from_row(r: webhooks::EndpointRow) -> Endpoint {
    let secrets: Vec<String> = serde_json::from_str(&r.secrets).unwrap_or_default();
    let filter: Filter = serde_json::from_str(&r.filter).unwrap_or_default();
    Endpoint {
        endpoint_id: r.endpoint_id,
        url: r.url,
        description: r.description,
        active_secrets: secrets.len(),
        secrets,
        enabled: r.enabled,
        disabled_reason: r.disabled_reason,
        filter,
        allow_private_network: r.allow_private_network,
        origin: r.origin,
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}

/// The secrets column for `id`: each secret sealed.
fn sealed(conn: &Connection, id: &str, plain: &[String]) -> Result<String, EndpointError> {
    let out = plain
        .iter()
        .map(|s| secrets::seal(conn, id, s))
        .collect::<Result<Vec<_>, _>>()?;
    json(&out)
}

/// Opens an endpoint's secrets; those that do not open are left out (and
/// logged): the dispatcher then refuses to send unsigned.
fn unseal(conn: &Connection, mut ep: Endpoint) -> Endpoint {
    let stored = std::mem::take(&mut ep.secrets);
    for s in stored {
        match secrets::open(conn, &ep.endpoint_id, &s) {
            Ok(p) => ep.secrets.push(p),
            Err(e) => {
                tracing::error!(endpoint = %ep.endpoint_id, error = %e, "webhook secret unusable")
            }
        }
    }
    ep
}

/// Seals secrets stored in plain text (by a gateway before sealing existed,
/// or written by hand). Returns how many endpoints changed.
pub fn seal_plaintext(conn: &Connection) -> Result<usize, EndpointError> {
    let mut n = 0;
    let raw = webhooks::endpoint_secrets(conn)?;
    for (id, text) in raw {
        let list: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
        if list.iter().all(|s| s.starts_with(secrets::SEALED)) {
            continue;
        }
        let plain = list
            .iter()
            .map(|s| secrets::open(conn, &id, s))
            .collect::<Result<Vec<_>, _>>()?;
        webhooks::set_endpoint_secrets(conn, &id, &sealed(conn, &id, &plain)?, None)?;
        n += 1;
    }
    Ok(n)
}

fn json<T: Serialize>(v: &T) -> Result<String, EndpointError> {
    serde_json::to_string(v).map_err(|e| EndpointError::Store(StoreError::Encode(e.to_string())))
}

/// All endpoints, by id.
pub fn list(conn: &Connection) -> Result<Vec<Endpoint>, EndpointError> {
    Ok(webhooks::endpoints(conn)?
        .into_iter()
        .map(|r| unseal(conn, from_row(r)))
        .collect())
}

/// One endpoint.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Endpoint>, EndpointError> {
    Ok(webhooks::endpoint(conn, id)?.map(|r| unseal(conn, from_row(r))))
}

fn must_get(conn: &Connection, id: &str) -> Result<Endpoint, EndpointError> {
    get(conn, id)?.ok_or_else(|| EndpointError::NotFound(id.to_string()))
}

/// Creates an endpoint. Returns it and its (possibly generated) secret,
/// which the caller shows once.
pub fn create(
    conn: &Connection,
    new: &NewEndpoint,
    origin: &str,
    policy: UrlPolicy,
) -> Result<(Endpoint, String), EndpointError> {
    validate_id(&new.endpoint_id)?;
    validate_url(&new.url, policy.allow_http)?;
    validate_destination(
        &new.url,
        new.allow_private_network || policy.allow_private_network,
    )?;
    new.filter
        .validate()
        .map_err(|message| EndpointError::Invalid {
            field: "filter",
            message,
        })?;
    let secret = new.secret.clone().unwrap_or_else(Secret::generate);
    validate_secret(&secret)?;
    if get(conn, &new.endpoint_id)?.is_some() {
        return Err(EndpointError::Exists(new.endpoint_id.clone()));
    }
    let now = now_ms();
    webhooks::insert_endpoint(
        conn,
        &webhooks::EndpointRow {
            endpoint_id: new.endpoint_id.clone(),
            url: new.url.clone(),
            description: new.description.clone(),
            secrets: sealed(conn, &new.endpoint_id, std::slice::from_ref(&secret))?,
            enabled: new.enabled,
            disabled_reason: (!new.enabled).then_some(format!("disabled at creation by {origin}")),
            filter: json(&new.filter)?,
            origin: origin.to_string(),
            created_at: now,
            updated_at: now,
            allow_private_network: new.allow_private_network,
        },
    )?;
    Ok((must_get(conn, &new.endpoint_id)?, secret))
}

/// Changes url, description, filter or enabled.
pub fn update(
    conn: &Connection,
    id: &str,
    change: &EndpointChange,
    actor: &str,
    policy: UrlPolicy,
) -> Result<Endpoint, EndpointError> {
    let ep = must_get(conn, id)?;
    let now = now_ms();
    let allowed = change
        .allow_private_network
        .unwrap_or(ep.allow_private_network);
    validate_destination(
        change.url.as_deref().unwrap_or(&ep.url),
        allowed || policy.allow_private_network,
    )?;
    if allowed != ep.allow_private_network {
        webhooks::set_endpoint_field(conn, id, EndpointField::AllowPrivateNetwork(allowed), now)?;
    }
    if let Some(url) = &change.url {
        validate_url(url, policy.allow_http)?;
        webhooks::set_endpoint_field(conn, id, EndpointField::Url(url), now)?;
    }
    if let Some(d) = &change.description {
        webhooks::set_endpoint_field(conn, id, EndpointField::Description(d), now)?;
    }
    if let Some(f) = &change.filter {
        f.validate().map_err(|message| EndpointError::Invalid {
            field: "filter",
            message,
        })?;
        webhooks::set_endpoint_field(conn, id, EndpointField::Filter(&json(f)?), now)?;
    }
    if let Some(enabled) = change.enabled {
        set_enabled(conn, id, enabled, &format!("disabled by {actor}"))?;
    }
    must_get(conn, id)
}

/// Enables (clearing the reason) or disables (recording `reason`) an
/// endpoint. Its pending deliveries wait while it is disabled and resume
/// when it is enabled again. Returns whether anything changed.
pub fn set_enabled(
    conn: &Connection,
    id: &str,
    enabled: bool,
    reason: &str,
) -> Result<bool, EndpointError> {
    let ep = must_get(conn, id)?;
    if ep.enabled == enabled {
        return Ok(false);
    }
    webhooks::set_endpoint_enabled(conn, id, enabled, (!enabled).then_some(reason), now_ms())?;
    Ok(true)
}

/// Rotates the secret: the new one (given or generated) becomes the
/// newest and the previous newest stays active, so every delivery carries
/// two signatures until [`retire_secrets`]. Returns the new secret.
pub fn rotate_secret(
    conn: &Connection,
    id: &str,
    new: Option<String>,
) -> Result<String, EndpointError> {
    let ep = must_get(conn, id)?;
    let secret = new.unwrap_or_else(Secret::generate);
    validate_secret(&secret)?;
    let mut secrets = vec![secret.clone()];
    secrets.extend(ep.secrets.into_iter().filter(|s| *s != secret).take(1));
    webhooks::set_endpoint_secrets(conn, id, &sealed(conn, id, &secrets)?, Some(now_ms()))?;
    Ok(secret)
}

/// Ends a rotation: only the newest secret stays active.
pub fn retire_secrets(conn: &Connection, id: &str) -> Result<usize, EndpointError> {
    let ep = must_get(conn, id)?;
    let retired = ep.secrets.len().saturating_sub(1);
    webhooks::set_endpoint_secrets(
        conn,
        id,
        &sealed(conn, id, &ep.secrets[..ep.secrets.len().min(1)])?,
        Some(now_ms()),
    )?;
    Ok(retired)
}

/// Brings a `[[webhooks]]` config entry into the store. Config owns url,
/// description and filter; a config secret that is not active becomes
/// the newest with the previous one kept active (a rotation done by editing
/// the file; a rotation done with the CLI or API is kept). `enabled = false` in config disables; otherwise the run-time
/// state stays (an endpoint disabled by a 410 stays disabled until enabled
/// by hand). An endpoint created at run time with the same id is left alone.
pub fn apply_config(
    conn: &Connection,
    new: &NewEndpoint,
    policy: UrlPolicy,
) -> Result<(), EndpointError> {
    match get(conn, &new.endpoint_id)? {
        None => {
            create(conn, new, "config", policy)?;
        }
        Some(ep) if ep.origin == "config" => {
            update(
                conn,
                &new.endpoint_id,
                &EndpointChange {
                    url: Some(new.url.clone()),
                    description: Some(new.description.clone()),
                    filter: Some(new.filter.clone()),
                    enabled: (!new.enabled).then_some(false),
                    allow_private_network: Some(new.allow_private_network),
                },
                "config",
                policy,
            )?;
            if let Some(s) = &new.secret {
                if !ep.secrets.contains(s) {
                    rotate_secret(conn, &new.endpoint_id, Some(s.clone()))?;
                }
            }
        }
        Some(_) => {}
    }
    Ok(())
}

pub use crate::store::webhooks::{AttemptRecord, DeliveryQuery, DeliveryRecord, Redrive};

/// Deliveries, newest first.
pub fn deliveries(
    conn: &Connection,
    q: &DeliveryQuery<'_>,
) -> Result<Vec<DeliveryRecord>, EndpointError> {
    Ok(webhooks::deliveries(conn, q)?)
}

/// The attempts of one delivery, in order.
pub fn attempts(conn: &Connection, delivery_id: i64) -> Result<Vec<AttemptRecord>, EndpointError> {
    Ok(webhooks::attempts(conn, delivery_id)?)
}

/// Puts dead-lettered (and failed) deliveries back in the queue with a
/// fresh retry round: same event, same `webhook-id`. Returns how many.
pub fn redrive(conn: &Connection, which: Redrive<'_>) -> Result<usize, EndpointError> {
    Ok(webhooks::redrive(conn, which)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn new(id: &str) -> NewEndpoint {
        NewEndpoint {
            endpoint_id: id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            description: "test".into(),
            secret: None,
            filter: Filter::default(),
            enabled: true,
            allow_private_network: true,
        }
    }

    const HTTP: UrlPolicy = UrlPolicy {
        allow_http: true,
        allow_private_network: false,
    };

    #[test]
    fn create_rotate_retire_disable_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let c = store.conn();
        let (ep, secret) = create(c, &new("north"), "cli", UrlPolicy::default()).unwrap();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(ep.active_secrets, 1);
        assert!(!serde_json::to_string(&ep).unwrap().contains("whsec_"));
        assert!(matches!(
            create(c, &new("north"), "cli", UrlPolicy::default()),
            Err(EndpointError::Exists(_))
        ));
        let s2 = rotate_secret(c, "north", None).unwrap();
        let ep = get(c, "north").unwrap().unwrap();
        assert_eq!(ep.secrets, vec![s2.clone(), secret]);
        assert_eq!(ep.keys().len(), 2);
        assert_eq!(retire_secrets(c, "north").unwrap(), 1);
        assert_eq!(get(c, "north").unwrap().unwrap().secrets, vec![s2]);
        assert!(set_enabled(c, "north", false, "410 Gone").unwrap());
        let ep = get(c, "north").unwrap().unwrap();
        assert_eq!(
            (ep.enabled, ep.disabled_reason.as_deref()),
            (false, Some("410 Gone"))
        );
        let ep = update(
            c,
            "north",
            &EndpointChange {
                enabled: Some(true),
                url: Some("https://example.org/h".into()),
                ..Default::default()
            },
            "cli",
            UrlPolicy::default(),
        )
        .unwrap();
        assert!(ep.enabled && ep.disabled_reason.is_none());
        let mut bad = new("x y");
        assert!(matches!(
            create(c, &bad, "cli", UrlPolicy::default()),
            Err(EndpointError::Invalid { field: "id", .. })
        ));
        bad.endpoint_id = "ok".into();
        bad.url = "http://example.org/h".into();
        assert!(matches!(
            create(c, &bad, "cli", UrlPolicy::default()),
            Err(EndpointError::Invalid { field: "url", .. })
        ));
        assert!(create(c, &bad, "cli", HTTP).is_ok());
        bad.endpoint_id = "ok2".into();
        bad.secret = Some("nope".into());
        assert!(matches!(
            create(c, &bad, "cli", HTTP),
            Err(EndpointError::Invalid {
                field: "secret",
                ..
            })
        ));
        assert_eq!(list(c).unwrap().len(), 2);
    }
}
