//! Every vector of `shared/vectors.json` (copied to `tests/data/gatt_vectors.json`
//! so that CI does not depend on `../shared`) must decode to exactly the
//! expected values, and every GATT value must re-encode to the same bytes.
//!
//! Each checker walks *all* keys of a vector's `expected` object and fails on
//! a key it does not know, so a vector can never be silently half-checked.

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use device_profiles::decoded::{DeviceTime, RawValue, SpecialValue};
use device_profiles::gatt::bpm::PulseRateRange;
use device_profiles::gatt::heart_rate::SensorContact;
use device_profiles::gatt::layout::Layout;
use device_profiles::gatt::racp::{OpCode, Operand, Operator, RacpRequest};
use device_profiles::gatt::{self, Decoded, Float, Racp, ResponseCode, Sfloat};
use device_profiles::metric::Metric;

const VECTORS: &str = include_str!("data/gatt_vectors.json");
const XIAOMI_V1: &str = include_str!("../profiles/ble/xiaomi-scale-v1.toml");
const XIAOMI_V2: &str = include_str!("../profiles/ble/xiaomi-scale-v2.toml");

type Expected = Map<String, Value>;

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// "0x15", "0x0012", "0x0020 (measurement ongoing)" → the number.
fn hex_prefix(v: &Value) -> u64 {
    let token = text(v).split_whitespace().next().unwrap_or_default();
    u64::from_str_radix(token.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// "1 capillary whole blood", "unknown(0)" → the leading or bracketed integer.
fn int_in(v: &Value) -> i64 {
    if let Some(n) = v.as_i64() {
        return n;
    }
    let s = text(v);
    let digits: String = s
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// "2024-06-23T14:35:10 (device local, no TZ)" → the wall time.
fn wall_time(v: &Value) -> NaiveDateTime {
    let s = text(v);
    NaiveDateTime::parse_from_str(s.get(..19).unwrap_or(s), "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn special(s: &str) -> SpecialValue {
    if s.starts_with("NaN") {
        SpecialValue::NaN
    } else if s.starts_with("NRes") {
        SpecialValue::NRes
    } else if s.starts_with("+INF") {
        SpecialValue::PositiveInfinity
    } else if s.starts_with("-INF") {
        SpecialValue::NegativeInfinity
    } else if s.starts_with("Reserved") {
        SpecialValue::Reserved
    } else {
        panic!("not a special value: {s}")
    }
}

/// A number compares exactly; a string names the special value.
fn check_sfloat(actual: Sfloat, e: &Value, what: &str) {
    match e {
        Value::String(s) => assert_eq!(actual.special(), Some(special(s)), "{what}"),
        _ => assert_eq!(actual.to_f64(), Some(num(e)), "{what}"),
    }
}

fn check_opt_sfloat(actual: Option<Sfloat>, e: &Value, what: &str) {
    match (actual, e) {
        (None, Value::Null) => {}
        (Some(a), _) => check_sfloat(a, e, what),
        (None, _) => panic!("{what}: absent, expected {e}"),
    }
}

fn check_time(actual: Option<gatt::DateTime>, e: &Value, what: &str) {
    match e {
        Value::Null => assert_eq!(actual, None, "{what}"),
        _ => assert_eq!(
            actual.and_then(|t| t.to_naive()),
            Some(wall_time(e)),
            "{what}"
        ),
    }
}

fn unknown(key: &str, ch: &str) -> ! {
    panic!("{ch}: expected key `{key}` is not checked by this test; add it")
}

fn bool_of(v: &Value) -> bool {
    v.as_bool()
        .unwrap_or_else(|| panic!("expected a bool, got {v}"))
}

fn check_bpm(bytes: &[u8], exp: &Expected) {
    let m = gatt::BloodPressureMeasurement::decode(bytes).expect("decode 0x2A35");
    let d = m.to_measurements();
    assert_eq!(d.len(), 1);
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "unit" => {
                assert_eq!(m.unit.ucum(), text(e));
                assert!(d[0]
                    .components
                    .iter()
                    .take(3)
                    .all(|c| c.unit.as_deref() == Some(text(e))));
            }
            "systolic" => check_sfloat(m.systolic, e, k),
            "diastolic" => check_sfloat(m.diastolic, e, k),
            "mean_arterial_pressure" => check_sfloat(m.mean_arterial_pressure, e, k),
            "timestamp" => check_time(m.timestamp, e, k),
            "pulse_rate_bpm" => check_opt_sfloat(m.pulse_rate, e, k),
            "user_id" => assert_eq!(m.user_id.map(i64::from), e.as_i64(), "{k}"),
            "measurement_status" => {
                let s = m.status.expect("status present");
                let status = e.as_object().expect("object");
                for (sk, se) in status {
                    match sk.as_str() {
                        "raw" => assert_eq!(u64::from(s.0), hex_prefix(se)),
                        "all_false" => assert_eq!(s.0 == 0, bool_of(se)),
                        "body_movement" => assert_eq!(s.body_movement(), bool_of(se)),
                        "cuff_too_loose" => assert_eq!(s.cuff_too_loose(), bool_of(se)),
                        "irregular_pulse" => assert_eq!(s.irregular_pulse(), bool_of(se)),
                        "improper_position" => assert_eq!(s.improper_position(), bool_of(se)),
                        "pulse_rate_range" => {
                            let want = match int_in(se) {
                                0 => PulseRateRange::WithinRange,
                                1 => PulseRateRange::AboveUpperLimit,
                                2 => PulseRateRange::BelowLowerLimit,
                                _ => PulseRateRange::Reserved,
                            };
                            assert_eq!(s.pulse_rate_range(), want);
                            assert!(
                                text(se).starts_with(&want.name()[..5]),
                                "{se} vs {}",
                                want.name()
                            );
                            assert_eq!(d[0].annotations["pulse_rate_range"], want.name());
                        }
                        other => unknown(other, "0x2A35 status"),
                    }
                }
            }
            other => unknown(other, "0x2A35"),
        }
    }
    // NaNs stay special in the shared model: never 2047.
    for c in &d[0].components {
        if let RawValue::Number(n) = c.value {
            assert!(n < 2047.0, "{c:?}");
        }
    }
}

fn check_icp(bytes: &[u8], exp: &Expected) {
    let m = gatt::IntermediateCuffPressure::decode(bytes).expect("decode 0x2A36");
    assert!(gatt::decode_characteristic(0x2A36, bytes)
        .map(|d| d.to_measurements().is_empty())
        .unwrap_or(false));
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(bytes[0]), hex_prefix(e)),
            "unit" => assert_eq!(m.unit.ucum(), text(e)),
            "current_cuff_pressure" => check_sfloat(m.current_cuff_pressure, e, k),
            "pulse_rate_bpm" => check_opt_sfloat(m.pulse_rate, e, k),
            "measurement_status_raw" => {
                assert_eq!(m.status.map(|s| u64::from(s.0)), Some(hex_prefix(e)))
            }
            other => unknown(other, "0x2A36"),
        }
    }
}

fn check_weight(bytes: &[u8], exp: &Expected) {
    let m = gatt::WeightMeasurement::decode(bytes).expect("decode 0x2A9D");
    let d = &m.to_measurements()[0];
    let component = |metric: Metric| {
        d.components
            .iter()
            .find(|c| c.metric == metric)
            .map(|c| (c.value, c.unit.clone()))
    };
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(bytes[0]), hex_prefix(e)),
            "unit" => assert_eq!(m.system.mass_unit(), text(e)),
            "weight" => {
                assert_eq!(m.weight(), Some(num(e)));
                assert_eq!(
                    component(Metric::BodyWeight),
                    Some((RawValue::Number(num(e)), Some(m.system.mass_unit().into())))
                );
            }
            "raw_weight" => assert_eq!(f64::from(m.weight_raw), num(e)),
            "resolution" => assert_eq!(m.system.mass(1), num(e)),
            "user_id" => assert_eq!(m.user_id.map(i64::from), e.as_i64()),
            "bmi" => {
                assert_eq!(m.bmi(), Some(num(e)));
                assert_eq!(
                    component(Metric::Bmi),
                    Some((RawValue::Number(num(e)), Some("kg/m2".into())))
                );
            }
            "height_m" => {
                assert_eq!(m.height(), Some(num(e)));
                assert_eq!(
                    component(Metric::BodyHeight),
                    Some((RawValue::Number(num(e)), Some("m".into())))
                );
            }
            other => unknown(other, "0x2A9D"),
        }
    }
}

fn check_body_composition(bytes: &[u8], exp: &Expected) {
    let m = gatt::BodyCompositionMeasurement::decode(bytes).expect("decode 0x2A9C");
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "body_fat_percent" => {
                assert_eq!(m.body_fat_percent(), Some(num(e)));
                let d = &m.to_measurements()[0];
                assert_eq!(d.components[0].metric, Metric::BodyFat);
                assert_eq!(d.components[0].value, RawValue::Number(num(e)));
            }
            "muscle_percent" => assert_eq!(
                m.muscle_percent_raw.map(|r| f64::from(r) / 10.0),
                Some(num(e))
            ),
            "muscle_mass_kg" => {
                assert_eq!(m.muscle_mass_raw.map(|r| m.system.mass(r)), Some(num(e)))
            }
            other => unknown(other, "0x2A9C"),
        }
    }
}

fn check_glucose(bytes: &[u8], exp: &Expected) {
    let m = gatt::GlucoseMeasurement::decode(bytes).expect("decode 0x2A18");
    let d = &m.to_measurements()[0];
    let c = m.concentration.expect("concentration");
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "sequence_number" => {
                assert_eq!(i64::from(m.sequence_number), int_in(e));
                assert_eq!(d.sequence, Some(int_in(e) as u64));
            }
            "base_time" => check_time(Some(m.base_time), e, k),
            "time_offset_min" => {
                assert_eq!(m.time_offset_minutes.map(i64::from), Some(int_in(e)));
                let t = wall_time(&Value::String(text(&exp["base_time"]).into()))
                    + chrono::Duration::minutes(int_in(e));
                assert_eq!(d.time, Some(DeviceTime::Local(t)));
            }
            "concentration_kg_per_L" => check_sfloat(c.value, e, k),
            "concentration_mg_dL" => {
                assert_eq!(d.components[0].value, RawValue::Number(num(e)));
                assert_eq!(d.components[0].unit.as_deref(), Some("mg/dL"));
            }
            "type" => assert_eq!(i64::from(c.sample_type.nibble()), int_in(e)),
            "sample_location" => assert_eq!(i64::from(c.sample_location.nibble()), int_in(e)),
            other => unknown(other, "0x2A18"),
        }
    }
    assert_eq!(d.not_clinical, None);
}

fn check_temperature(bytes: &[u8], exp: &Expected) {
    let m = gatt::TemperatureMeasurement::decode(bytes).expect("decode 0x2A1C");
    let d = &m.to_measurements()[0];
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "unit" => assert_eq!(d.components[0].unit.as_deref(), Some(text(e))),
            "temperature" => {
                assert_eq!(m.value.to_f64(), Some(num(e)));
                assert_eq!(d.components[0].value, RawValue::Number(num(e)));
            }
            "float_raw" => {
                assert_eq!(u64::from(m.value.raw()), hex_prefix(e));
                let dec = m.value.decimal().expect("number");
                assert!(
                    text(e).contains(&format!(
                        "mantissa {}, exponent {}",
                        dec.mantissa, dec.exponent
                    )),
                    "{e}"
                );
            }
            "timestamp" => check_time(m.timestamp, e, k),
            "temperature_type" => {
                assert_eq!(m.temperature_type.map(i64::from), Some(int_in(e)));
                let name = text(e).split_once(' ').map(|(_, n)| n).unwrap_or_default();
                assert_eq!(d.annotations["site"], name);
            }
            other => unknown(other, "0x2A1C"),
        }
    }
}

fn check_heart_rate(bytes: &[u8], exp: &Expected) {
    let m = gatt::HeartRateMeasurement::decode(bytes).expect("decode 0x2A37");
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "heart_rate_bpm" => {
                assert_eq!(i64::from(m.heart_rate), int_in(e));
                assert_eq!(
                    m.to_measurements()[0].components[0].value,
                    RawValue::Number(num(e))
                );
            }
            "sensor_contact" => {
                let want = match text(e) {
                    "not supported" => {
                        [SensorContact::NotSupported, SensorContact::NotSupportedAlt]
                            .contains(&m.sensor_contact)
                    }
                    "not detected" => m.sensor_contact == SensorContact::NotDetected,
                    "detected" => m.sensor_contact == SensorContact::Detected,
                    other => panic!("sensor contact {other}"),
                };
                assert!(want, "{:?} vs {e}", m.sensor_contact);
            }
            "energy_expended_kJ" => assert_eq!(m.energy_expended_kj.map(i64::from), e.as_i64()),
            "rr_intervals" => {
                assert!(e.is_null());
                assert!(m.rr_intervals.is_empty());
            }
            "rr_intervals_raw_1_1024s" => {
                let want: Vec<i64> = e.as_array().expect("array").iter().map(int_in).collect();
                let got: Vec<i64> = m.rr_intervals.iter().map(|&r| i64::from(r)).collect();
                assert_eq!(got, want);
            }
            "rr_intervals_ms" => {
                let want: Vec<f64> = e.as_array().expect("array").iter().map(num).collect();
                let got: Vec<f64> = m
                    .rr_intervals_ms()
                    .iter()
                    .map(|ms| (ms * 10.0).round() / 10.0)
                    .collect();
                assert_eq!(got, want, "rounded to the vector's 0.1 ms");
            }
            other => unknown(other, "0x2A37"),
        }
    }
}

fn check_date_time(bytes: &[u8], exp: &Expected) {
    let t = gatt::DateTime::decode(bytes).expect("decode 0x2A08");
    for (k, e) in exp {
        let got = match k.as_str() {
            "year" => i64::from(t.year),
            "month" => i64::from(t.month),
            "day" => i64::from(t.day),
            "hours" => i64::from(t.hours),
            "minutes" => i64::from(t.minutes),
            "seconds" => i64::from(t.seconds),
            other => unknown(other, "0x2A08"),
        };
        assert_eq!(got, int_in(e), "{k}");
    }
    if t.year == 0 || t.month == 0 || t.day == 0 {
        assert_eq!(t.to_device_time(), None, "unknown date → no time");
    }
}

fn check_current_time(bytes: &[u8], exp: &Expected) {
    let t = gatt::CurrentTime::decode(bytes).expect("decode 0x2A2B");
    for (k, e) in exp {
        match k.as_str() {
            "date_time" => check_time(Some(t.date_time), e, k),
            "day_of_week" => {
                assert_eq!(i64::from(t.day_of_week), int_in(e));
                let name = format!("{:?}", t.weekday().expect("known"));
                assert!(text(e).contains(&name), "{e} vs {name}");
            }
            "fractions256" => assert_eq!(i64::from(t.fractions256), int_in(e)),
            "adjust_reason" => assert_eq!(u64::from(t.adjust_reason), hex_prefix(e)),
            other => unknown(other, "0x2A2B"),
        }
    }
}

fn check_racp(bytes: &[u8], exp: &Expected) {
    let r = Racp::decode(bytes).expect("decode 0x2A52");
    for (k, e) in exp {
        match k.as_str() {
            "direction" => {
                let request = matches!(r, Racp::Request(_));
                assert_eq!(request, text(e).starts_with("write"), "{e}");
            }
            "op_code" => {
                let code = match &r {
                    Racp::Request(req) => req.op_code.code(),
                    Racp::NumberOfRecords(_) => 5,
                    Racp::Response { .. } => 6,
                };
                assert_eq!(i64::from(code), int_in(e));
            }
            "operator" => {
                let Racp::Request(req) = &r else {
                    panic!("operator on a response")
                };
                assert_eq!(i64::from(req.operator.code()), int_in(e));
            }
            "filter_type" => {
                let Racp::Request(RacpRequest {
                    operand: Operand::Sequence(_),
                    ..
                }) = &r
                else {
                    panic!("expected a sequence-number filter")
                };
                assert_eq!(int_in(e), 1);
            }
            "operand_uint16" => {
                let Racp::Request(RacpRequest {
                    operand: Operand::Sequence(s),
                    ..
                }) = &r
                else {
                    panic!("expected a sequence-number operand")
                };
                assert_eq!(i64::from(*s), int_in(e));
            }
            "request_op_code" => {
                let Racp::Response {
                    request_op_code, ..
                } = &r
                else {
                    panic!("not a response")
                };
                assert_eq!(i64::from(*request_op_code), int_in(e));
            }
            "response_code" => {
                let Racp::Response { code, .. } = &r else {
                    panic!("not a response")
                };
                assert_eq!(i64::from(code.code()), int_in(e));
                if int_in(e) == 6 {
                    assert_eq!(*code, ResponseCode::NoRecordsFound);
                    assert!(
                        code.is_complete(),
                        "no records found completes the transfer"
                    );
                }
            }
            "number_of_records" => assert_eq!(r, Racp::NumberOfRecords(int_in(e) as u16)),
            other => unknown(other, "0x2A52"),
        }
    }
    // The request builders produce exactly these vectors.
    match &r {
        Racp::Request(RacpRequest {
            op_code: OpCode::ReportStoredRecords,
            operator: Operator::AllRecords,
            ..
        }) => {
            assert_eq!(Racp::report_all().encode(), bytes)
        }
        Racp::Request(RacpRequest {
            operand: Operand::Sequence(s),
            ..
        }) => {
            assert_eq!(
                Racp::report_newer_than(s - 1)
                    .map(|r| r.encode())
                    .as_deref(),
                Some(bytes)
            )
        }
        _ => {}
    }
}

fn check_plx_status(
    ms: Option<gatt::plx::PlxMeasurementStatus>,
    ds: Option<gatt::plx::PlxDeviceSensorStatus>,
    key: &str,
    e: &Value,
) {
    match key {
        "measurement_status" | "device_and_sensor_status" => {
            let (raw, names) = if key == "measurement_status" {
                let s = ms.expect("measurement status");
                (u64::from(s.0), s.names(u16::MAX))
            } else {
                let s = ds.expect("device status");
                (u64::from(s.0), s.names(u32::MAX))
            };
            for (sk, se) in e.as_object().expect("object") {
                if sk == "raw" {
                    assert_eq!(raw, hex_prefix(se));
                } else {
                    assert_eq!(
                        names.contains(&sk.as_str()),
                        bool_of(se),
                        "{sk} in {names:?}"
                    );
                }
            }
        }
        "measurement_status_raw" => assert_eq!(ms.map(|s| u64::from(s.0)), Some(hex_prefix(e))),
        "device_and_sensor_status_raw" => {
            assert_eq!(ds.map(|s| u64::from(s.0)), Some(hex_prefix(e)))
        }
        other => unknown(other, "PLX"),
    }
}

fn check_plx_spot(bytes: &[u8], exp: &Expected) {
    let m = gatt::PlxSpotCheck::decode(bytes).expect("decode 0x2A5E");
    let d = &m.to_measurements()[0];
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "spo2_percent" => {
                check_sfloat(m.reading.spo2, e, k);
                assert_eq!(
                    (d.components[0].metric, d.components[0].value),
                    (Metric::Spo2, RawValue::Number(num(e)))
                );
            }
            "pulse_rate_bpm" => {
                check_sfloat(m.reading.pulse_rate, e, k);
                assert_eq!(d.components[1].metric, Metric::OximetryPulseRate);
            }
            "timestamp" => check_time(m.timestamp, e, k),
            "pulse_amplitude_index_percent" => check_opt_sfloat(m.pulse_amplitude_index, e, k),
            other => check_plx_status(m.measurement_status, m.device_sensor_status, other, e),
        }
    }
    // Questionable measurement (bit 14) and device bits 1 and 5 → not clinical.
    assert!(d.not_clinical.is_some());
}

fn check_plx_continuous(bytes: &[u8], exp: &Expected) {
    let m = gatt::PlxContinuous::decode(bytes).expect("decode 0x2A5F");
    for (k, e) in exp {
        match k.as_str() {
            "flags" => assert_eq!(u64::from(m.flags()), hex_prefix(e)),
            "spo2_percent" => check_sfloat(m.normal.spo2, e, k),
            "pulse_rate_bpm" => check_sfloat(m.normal.pulse_rate, e, k),
            "pulse_amplitude_index_percent" => check_opt_sfloat(m.pulse_amplitude_index, e, k),
            other => check_plx_status(m.measurement_status, m.device_sensor_status, other, e),
        }
    }
    assert_eq!(m.to_measurements()[0].not_clinical, None);
}

fn check_sfloat_vector(bytes: &[u8], exp: &Expected) {
    let v = Sfloat::from_le_bytes(bytes.try_into().expect("2 bytes"));
    for (k, e) in exp {
        match k.as_str() {
            "value" | "value_ieee11073" => check_sfloat(v, e, k),
            "value_bluetooth_sig_python_claims" => {
                assert_ne!(v.to_f64(), Some(num(e)), "biased-exponent bug")
            }
            "exponent" => assert_eq!(v.decimal().map(|d| i64::from(d.exponent)), e.as_i64()),
            "exponent_nibble" => {
                let want: i64 = text(e)
                    .rsplit(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("signed exponent");
                assert_eq!(v.decimal().map(|d| i64::from(d.exponent)), Some(want));
            }
            "mantissa" => assert_eq!(v.decimal().map(|d| i64::from(d.mantissa)), e.as_i64()),
            other => unknown(other, "SFLOAT"),
        }
    }
    if let Some(s) = v.special() {
        assert_eq!(v.to_raw_value(), RawValue::Special(s));
    }
}

fn check_float_vector(bytes: &[u8], exp: &Expected) {
    let v = Float::from_le_bytes(bytes.try_into().expect("4 bytes"));
    for (k, e) in exp {
        match k.as_str() {
            "value" => match e {
                Value::String(s) => assert_eq!(v.special(), Some(special(s))),
                _ => assert_eq!(v.to_f64(), Some(num(e))),
            },
            "raw" => assert_eq!(u64::from(v.raw()), hex_prefix(e)),
            other => unknown(other, "FLOAT"),
        }
    }
    assert_eq!(v.to_f64(), None, "every FLOAT vector is a special value");
}

fn check_advert(ch: &str, bytes: &[u8], exp: &Expected) {
    let layout = Layout::from_toml_str(if ch.contains("0x181D") {
        XIAOMI_V1
    } else {
        XIAOMI_V2
    })
    .expect("layout");
    let m = layout.decode(bytes).expect("decode advert");
    let weight = m
        .components
        .iter()
        .find(|c| c.metric == Metric::BodyWeight)
        .expect("weight");
    for (k, e) in exp {
        match k.as_str() {
            "weight_kg" => {
                assert_eq!(weight.value, RawValue::Number(num(e)));
                assert_eq!(weight.unit.as_deref(), Some("kg"));
            }
            "raw_weight" => {
                let off = if ch.contains("0x181D") { 1 } else { 11 };
                assert_eq!(
                    f64::from(u16::from_le_bytes([bytes[off], bytes[off + 1]])),
                    num(e)
                );
            }
            "timestamp" => assert_eq!(m.time, Some(DeviceTime::Local(wall_time(e)))),
            "stabilized" => assert!(bool_of(e), "decoded, so the stabilized condition held"),
            "impedance_ohm" => assert_eq!(m.annotations["impedance_ohm"], num(e).to_string()),
            "control" => assert_eq!(u64::from(bytes[0]), hex_prefix(e)),
            "control_bytes" => {
                let parts: Vec<u64> = text(e)
                    .split_whitespace()
                    .map(|p| hex_prefix(&Value::String(p.into())))
                    .collect();
                assert_eq!(parts, [u64::from(bytes[0]), u64::from(bytes[1])]);
            }
            other => unknown(other, ch),
        }
    }
}

#[test]
fn every_vector_decodes_to_the_expected_values() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).expect("vector file is JSON");
    assert_eq!(vectors.len(), 33, "vector file changed: review this test");
    let mut checked = 0;
    for v in &vectors {
        let ch = text(&v["characteristic"]);
        let bytes = hex::decode(text(&v["hex"])).expect("hex");
        let exp = v["expected"].as_object().expect("expected object");
        assert!(
            !text(&v["source"]).is_empty(),
            "{ch}: every vector keeps its source"
        );
        match ch {
            "0x2A35" => check_bpm(&bytes, exp),
            "0x2A36" => check_icp(&bytes, exp),
            "0x2A9D" => check_weight(&bytes, exp),
            "0x2A9C" => check_body_composition(&bytes, exp),
            "0x2A18" => check_glucose(&bytes, exp),
            "0x2A1C" => check_temperature(&bytes, exp),
            "0x2A37" => check_heart_rate(&bytes, exp),
            "0x2A08" => check_date_time(&bytes, exp),
            "0x2A2B" => check_current_time(&bytes, exp),
            "0x2A52" => check_racp(&bytes, exp),
            "0x2A5E" => check_plx_spot(&bytes, exp),
            "0x2A5F" => check_plx_continuous(&bytes, exp),
            "SFLOAT" => check_sfloat_vector(&bytes, exp),
            "FLOAT" => check_float_vector(&bytes, exp),
            c if c.starts_with("advert:") => check_advert(c, &bytes, exp),
            other => panic!("no checker for vector characteristic {other}"),
        }
        // Every GATT value re-encodes to the very same bytes.
        if let Some(uuid) = ch
            .strip_prefix("0x")
            .and_then(|h| u16::from_str_radix(h, 16).ok())
        {
            let decoded: Decoded =
                gatt::decode_characteristic(uuid, &bytes).expect("dispatcher decodes");
            assert_eq!(
                decoded.encode(),
                bytes,
                "{ch} {} re-encodes byte for byte",
                text(&v["hex"])
            );
        }
        checked += 1;
    }
    assert_eq!(checked, vectors.len());
}

#[test]
fn truncating_any_vector_is_an_error_not_a_panic() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).expect("vector file is JSON");
    for v in &vectors {
        let ch = text(&v["characteristic"]);
        let Some(uuid) = ch
            .strip_prefix("0x")
            .and_then(|h| u16::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let bytes = hex::decode(text(&v["hex"])).expect("hex");
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            // Heart rate RR-intervals fill the PDU: cutting a whole interval
            // off leaves a valid shorter value.
            if let Ok(d) = gatt::decode_characteristic(uuid, short) {
                assert!(
                    matches!(d, Decoded::HeartRate(_)),
                    "{ch}: {} bytes of {} decoded",
                    cut,
                    bytes.len()
                );
                continue;
            }
            let e = gatt::decode_characteristic(uuid, short).unwrap_err();
            assert_eq!(e.characteristic.uuid(), Some(uuid));
            assert!(
                e.offset <= cut,
                "{ch}: offset {} past the end {cut}",
                e.offset
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        let e = gatt::decode_characteristic(uuid, &long);
        // Appending one byte to a heart-rate value with RR-intervals is an odd
        // byte; to one without, an unannounced field: both are errors.
        assert!(e.is_err(), "{ch}: trailing byte accepted");
    }
}

/// End to end: decoded vectors through the canonicaliser give the readings
/// (or the refusals) the clinical rules ask for.
#[test]
fn vectors_through_the_canonicaliser() {
    use chrono::{TimeZone, Utc};
    use device_profiles::canonical::{canonicalize, ClockPolicy, Context, Source};

    let clock = ClockPolicy {
        max_age: chrono::Duration::days(365 * 30),
        ..ClockPolicy::default()
    };
    let now = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time");
    let cx = Context {
        device_id: "dev",
        patient_id: "p",
        source: Source::Ble,
        received_at: now,
        clock: &clock,
        content_digest: "d",
        index: 0,
    };
    let run = |uuid: u16, hex_bytes: &str| {
        let bytes = hex::decode(hex_bytes).expect("hex");
        let d = gatt::decode_characteristic(uuid, &bytes).expect("decodes");
        let ms = d.to_measurements();
        assert_eq!(ms.len(), 1);
        canonicalize(&ms[0], &cx)
    };

    // kPa cuff: systolic 18.9 kPa is 141.76 mm[Hg]; BP panel + pulse.
    let g = run(0x2A35, "15BDF00B009FF03C001200").expect("a reading");
    assert_eq!(g.readings.len(), 4);
    assert!((g.readings[0].value - 18.9 * 7.500_615_758).abs() < 1e-9);
    assert_eq!(g.readings[0].annotations["cuff_too_loose"], "true");

    // The failed cuff of domain.md §5.1: NaN, refused, never 2047 mm[Hg].
    assert_eq!(
        run(0x2A35, "16FF07FF07FF07E80706170E230AFF070000")
            .unwrap_err()
            .code(),
        "special_value"
    );

    // Glucose: 90e-5 kg/L is 90 mg/dL, keyed by sequence number 42.
    let g = run(0x2A18, "032A00E807030F071E0000005AB011").expect("a reading");
    assert_eq!(
        (g.readings[0].value, g.readings[0].sequence),
        (90.0, Some(42))
    );

    // Questionable oximetry with equipment malfunction: not clinical.
    assert_eq!(
        run(0x2A5E, "0FACF3BEF5E8070B1D170839204022000066E3")
            .unwrap_err()
            .code(),
        "not_clinical"
    );

    // 37.6 Cel at the finger.
    let g = run(0x2A1C, "06B00E00FEDC070C050B321B04").expect("a reading");
    assert_eq!(
        (
            g.readings[0].value,
            g.readings[0].annotations["site"].as_str()
        ),
        (37.6, "finger")
    );

    // Weight with BMI and height: 1.75 m becomes 175 cm.
    let g = run(0x2A9D, "0CB03605F500D606").expect("a reading");
    let height = g
        .readings
        .iter()
        .find(|r| r.metric == Metric::BodyHeight)
        .expect("height");
    assert!((height.value - 175.0).abs() < 1e-9);
}
