//! `POST /api/v1/upstream/readings`: the program hub's intake of readings
//! that home boxes send up (`[forward.upstream]` at the box, see
//! `forward::upstream`).
//!
//! A box already decoded, normalized and stored its readings: the hub takes
//! them as canonical readings, as they are, through the shared writer, and
//! answers **only once committed** (a 2xx means durable; the box moves its
//! cursor only then). A re-sent batch (the box crashed before moving its
//! cursor) is harmless: the readings table keeps a reading once by its
//! `reading_id`, and the duplicates are counted in the answer.
//!
//! Only an `ingest` token that names devices may push here — the token the
//! hub issued to that box — and only for those devices: one reading for
//! another device and the whole batch is refused (403, nothing stored).
//! Each reading keeps its `source` and gets the annotation
//! `via = "upstream:<token name>"`, so the hub knows which box sent it. The
//! hub binds a reading to a patient through its own registry, like any
//! ingest: a device the hub does not know is quarantined (`unknown_device`).
//!
//! The same token also pulls the box's share of the hub's registry
//! (`GET /api/v1/upstream/share`, see `store::share`) and pushes the box's
//! quarantine records (`POST /api/v1/upstream/quarantine`, kept once per
//! box and record, re-processed here when the hub assigns the device).
//! Every one of these requests records the box's contact and the health its
//! headers carry (`store::boxes`), which is what `box.silent` is judged by.
//!
//! Bodies are JSON lines (`application/x-ndjson`), gzip-compressed or not;
//! `api.max_body_bytes` bounds the body both as sent and once decompressed
//! (413), so a small compressed bomb is refused after reading that much.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use device_profiles::canonical::{Reading, ReadingGroup};
use device_profiles::{Metric, Panel, Source};
use serde::Serialize;
use std::io::Read;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::problem::{ApiError, Json};
use super::ApiState;
use crate::forward::upstream::{
    UpstreamReading, HEADER_BACKLOG, HEADER_BLE, HEADER_CLOCK, HEADER_VERSION, MEDIA_TYPE,
};
use crate::store::boxes::{self, BoxHealth, Contact};
use crate::store::quarantine::{insert_from_box, QuarantineRecord};
use crate::store::tokens::Role;
use crate::store::{Item, Outcome, RawInput};

/// Annotation naming the box a reading came up from.
pub const VIA_ANNOTATION: &str = "via";

/// The answer: committed, with counts.
#[derive(Debug, Serialize)]
pub struct UpstreamResponse {
    /// Always true: a response is sent only after the commit.
    committed: bool,
    /// Readings in the request.
    received: usize,
    /// Readings newly stored.
    stored: usize,
    /// Readings the hub already had.
    duplicates: usize,
    /// Readings quarantined at the hub (a device it does not know).
    quarantined: usize,
}

/// `POST /api/v1/upstream/readings` (ingest tokens that name devices).
pub async fn push(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Option<AuditPatient>, Json<UpstreamResponse>), ApiError> {
    require_box(&p)?;
    record_contact(&st, &p, &headers, Contact::Push).await?;
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(MEDIA_TYPE)) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: {MEDIA_TYPE}"
        )));
    }
    let text = decode_body(&headers, &body, st.cfg.max_body_bytes)?;
    let via = via(&p);
    let received_at = chrono::Utc::now();
    let mut items = Vec::new();
    for (n, line, wire) in json_lines::<UpstreamReading>(&text, "a reading")? {
        let (reading, panel) =
            canonical(wire, &via).map_err(|e| ApiError::BadRequest(format!("line {n}: {e}")))?;
        let raw = Arc::new(RawInput::new(
            Source::Http,
            &via,
            None,
            line.as_bytes(),
            received_at,
        ));
        items.push(Item::Reading {
            raw,
            index: items.len(),
            group: ReadingGroup {
                group_id: reading.group_id.clone(),
                panel,
                readings: vec![reading],
            },
        });
    }
    // Every reading must be for a device the token names, before anything
    // is stored.
    let foreign = items.iter().any(|i| match i {
        Item::Reading { group, .. } => group
            .readings
            .iter()
            .any(|r| !p.devices.iter().any(|d| d == &r.device_id)),
        Item::Quarantine { .. } | Item::Response { .. } => true,
    });
    if foreign {
        return Err(ApiError::Forbidden);
    }
    let received = items.len();
    let outcomes = if items.is_empty() {
        Vec::new()
    } else {
        let commit = st.writer.submit(items).await?;
        match commit.await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "api: upstream readings not committed; answering 503");
                return Err(ApiError::Unavailable(
                    "not stored; retry the request".into(),
                ));
            }
            Err(_) => return Err(ApiError::Unavailable("the gateway is shutting down".into())),
        }
    };
    let (mut stored, mut duplicates, mut quarantined) = (0, 0, 0);
    let mut patient = None;
    for o in &outcomes {
        match o {
            Outcome::Stored {
                stored: s,
                duplicates: d,
                patient_id,
            } => {
                stored += s;
                duplicates += d;
                patient.get_or_insert_with(|| AuditPatient(patient_id.clone()));
            }
            Outcome::Quarantined { .. } => quarantined += 1,
        }
    }
    st.metrics.stored("upstream", stored);
    if duplicates > 0 {
        st.metrics.duplicates("upstream", duplicates);
    }
    Ok((
        patient,
        Json(UpstreamResponse {
            committed: true,
            received,
            stored,
            duplicates,
            quarantined,
        }),
    ))
}

/// A box's credential: an ingest token limited to its devices.
fn require_box(p: &Principal) -> Result<(), ApiError> {
    if p.role != Role::Ingest || p.devices.is_empty() {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// What the hub marks a box's data with: `upstream:<token name>`.
fn via(p: &Principal) -> String {
    format!("upstream:{}", p.name)
}

/// The health a box's request carries (headers; absent or unreadable ones
/// are left out, never refused: health is advisory).
fn health(headers: &HeaderMap) -> BoxHealth {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v.len() <= 64)
    };
    BoxHealth {
        backlog: text(HEADER_BACKLOG)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|b| *b >= 0),
        clock_ms: text(HEADER_CLOCK)
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.timestamp_millis()),
        ble_state: text(HEADER_BLE).filter(|v| v == "available" || v == "unavailable"),
        version: text(HEADER_VERSION).filter(|v| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c))
        }),
    }
}

/// Records the box's contact and health (and `box.back` if it was silent).
async fn record_contact(
    st: &Arc<ApiState>,
    p: &Principal,
    headers: &HeaderMap,
    kind: Contact,
) -> Result<(), ApiError> {
    let h = health(headers);
    let (name, token) = (p.name.clone(), p.token_id.clone());
    let back = st
        .db
        .run(move |s| {
            let tx = s.transaction()?;
            let back = boxes::record_contact(&tx, &name, &token, kind, &h, crate::store::now_ms())?;
            tx.commit()?;
            Ok(back)
        })
        .await?;
    if back {
        tracing::info!(box_id = %p.name, "home box in contact again: box.back raised");
    }
    Ok(())
}

/// `GET /api/v1/upstream/share` (a box's token): the box's devices, their
/// assignments and patients, with an ETag; `If-None-Match` with the
/// current one is a 304.
pub async fn share(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_box(&p)?;
    record_contact(&st, &p, &headers, Contact::Pull).await?;
    let devices = p.devices.clone();
    let share = st
        .db
        .run(move |s| Ok(crate::store::share::share_for(s.conn(), &devices)?))
        .await?;
    let body = serde_json::to_vec(&share).map_err(|_| ApiError::Internal)?;
    let etag = {
        use sha2::{Digest, Sha256};
        format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32])
    };
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_string()),
        ],
        body,
    )
        .into_response())
}

/// The answer to a quarantine push, once committed.
#[derive(Debug, Serialize)]
pub struct QuarantineResponse {
    committed: bool,
    received: usize,
    /// Records the hub did not have.
    stored: usize,
    /// Records it had already (a batch sent again).
    duplicates: usize,
}

/// `POST /api/v1/upstream/quarantine` (a box's token): the box's quarantine
/// records, JSON lines, gzip or not; kept once per (box, record id), with
/// `via` in their facts. A record for a device the token does not name
/// refuses the whole batch (403).
pub async fn quarantine(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QuarantineResponse>, ApiError> {
    require_box(&p)?;
    record_contact(&st, &p, &headers, Contact::Push).await?;
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    let text = decode_body(&headers, &body, st.cfg.max_body_bytes)?;
    let mut records = Vec::new();
    for (n, _, r) in json_lines::<QuarantineRecord>(&text, "a quarantine record")? {
        if r.source.len() > 32 || r.reason.len() > 64 || r.origin.len() > 1024 {
            return Err(ApiError::BadRequest(format!("line {n}: field too long")));
        }
        records.push(r);
    }
    // A record naming a device must name one of the box's.
    let foreign = records.iter().any(|r| {
        r.device_id
            .as_deref()
            .is_some_and(|d| !p.devices.iter().any(|x| x == d))
    });
    if foreign {
        return Err(ApiError::Forbidden);
    }
    let via = via(&p);
    let received = records.len();
    let stored = st
        .db
        .run(move |s| {
            let tx = s.transaction()?;
            let mut stored = 0;
            for r in &records {
                if insert_from_box(&tx, r, &via)? {
                    stored += 1;
                }
            }
            tx.commit()?;
            Ok(stored)
        })
        .await?;
    Ok(Json(QuarantineResponse {
        committed: true,
        received,
        stored,
        duplicates: received - stored,
    }))
}

/// The non-empty lines of a JSON-lines body, each parsed as `T`, with its
/// line number (from 1) and text. Serde's message may quote a value, so a
/// refusal names the line and column only.
fn json_lines<'a, T: serde::de::DeserializeOwned>(
    text: &'a str,
    what: &str,
) -> Result<Vec<(usize, &'a str, T)>, ApiError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let v = serde_json::from_str(line).map_err(|e| {
                ApiError::BadRequest(format!(
                    "line {}: not {what} (column {})",
                    n + 1,
                    e.column()
                ))
            })?;
            Ok((n + 1, line, v))
        })
        .collect()
}

/// The body as text: gunzipped when `Content-Encoding: gzip`, and never
/// more than `max` bytes once decompressed (413).
fn decode_body(headers: &HeaderMap, body: &[u8], max: usize) -> Result<String, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes = match encoding.as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("gzip body: {e}")))?;
            if out.len() > max {
                return Err(ApiError::TooLarge);
            }
            out
        }
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other}: only gzip is accepted"
            )))
        }
    };
    String::from_utf8(bytes).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

/// The wire form back to a canonical reading, marked as come upstream.
fn canonical(w: UpstreamReading, via: &str) -> Result<(Reading, Option<Panel>), String> {
    let metric: Metric = w
        .metric
        .parse()
        .map_err(|_| format!("unknown metric `{}`", w.metric))?;
    let source: Source = w
        .source
        .parse()
        .map_err(|_| format!("unknown source `{}`", w.source))?;
    let panel = match &w.panel {
        None => None,
        Some(p) => Some(
            serde_json::from_value::<Panel>(serde_json::Value::String(p.clone()))
                .map_err(|_| format!("unknown panel `{p}`"))?,
        ),
    };
    if !w.value.is_finite() {
        return Err("value is not a number".into());
    }
    if w.reading_id.is_empty() || w.device_id.is_empty() {
        return Err("reading_id and device_id must not be empty".into());
    }
    let mut annotations = w.annotations;
    annotations.insert(VIA_ANNOTATION.into(), via.to_string());
    Ok((
        Reading {
            reading_id: w.reading_id,
            group_id: w.group_id,
            patient_id: w.patient_id,
            device_id: w.device_id,
            metric,
            value: w.value,
            unit: w.unit,
            loinc: w.loinc,
            device_measured_at: w.device_measured_at,
            measured_at: w.measured_at,
            received_at: w.received_at,
            source,
            sequence: w.sequence.and_then(|s| u64::try_from(s).ok()),
            annotations,
            content_digest: w.content_digest,
        },
        panel,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_are_bounded_after_decompression() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(decode_body(&h, &gz(b"abc\n"), 1024).unwrap(), "abc\n");
        // A megabyte of zeros compresses to about a kilobyte.
        let bomb = gz(&vec![b'0'; 1 << 20]);
        assert!(bomb.len() < 4096);
        assert!(matches!(
            decode_body(&h, &bomb, 64 * 1024),
            Err(ApiError::TooLarge)
        ));
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(
            decode_body(&h, b"x", 1024),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn health_headers_are_read_and_bad_ones_left_out() {
        let mut h = HeaderMap::new();
        h.insert(HEADER_BACKLOG, "42".parse().unwrap());
        h.insert(HEADER_CLOCK, "2026-12-05T03:00:00.500Z".parse().unwrap());
        h.insert(HEADER_BLE, "available".parse().unwrap());
        h.insert(HEADER_VERSION, "1.2.3".parse().unwrap());
        let got = health(&h);
        assert_eq!(got.backlog, Some(42));
        assert_eq!(got.clock_ms, Some(1_796_439_600_500));
        assert_eq!(got.ble_state.as_deref(), Some("available"));
        assert_eq!(got.version.as_deref(), Some("1.2.3"));
        h.insert(HEADER_BACKLOG, "-1".parse().unwrap());
        h.insert(HEADER_CLOCK, "yesterday".parse().unwrap());
        h.insert(HEADER_BLE, "<script>".parse().unwrap());
        h.insert(HEADER_VERSION, "1 2".parse().unwrap());
        assert_eq!(health(&h), BoxHealth::default());
    }

    #[test]
    fn wire_readings_become_canonical_and_marked() {
        let mut r = crate::forward::line::tests::reading("cuff-1", "p-1", 120.0);
        r.panel = Some("blood_pressure".into());
        let w = UpstreamReading::from(&r);
        let (reading, panel) = canonical(w.clone(), "upstream:box-1").unwrap();
        assert_eq!(panel, Some(Panel::BloodPressure));
        assert_eq!(reading.metric, Metric::Systolic);
        assert_eq!(reading.source, Source::Mqtt);
        assert_eq!(
            reading.annotations.get(VIA_ANNOTATION).map(String::as_str),
            Some("upstream:box-1")
        );
        let mut bad = w;
        bad.metric = "mood".into();
        assert!(canonical(bad, "x").is_err());
    }
}
