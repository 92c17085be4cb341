//! Playing a scenario as a cellular vendor cloud: the readings of the
//! scenario's devices leave as that cloud's own pushes (Tenovi's measurement
//! webhook, Telli Health's push) to the gateway's
//! `POST /api/v1/integrations/{name}`, authenticated as the vendor sends it
//! (HTTP Basic, an API-key header, or an HMAC-SHA256 of the body), so that
//! a vendor onboarding and the tests exercise the same path.
//!
//! Tenovi sends blood pressure and pulse as two measurements; the simulator
//! posts them together as a JSON array (the batch form Tenovi allows), with
//! the device-local time and its `timezone_offset` (-5 h) as a Tenovi hub in
//! New York would, and a hub id (`hardware_uuid`) that the gateway must
//! ignore for linking. Telli posts one reading per request with epoch
//! milliseconds as a string. Kinds a vendor does not carry are skipped.

use base64::Engine;
use chrono::{Duration, Utc};
use device_profiles::{Metric, Unit};
use serde_json::{json, Value};
use std::str::FromStr;

use crate::emission::{DeviceKind, Emission, Fault};
use crate::payload::UNKNOWN_DEVICE_PREFIX;

/// A vendor cloud the simulator can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Tenovi measurement webhook.
    Tenovi,
    /// Telli Health push.
    Telli,
}

impl FromStr for Vendor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tenovi" => Ok(Vendor::Tenovi),
            "telli" => Ok(Vendor::Telli),
            other => Err(format!("unknown vendor `{other}` (tenovi or telli)")),
        }
    }
}

/// The UTC offset the simulated Tenovi hubs report (hours).
pub const TENOVI_OFFSET_HOURS: i64 = -5;

/// How the pushes are authenticated.
#[derive(Debug, Clone)]
pub enum VendorAuth {
    /// `Authorization: Basic user:password`.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// The key in a header.
    ApiKey {
        /// Header name.
        header: String,
        /// The key.
        key: String,
    },
    /// HMAC-SHA256 of the body (hex) in a header.
    Hmac {
        /// Header name.
        header: String,
        /// The secret.
        secret: String,
    },
}

impl VendorAuth {
    /// The headers that authenticate `body`.
    pub fn headers(&self, body: &[u8]) -> Vec<(String, String)> {
        match self {
            VendorAuth::Basic { user, password } => vec![(
                "Authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ),
            )],
            VendorAuth::ApiKey { header, key } => vec![(header.clone(), key.clone())],
            VendorAuth::Hmac { header, secret } => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                let tag = ring::hmac::sign(&key, body);
                vec![(
                    header.clone(),
                    format!("sha256={}", hex::encode(tag.as_ref())),
                )]
            }
        }
    }
}

/// Whether `vendor` carries readings of `kind`.
pub fn carries(vendor: Vendor, kind: DeviceKind) -> bool {
    match vendor {
        Vendor::Tenovi => matches!(
            kind,
            DeviceKind::BpCuff
                | DeviceKind::Scale
                | DeviceKind::Glucometer
                | DeviceKind::PulseOximeter
        ),
        Vendor::Telli => matches!(
            kind,
            DeviceKind::BpCuff | DeviceKind::Scale | DeviceKind::Glucometer
        ),
    }
}

fn value(e: &Emission, metric: Metric, want: Unit) -> Option<Value> {
    let (_, v, u) = e.values.iter().find(|(m, _, _)| *m == metric)?;
    let v = match (u, want) {
        (Unit::Kg, Unit::Lb) => v / 0.453_592_37,
        (Unit::MmolPerL, Unit::MgPerDl) => v * 18.016,
        _ => *v,
    };
    Some(match e.fault {
        Some(Fault::NanValue) => Value::String("NaN".into()),
        Some(Fault::Implausible) => json!(v * 100.0),
        _ => json!((v * 10.0).round() / 10.0),
    })
}

fn device_id(e: &Emission) -> String {
    match e.fault {
        Some(Fault::UnknownDevice) => format!("{UNKNOWN_DEVICE_PREFIX}{}", e.device_id),
        _ => e.device_id.clone(),
    }
}

/// The body `vendor` would push for `e` (`None`: a kind it does not carry).
pub fn body(vendor: Vendor, e: &Emission) -> Option<Vec<u8>> {
    if !carries(vendor, e.device) {
        return None;
    }
    let doc = match vendor {
        Vendor::Tenovi => tenovi(e),
        Vendor::Telli => telli(e),
    };
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    Some(match e.fault {
        Some(Fault::Malformed) => String::from_utf8_lossy(&bytes)
            .replace('"', "'")
            .into_bytes(),
        Some(Fault::Truncated) => bytes[..bytes.len() / 2].to_vec(),
        _ => bytes,
    })
}

fn tenovi(e: &Emission) -> Value {
    let local = (e.at + Duration::hours(TENOVI_OFFSET_HOURS))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let one = |metric: &str, v1: Option<Value>, v2: Option<Value>| {
        json!({
            "metric": metric,
            "device_name": "Tenovi (simulated)",
            "hwi_device_id": device_id(e),
            "patient_id": "",
            "hardware_uuid": format!("sim-hub-{}", e.device_id.len()),
            "sensor_code": "SIM",
            "value_1": v1,
            "value_2": v2,
            "created": Utc::now().to_rfc3339(),
            "timestamp": local,
            "timezone_offset": TENOVI_OFFSET_HOURS,
            "estimated_timestamp": false,
        })
    };
    match e.device {
        DeviceKind::BpCuff => {
            let bp = one(
                "blood_pressure",
                value(e, Metric::Systolic, Unit::MmHg),
                value(e, Metric::Diastolic, Unit::MmHg),
            );
            match value(e, Metric::PulseRate, Unit::PerMin) {
                Some(p) => json!([bp, one("pulse", Some(p), None)]),
                None => bp,
            }
        }
        DeviceKind::Scale => one("weight", value(e, Metric::BodyWeight, Unit::Lb), None),
        DeviceKind::Glucometer => one(
            "glucose",
            value(e, Metric::BloodGlucose, Unit::MgPerDl),
            None,
        ),
        _ => one(
            "spO2",
            value(e, Metric::Spo2, Unit::Percent),
            value(e, Metric::OximetryPulseRate, Unit::PerMin),
        ),
    }
}

fn telli(e: &Emission) -> Value {
    let (kind, data) = match e.device {
        DeviceKind::BpCuff => (
            "blood_pressure",
            json!({
                "systolic": value(e, Metric::Systolic, Unit::MmHg),
                "diastolic": value(e, Metric::Diastolic, Unit::MmHg),
                "pulse": value(e, Metric::PulseRate, Unit::PerMin),
                "arrhythmia": i32::from(e.annotations.get("irregular_pulse").is_some_and(|v| v == "true")),
            }),
        ),
        DeviceKind::Scale => (
            "weight",
            json!({"weight": value(e, Metric::BodyWeight, Unit::Lb), "unit": "lbs"}),
        ),
        _ => (
            "blood_glucose",
            json!({"glucose": value(e, Metric::BloodGlucose, Unit::MgPerDl), "unit": "mg/dL"}),
        ),
    };
    json!({
        "deviceId": device_id(e),
        "readingType": kind,
        "time": e.at.timestamp_millis().to_string(),
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cuff() -> Emission {
        Emission {
            at: "2026-01-31T12:42:10Z".parse().unwrap(),
            patient_id: "p".into(),
            device_id: "cuff-1".into(),
            device: DeviceKind::BpCuff,
            values: vec![
                (Metric::Systolic, 132.0, Unit::MmHg),
                (Metric::Diastolic, 84.0, Unit::MmHg),
                (Metric::PulseRate, 71.0, Unit::PerMin),
            ],
            annotations: BTreeMap::new(),
            sequence: None,
            fault: None,
        }
    }

    /// What the simulator sends decodes with the gateway's bundled profiles
    /// to the values and time it meant.
    #[test]
    fn pushes_decode_with_the_bundled_profiles() {
        let set = device_profiles::profile::bundled();
        let tenovi: Vec<Value> =
            serde_json::from_slice(&body(Vendor::Tenovi, &cuff()).unwrap()).unwrap();
        assert_eq!(tenovi.len(), 2);
        assert_eq!(tenovi[0]["timestamp"], "2026-01-31T07:42:10");
        let m = set
            .by_name("tenovi")
            .unwrap()
            .decode("vendor/tenovi/http", tenovi[0].to_string().as_bytes())
            .unwrap();
        let r = m.measurements[0].as_ref().unwrap();
        assert_eq!(r.time, Some(device_profiles::DeviceTime::Utc(cuff().at)));
        assert_eq!(r.components.len(), 2);
        let telli = body(Vendor::Telli, &cuff()).unwrap();
        let m = set
            .by_name("telli")
            .unwrap()
            .decode("vendor/telli/http", &telli)
            .unwrap();
        let r = m.measurements[0].as_ref().unwrap();
        assert_eq!(r.components.len(), 3);
        assert_eq!(m.device_id.as_deref(), Some("cuff-1"));
    }

    #[test]
    fn auth_headers() {
        let h = VendorAuth::Basic {
            user: "tenovi".into(),
            password: "pw".into(),
        }
        .headers(b"");
        assert_eq!(h[0].1, "Basic dGVub3ZpOnB3");
        let h = VendorAuth::Hmac {
            header: "x-sig".into(),
            secret: "s".into(),
        }
        .headers(b"{}");
        assert!(h[0].1.starts_with("sha256=") && h[0].1.len() == 71);
    }
}
