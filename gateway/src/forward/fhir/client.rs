//! One transaction Bundle POSTed to the FHIR server, and its answer
//! classified into what the push does next.
//!
//! A transaction is all or nothing: a 4xx with an OperationOutcome means
//! something in the Bundle is refused (the push bisects to find it); a
//! server that processes the Bundle as a batch instead answers 200 with a
//! status per entry, and the refused entries are named directly. 5xx, 429,
//! timeouts and connection errors are the server being away: retry. 401
//! drops the cached token (it may have expired early) and retries; 403 and
//! 404 are configuration (scopes, base URL), never the data's fault, so
//! nothing is quarantined for them.

use std::time::Duration;

use serde_json::Value;

use super::auth::{Auth, TokenError};
use crate::forward::http::no_answer_kind;

/// What became of a Bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum PostError {
    /// The server refused the Bundle (4xx with an OperationOutcome): some
    /// entry in it is refused. `outcome` is the server's OperationOutcome.
    Rejected {
        /// HTTP status
        status: u16,
        /// the OperationOutcome (or the body wrapped in one)
        outcome: Value,
    },
    /// The server or the token endpoint refuses *us* (token endpoint 4xx):
    /// hold everything, retry every `max_backoff`.
    Refused {
        /// HTTP status
        status: u16,
        /// what the server said (no secret)
        message: String,
    },
    /// Try again later.
    Retry {
        /// metric label: unreachable, timeout, server_error, throttled,
        /// unauthorized, forbidden, not_found, http_<status>
        kind: String,
        /// what happened (may quote data: debug logs only)
        message: String,
    },
}

/// Entries the server refused one by one (a batch-style answer): their
/// index in the Bundle and the OperationOutcome.
pub type EntryRefusals = Vec<(usize, Value)>;

/// The FHIR server.
pub struct FhirClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl FhirClient {
    /// A client for `base` (a FHIR base URL), authenticating with `auth`.
    pub fn new(base: &str, auth: Auth, timeout: Duration) -> Result<FhirClient, String> {
        let tls = crate::tls::client_tls_config(&crate::tls::TlsSettings::default())
            .map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rpm-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(FhirClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// POSTs a transaction Bundle. `Ok` holds the entries refused
    /// individually (empty when the transaction went through whole).
    pub async fn post(&self, bundle: &Value) -> Result<EntryRefusals, PostError> {
        let auth = self.auth.header(&self.http).await.map_err(|e| match e {
            TokenError::Retry { kind, message } => PostError::Retry { kind, message },
            TokenError::Refused { status, message } => PostError::Refused {
                status,
                message: format!("token endpoint: {message}"),
            },
        })?;
        let mut req = self
            .http
            .post(&self.base)
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .body(bundle.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.map_err(|e| PostError::Retry {
            kind: no_answer_kind(&e).into(),
            message: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return Err(PostError::Retry {
                    kind: "unreachable".into(),
                    message: e.without_url().to_string(),
                })
            }
        };
        if status == 401 {
            self.auth.invalidate().await;
        }
        classify(status, &text)
    }
}

/// Status and body of the server's answer to what to do next.
pub fn classify(status: u16, body: &str) -> Result<EntryRefusals, PostError> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let retry = |kind: &str| PostError::Retry {
        kind: kind.into(),
        message: outcome_text(&v).unwrap_or_else(|| body.chars().take(300).collect()),
    };
    match status {
        200..=299 => Ok(refused_entries(&v)),
        401 => Err(retry("unauthorized")),
        403 => Err(retry("forbidden")),
        404 => Err(retry("not_found")),
        408 => Err(retry("timeout")),
        429 => Err(retry("throttled")),
        400..=499 => Err(PostError::Rejected {
            status,
            outcome: if v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
                v
            } else {
                serde_json::json!({"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "processing",
                    "diagnostics": body.chars().take(1000).collect::<String>(),
                }]})
            },
        }),
        500..=599 => Err(retry("server_error")),
        s => Err(retry(&format!("http_{s}"))),
    }
}

/// Entries of a batch-style answer whose status is 4xx.
fn refused_entries(v: &Value) -> EntryRefusals {
    let Some(entries) = v.get("entry").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let resp = e.get("response")?;
            let code: u16 = resp
                .get("status")?
                .as_str()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (400..500).contains(&code).then(|| {
                (
                    i,
                    resp.get("outcome").cloned().unwrap_or_else(|| {
                        serde_json::json!({"resourceType": "OperationOutcome", "issue": [{
                            "severity": "error", "code": "processing",
                            "diagnostics": format!("entry refused with {code}"),
                        }]})
                    }),
                )
            })
        })
        .collect()
}

/// The issues of an OperationOutcome as one line.
pub fn outcome_text(v: &Value) -> Option<String> {
    let issues = v.get("issue")?.as_array()?;
    let parts: Vec<String> = issues
        .iter()
        .map(|i| {
            let text = i
                .get("diagnostics")
                .or_else(|| i.get("details").and_then(|d| d.get("text")))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!(
                "{}: {}",
                i.get("code").and_then(Value::as_str).unwrap_or("?"),
                text
            )
        })
        .collect();
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let oo = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","details":{"text":"bad value"}}]}"#;
        match classify(400, oo) {
            Err(PostError::Rejected { status, outcome }) => {
                assert_eq!(status, 400);
                assert_eq!(outcome_text(&outcome).unwrap(), "invalid: bad value");
            }
            other => panic!("{other:?}"),
        }
        match classify(422, "not json") {
            Err(PostError::Rejected { outcome, .. }) => {
                assert_eq!(outcome["resourceType"], "OperationOutcome")
            }
            other => panic!("{other:?}"),
        }
        for (s, kind) in [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (429, "throttled"),
            (503, "server_error"),
            (302, "http_302"),
        ] {
            match classify(s, "x") {
                Err(PostError::Retry { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{s}: {other:?}"),
            }
        }
        let batch = r#"{"resourceType":"Bundle","type":"batch-response","entry":[
            {"response":{"status":"201"}},
            {"response":{"status":"400 Bad Request","outcome":{"resourceType":"OperationOutcome","issue":[]}}}]}"#;
        let refused = classify(200, batch).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 1);
    }
}
