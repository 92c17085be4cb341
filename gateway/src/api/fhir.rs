//! FHIR R4 read access: vital-signs Observations.
//!
//! - `GET /fhir/Observation?patient=&code=&date=` → a `searchset` Bundle;
//! - `GET /fhir/Observation/{id}` → one Observation.
//!
//! The mapping of readings to Observations is [`crate::fhir::observation`].
//! Errors are OperationOutcomes (see `super::fhir_errors`).
//!
//! Search parameters: `patient` (`p1` or `Patient/p1`), `code` (comma
//! list, `[http://loinc.org|]code`; a BP component code matches the panel),
//! `date` (repeatable, prefixes `eq ge gt le lt sa eb`, precision year to
//! seconds, UTC), `_count`, `_cursor` (from the `next` link) and
//! `_include=Observation:device` (the page's PhdDevices and the gateway's
//! PhgDevice, `search.mode` `include`). A care-team token's search only
//! ever matches its own patients.
//!
//! A search for one patient also matches the measurements its devices
//! sent a special value for (`absent-<quarantine id>`, `dataAbsentReason`,
//! their time the receipt), merged into measured-time order: the page's
//! cursor is `time.kind.id` (kind 0 a reading's `seq`, 1 a quarantine id),
//! so paging stays exact across both sources.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use device_profiles::metric::METRIC_CODE_SYSTEM;
use device_profiles::Metric;
use serde_json::{json, Value};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page;
use super::problem::{ApiError, Path, Query};
use super::ApiState;
use crate::fhir::observation::{group, is_bp, observation, vital, BP_METRICS, BP_PANEL, LOINC};
use crate::fhir::PhdContext;
use crate::fhir::{instant, urlencode};
use crate::store::queries::{self, ReadingSearch};

/// Content type of FHIR responses.
pub const FHIR_JSON: &str = "application/fhir+json";

/// A FHIR JSON response.
pub struct Fhir(pub Value);

impl IntoResponse for Fhir {
    fn into_response(self) -> Response {
        let mut r = axum::Json(self.0).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        r
    }
}

/// Renders a problem as an OperationOutcome (FHIR clients expect one).
pub fn operation_outcome(status: u16, detail: &str) -> Value {
    let code = match status {
        400 => "invalid",
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 415 => "not-supported",
        409 => "conflict",
        413 => "too-long",
        422 => "processing",
        503 => "transient",
        _ => "exception",
    };
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": detail}]
    })
}

/// Metrics matching one `code` token.
fn metrics_for(token: &str) -> Result<Vec<Metric>, ApiError> {
    if let Some(name) = token.strip_prefix(&format!("{METRIC_CODE_SYSTEM}|")) {
        return match name.parse::<Metric>() {
            Ok(m) if m.loinc().is_empty() => Ok(vec![m]),
            _ => Err(ApiError::BadRequest(format!(
                "code: `{name}` is not a code of {METRIC_CODE_SYSTEM}"
            ))),
        };
    }
    let code = match token.split_once('|') {
        Some((system, code)) if system.is_empty() || system == LOINC => code,
        Some((system, _)) => {
            return Err(ApiError::BadRequest(format!(
                "code: only LOINC ({LOINC}) codes are known, not `{system}`"
            )))
        }
        None => token,
    };
    if code == BP_PANEL {
        return Ok(BP_METRICS.to_vec());
    }
    let found: Vec<Metric> = Metric::ALL
        .into_iter()
        .filter(|m| {
            (!m.loinc().is_empty() && m.loinc() == code)
                || vital(*m).0.iter().any(|(c, _)| *c == code)
        })
        .flat_map(|m| {
            if is_bp(m.name()) {
                BP_METRICS.to_vec()
            } else {
                vec![m]
            }
        })
        .collect();
    if found.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "code: `{code}` is not a LOINC code this gateway records"
        )));
    }
    Ok(found)
}

/// Narrows `[from, before)` by one `date` parameter on the measured time
/// (repeated parameters are ANDed: the window only ever shrinks).
fn date_filter(window: &mut (Option<i64>, Option<i64>), value: &str) -> Result<(), ApiError> {
    let (prefix, v) = match value.get(..2) {
        Some(p) if p.chars().all(|c| c.is_ascii_lowercase()) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let (start, end) = period(v).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "date: `{value}` is not [eq|ge|gt|le|lt|sa|eb]YYYY[-MM[-DD[Thh:mm:ssZ]]]"
        ))
    })?;
    let (from, before) = match prefix {
        "ge" => (Some(start), None),
        "gt" | "sa" => (Some(end), None),
        "lt" | "eb" => (None, Some(start)),
        "le" => (None, Some(end)),
        "eq" => (Some(start), Some(end)),
        other => {
            return Err(ApiError::BadRequest(format!(
                "date: prefix `{other}` is not supported (eq, ge, gt, le, lt, sa, eb)"
            )))
        }
    };
    if let Some(f) = from {
        window.0 = Some(window.0.map_or(f, |w| w.max(f)));
    }
    if let Some(b) = before {
        window.1 = Some(window.1.map_or(b, |w| w.min(b)));
    }
    Ok(())
}

/// The period a FHIR date(Time) value denotes, as [start, end) milliseconds.
fn period(v: &str) -> Option<(i64, i64)> {
    let day = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d);
    let ms = |d: NaiveDate| -> Option<i64> {
        Some(
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
                .timestamp_millis(),
        )
    };
    match v.len() {
        4 => {
            let y: i32 = v.parse().ok()?;
            Some((ms(day(y, 1, 1)?)?, ms(day(y + 1, 1, 1)?)?))
        }
        7 => {
            let y: i32 = v.get(..4)?.parse().ok()?;
            let m: u32 = v.get(5..)?.parse().ok()?;
            let start = day(y, m, 1)?;
            let next = if m == 12 {
                day(y + 1, 1, 1)?
            } else {
                day(y, m + 1, 1)?
            };
            Some((ms(start)?, ms(next)?))
        }
        10 => {
            let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
            Some((ms(d)?, ms(d.succ_opt()?)?))
        }
        _ => {
            let t = DateTime::parse_from_rfc3339(v).ok().or_else(|| {
                DateTime::parse_from_str(&format!("{v}:00"), "%Y-%m-%dT%H:%M%:z:%S").ok()
            })?;
            let t = t.timestamp_millis();
            // Precision to the second (or millisecond when given).
            let width = if v.contains('.') { 1 } else { 1000 };
            Some((t, t + width))
        }
    }
}

/// A search's `patient`/`subject` parameter (`p1` or `Patient/p1`) into
/// `patient`; one patient per search.
pub(super) fn patient_param(
    patient: &mut Option<String>,
    k: &str,
    v: &str,
) -> Result<(), ApiError> {
    let id = v.strip_prefix("Patient/").unwrap_or(v);
    if id.is_empty() || id.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "{k}: `{v}` is not a patient reference"
        )));
    }
    if patient.replace(id.to_string()).is_some() {
        return Err(ApiError::BadRequest(format!("{k}: give one patient")));
    }
    Ok(())
}

/// A search's `_count`, within `api.max_page_size`.
pub(super) fn count_param(v: &str, max: usize) -> Result<usize, ApiError> {
    v.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::BadRequest(format!("_count must be 1 to {max}")))
}

/// Whether `_format=v` asks for the JSON every answer is in.
pub(super) fn json_format(v: &str) -> bool {
    matches!(v, "json" | "application/fhir+json" | "application/json")
}

/// A search Bundle's links: `self` (the query without `_cursor`) and, when
/// there is a next page, `next` (the same query with its `_cursor`).
/// A search's answer: a `searchset` Bundle of `entries`, with its paging
/// `links` (left out when there are none: FHIR allows no empty arrays).
pub(super) fn searchset(links: Vec<Value>, entries: Vec<Value>) -> Value {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(Utc::now()),
        "entry": entries,
    });
    if !links.is_empty() {
        bundle["link"] = Value::Array(links);
    }
    bundle
}

/// A Device in a search's Bundle: `match`ed by the search or `include`d.
pub(super) fn device_entry(base: &str, device: Value, mode: &str) -> Value {
    let id = device["id"].as_str().unwrap_or_default().to_string();
    json!({"fullUrl": format!("{base}/fhir/Device/{id}"), "resource": device, "search": {"mode": mode}})
}

pub(super) fn search_links(
    base: &str,
    resource: &str,
    params: &[(String, String)],
    next_cursor: Option<String>,
) -> Vec<Value> {
    let query: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "_cursor")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let link = |cursor: Option<&str>| {
        let qs = query
            .iter()
            .copied()
            .chain(cursor.map(|c| ("_cursor", c)))
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let sep = if qs.is_empty() { "" } else { "?" };
        format!("{base}/fhir/{resource}{sep}{qs}")
    };
    let mut links = vec![json!({"relation": "self", "url": link(None)})];
    if let Some(c) = next_cursor {
        links.push(json!({"relation": "next", "url": link(Some(&c))}));
    }
    links
}

/// `GET /fhir/Observation`.
pub async fn search(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let mut window = (None, None);
    let mut after = None;
    let mut patient = None;
    let mut count = st.cfg.default_page_size.min(100);
    let mut metrics: Option<Vec<Metric>> = None;
    let mut include_devices = false;
    for (k, v) in &params {
        match k.as_str() {
            "patient" | "subject" => patient_param(&mut patient, k, v)?,
            "code" => {
                let mut set = Vec::new();
                for token in v.split(',') {
                    set.extend(metrics_for(token.trim())?);
                }
                metrics = Some(match metrics {
                    // Repeated `code` parameters are ANDed.
                    Some(prev) => prev.into_iter().filter(|m| set.contains(m)).collect(),
                    None => set,
                });
            }
            "date" => date_filter(&mut window, v)?,
            "_count" => count = count_param(v, st.cfg.max_page_size)?,
            "_cursor" => after = Some(decode_merged(v)?),
            "_format" if json_format(v) => {}
            "_include" if v == "Observation:device" => include_devices = true,
            "_include" => {
                return Err(ApiError::BadRequest(format!(
                    "_include: only Observation:device is supported, not `{v}`"
                )))
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "search parameter `{other}` is not supported (patient, code, date, _count, _include)"
                )))
            }
        }
    }
    let absent_metrics = metrics.clone();
    let search = ReadingSearch {
        patient_id: patient.clone(),
        metrics: metrics.map(|ms| ms.iter().map(|m| m.name().to_string()).collect()),
        from: window.0,
        before: window.1,
        // After an absent measurement: the readings of a later time.
        after: after.map(|(t, kind, id)| (t, if kind == 0 { id } else { i64::MAX })),
        scope_json: p.scope_json(),
        // Room for whole blood-pressure panels around the page's edge.
        limit: count * 4 + 8,
    };
    let fhir_cfg = st.fhir.clone();
    let absent_patient = patient.clone();
    let (rows, ctx, absent) = st
        .db
        .run(move |s| {
            let rows = queries::search_readings(s.conn(), &search)?;
            let ctx = PhdContext::for_readings(s.conn(), &fhir_cfg, &rows)?;
            let absent = match absent_patient {
                // The same scope as the readings: a patient the token
                // may not see has none.
                Some(pid) if p.check_patient(s.conn(), &pid, "Observation").is_ok() => {
                    let window = AbsentWindow {
                        from: window.0,
                        before: window.1,
                        after,
                        metrics: absent_metrics,
                        limit: count + 1,
                    };
                    absent_observations(s.conn(), &fhir_cfg, &pid, &window)?
                }
                _ => Vec::new(),
            };
            Ok((rows, ctx, absent))
        })
        .await?;
    // Both sources in one order: (time, kind, id), kind 0 a reading group
    // (its last reading), 1 an absent measurement.
    let mut items: Vec<Matched> = group(rows)
        .iter()
        .filter_map(|g| {
            let last = g.last()?;
            let key = (last.measured_at.timestamp_millis(), 0, last.seq);
            observation(g, &ctx).map(|(id, o)| (key, id, o))
        })
        .collect();
    items.extend(absent);
    items.sort_by_key(|i| i.0);
    let more = items.len() > count;
    items.truncate(count);
    let base = st.base_url(&headers);
    let next = items
        .last()
        .filter(|_| more)
        .map(|((t, kind, id), _, _)| page::encode_cursor(&format!("{t}.{kind}.{id}")));
    let links = search_links(&base, "Observation", &params, next);
    let mut entries: Vec<Value> = items
        .into_iter()
        .map(|(_, id, o)| {
            json!({"fullUrl": format!("{base}/fhir/Observation/{id}"), "resource": o, "search": {"mode": "match"}})
        })
        .collect();
    if include_devices {
        // The page's devices (those the token sees, being its patients'),
        // and the gateway their Observations name.
        let mut devices = crate::fhir::device::phd_devices(&ctx);
        devices.extend(ctx.gateway.as_ref().map(crate::fhir::device::phg_device));
        entries.extend(
            devices
                .into_iter()
                .map(|d| device_entry(&base, d, "include")),
        );
    }
    Ok((patient.map(AuditPatient), Fhir(searchset(links, entries))))
}

/// A search's `_cursor`: `time.kind.id` (see the module doc), or the
/// readings-only `time.seq` of earlier pages (kind 0).
fn decode_merged(v: &str) -> Result<(i64, i64, i64), ApiError> {
    let key = page::decode_cursor(v)?;
    let parts: Vec<&str> = key.split('.').collect();
    let num = |s: &str| s.parse::<i64>().ok();
    let parsed = match parts.as_slice() {
        [t, seq] => num(t).zip(num(seq)).map(|(t, seq)| (t, 0, seq)),
        [t, k, id] => match (num(t), num(k), num(id)) {
            (Some(t), Some(k @ (0 | 1)), Some(id)) => Some((t, k, id)),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// A search's match: its sort key `(time, kind, id)`, Observation id and
/// Observation.
type Matched = ((i64, i64, i64), String, Value);

/// What a search asks of the absent measurements.
struct AbsentWindow {
    from: Option<i64>,
    before: Option<i64>,
    after: Option<(i64, i64, i64)>,
    metrics: Option<Vec<Metric>>,
    limit: usize,
}

/// The patient's absent measurements in the window, after the cursor, as
/// `((time, 1, quarantine id), id, Observation)`, at most `limit`.
fn absent_observations(
    conn: &rusqlite::Connection,
    fhir_cfg: &crate::fhir::FhirConfig,
    patient: &str,
    w: &AbsentWindow,
) -> Result<Vec<Matched>, ApiError> {
    let cols = queries::QUARANTINE_COLUMNS;
    let (t, kind, id) = w.after.unwrap_or((i64::MIN, 0, 0));
    // A later time, or the same time after a reading or an earlier record.
    let after_id = if kind == 0 { i64::MIN } else { id };
    let mut out = Vec::new();
    let mut last = (t, after_id);
    // Records whose metric the search leaves out are skipped, so read on
    // until `limit` match or none are left.
    loop {
        let rows: Vec<queries::QuarantineRow> = conn
            .prepare_cached(&format!(
                "SELECT {cols} FROM quarantine WHERE reason = 'special_value' \
                 AND device_id IN (SELECT device_id FROM devices WHERE patient_id = ?1) \
                 AND received_at >= ?2 AND received_at < ?3 \
                 AND (received_at > ?4 OR (received_at = ?4 AND id > ?5)) \
                 ORDER BY received_at, id LIMIT ?6"
            ))?
            .query_map(
                rusqlite::params![
                    patient,
                    w.from.unwrap_or(i64::MIN),
                    w.before.unwrap_or(i64::MAX),
                    last.0,
                    last.1,
                    w.limit as i64
                ],
                queries::quarantine_row,
            )?
            .collect::<Result<_, _>>()?;
        let n = rows.len();
        let ctx = PhdContext::load(
            conn,
            fhir_cfg,
            rows.iter().filter_map(|q| q.device_id.as_deref()),
        )?;
        for q in &rows {
            last = (q.received_at.timestamp_millis(), q.id);
            let wanted = crate::fhir::phd::special_value_of(q)
                .is_some_and(|(m, _)| w.metrics.as_ref().is_none_or(|ms| ms.contains(&m)));
            if !wanted {
                continue;
            }
            if let Some((oid, o)) = crate::fhir::phd::absent_observation(q, patient, &ctx) {
                out.push(((last.0, 1, q.id), oid, o));
            }
        }
        if n < w.limit || out.len() >= w.limit {
            out.truncate(w.limit);
            return Ok(out);
        }
    }
}

/// `GET /fhir/Observation/{id}`.
pub async fn read(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(AuditPatient, Fhir), ApiError> {
    p.require_read()?;
    let fhir_cfg = st.fhir.clone();
    if let Some(qid) = id.strip_prefix("absent-") {
        return absent(st, p, qid.to_string(), fhir_cfg).await;
    }
    let coincident = id.starts_with("coin-");
    let (rows, ctx) = st
        .db
        .run(move |s| {
            let rows = if let Some(group_id) = id.strip_prefix("bp-") {
                queries::blood_pressure_group(s.conn(), group_id)?
            } else if let Some(group_id) = id.strip_prefix("coin-") {
                queries::group_readings(s.conn(), group_id)?
            } else {
                queries::single_reading(s.conn(), &id)?
            };
            let first = rows.first().ok_or(ApiError::NotFound("Observation"))?;
            p.check_patient(s.conn(), &first.patient_id, "Observation")?;
            let ctx = PhdContext::for_readings(s.conn(), &fhir_cfg, &rows)?;
            Ok((rows, ctx))
        })
        .await?;
    let patient = rows[0].patient_id.clone();
    let o = if coincident {
        // The coincident time stamp of a measurement whose device clock
        // the gateway corrected.
        crate::fhir::phd::coincident_observation(&rows[0], &ctx).map(|(_, o)| o)
    } else {
        observation(&rows, &ctx).map(|(_, o)| o)
    };
    let o = o.ok_or(ApiError::NotFound("Observation"))?;
    Ok((AuditPatient(patient), Fhir(o)))
}

/// `GET /fhir/Observation/absent-{quarantine id}`: a measurement the
/// device sent a special value for (see [`crate::fhir::phd::absent_observation`]),
/// visible like the readings of the device's patient.
async fn absent(
    st: Arc<ApiState>,
    p: Principal,
    qid: String,
    fhir_cfg: Arc<crate::fhir::FhirConfig>,
) -> Result<(AuditPatient, Fhir), ApiError> {
    let qid: i64 = qid.parse().map_err(|_| ApiError::NotFound("Observation"))?;
    let (patient, o) = st
        .db
        .run(move |s| {
            let (q, _) = queries::quarantine_with_payload(s.conn(), qid)?
                .ok_or(ApiError::NotFound("Observation"))?;
            let device_id = q
                .device_id
                .clone()
                .ok_or(ApiError::NotFound("Observation"))?;
            let patient = s
                .device(&device_id)?
                .and_then(|d| d.patient_id)
                .ok_or(ApiError::NotFound("Observation"))?;
            p.check_patient(s.conn(), &patient, "Observation")?;
            let ctx = PhdContext::load(s.conn(), &fhir_cfg, [device_id.as_str()])?;
            let (_, o) = crate::fhir::phd::absent_observation(&q, &patient, &ctx)
                .ok_or(ApiError::NotFound("Observation"))?;
            Ok((patient, o))
        })
        .await?;
    Ok((AuditPatient(patient), Fhir(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_periods_follow_fhir_precision() {
        let (s, e) = period("2026-01-31").unwrap();
        assert_eq!(e - s, 86_400_000);
        let (s, e) = period("2026-02").unwrap();
        assert_eq!(e - s, 28 * 86_400_000);
        assert!(period("2026-13").is_none());
        assert!(period("2026-01-31T07:42:10Z").is_some());
        assert!(period("yesterday").is_none());
        let mut w = (None, None);
        date_filter(&mut w, "ge2026-01-30").unwrap();
        date_filter(&mut w, "2026-01-31").unwrap();
        let (day, end) = period("2026-01-31").unwrap();
        assert_eq!(w, (Some(day), Some(end)), "the window only shrinks");
        date_filter(&mut w, "lt2026-02-05").unwrap();
        assert_eq!(w, (Some(day), Some(end)));
        assert!(date_filter(&mut w, "ne2026-01-31").is_err());
        assert!(date_filter(&mut w, "ge2026-1-31").is_err());
    }

    #[test]
    fn cursors_name_time_kind_and_id() {
        let c = |k: &str| decode_merged(&page::encode_cursor(k));
        assert_eq!(c("1700.1.42").unwrap(), (1700, 1, 42));
        assert_eq!(c("1700.0.7").unwrap(), (1700, 0, 7));
        assert_eq!(
            c("1700.7").unwrap(),
            (1700, 0, 7),
            "an earlier page's cursor"
        );
        for bad in ["1700.2.1", "1700", "a.b", "1.0.1.1", ""] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_map_to_metrics() {
        assert_eq!(metrics_for(BP_PANEL).unwrap().len(), 3);
        assert_eq!(metrics_for("http://loinc.org|8480-6").unwrap().len(), 3);
        assert!(metrics_for("http://snomed.info/sct|123").is_err());
        assert!(metrics_for("2708-6").unwrap().contains(&Metric::Spo2));
        assert!(metrics_for("0000-0").is_err());
    }
}
