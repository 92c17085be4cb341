//! Properties of the GATT codecs:
//! - encode → decode is the identity for every characteristic;
//! - decoding arbitrary bytes never panics, and whatever is accepted
//!   re-encodes to exactly the same bytes (the typed structs lose nothing);
//! - accepted values convert to measurements whose numbers are finite;
//! - IEEE 11073 encoding is exact.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use device_profiles::decoded::RawValue;
use device_profiles::gatt::body_composition::BodyCompositionMeasurement;
use device_profiles::gatt::bpm::{
    BloodPressureMeasurement, IntermediateCuffPressure, MeasurementStatus, PressureUnit,
};
use device_profiles::gatt::datetime::{CurrentTime, DateTime};
use device_profiles::gatt::glucose::{
    Carbohydrate, ConcentrationUnit, Exercise, GlucoseConcentration, GlucoseMeasurement,
    GlucoseMeasurementContext, GlucoseType, Medication, MedicationUnit, SampleLocation,
    SensorStatus, TesterHealth,
};
use device_profiles::gatt::heart_rate::{HeartRateFormat, HeartRateMeasurement, SensorContact};
use device_profiles::gatt::layout::Layout;
use device_profiles::gatt::plx::{
    PlxContinuous, PlxDeviceSensorStatus, PlxMeasurementStatus, PlxSpotCheck, SpO2Pr,
};
use device_profiles::gatt::racp::{OpCode, Operand, Operator, Racp, RacpRequest, ResponseCode};
use device_profiles::gatt::temperature::{TemperatureMeasurement, TemperatureUnit};
use device_profiles::gatt::weight::{BmiHeight, MeasurementSystem, WeightMeasurement};
use device_profiles::gatt::{self, Decoded, Float, Sfloat};

const UUIDS: [u16; 13] = [
    0x2A08, 0x2A2B, 0x2A35, 0x2A36, 0x2A9D, 0x2A9C, 0x2A18, 0x2A34, 0x2A1C, 0x2A5E, 0x2A5F, 0x2A37,
    0x2A52,
];

fn sfloat() -> impl Strategy<Value = Sfloat> {
    any::<u16>().prop_map(Sfloat::from_raw)
}

fn date_time() -> impl Strategy<Value = DateTime> {
    let date = prop_oneof![
        Just((0u16, 0u8, 0u8)),
        (1582u16..=9999, 1u8..=12, 1u8..=28),
        (1582u16..=9999, 0u8..=0, 0u8..=31),
    ];
    (date, 0u8..24, 0u8..60, 0u8..60).prop_map(|((year, month, day), hours, minutes, seconds)| {
        DateTime {
            year,
            month,
            day,
            hours,
            minutes,
            seconds,
        }
    })
}

fn system() -> impl Strategy<Value = MeasurementSystem> {
    prop_oneof![
        Just(MeasurementSystem::Si),
        Just(MeasurementSystem::Imperial)
    ]
}

fn bpm() -> impl Strategy<Value = BloodPressureMeasurement> {
    (
        prop_oneof![Just(PressureUnit::MmHg), Just(PressureUnit::KPa)],
        (sfloat(), sfloat(), sfloat()),
        option::of(date_time()),
        option::of(sfloat()),
        option::of(any::<u8>()),
        option::of(any::<u16>().prop_map(MeasurementStatus)),
    )
        .prop_map(
            |(
                unit,
                (systolic, diastolic, mean_arterial_pressure),
                timestamp,
                pulse_rate,
                user_id,
                status,
            )| {
                BloodPressureMeasurement {
                    unit,
                    systolic,
                    diastolic,
                    mean_arterial_pressure,
                    timestamp,
                    pulse_rate,
                    user_id,
                    status,
                }
            },
        )
}

fn weight() -> impl Strategy<Value = WeightMeasurement> {
    (
        system(),
        any::<u16>(),
        option::of(date_time()),
        option::of(any::<u8>()),
        option::of((any::<u16>(), any::<u16>())),
    )
        .prop_map(
            |(system, weight_raw, timestamp, user_id, bh)| WeightMeasurement {
                system,
                weight_raw,
                timestamp,
                user_id,
                // "Measurement unsuccessful" disables BMI and height.
                bmi_height: bh
                    .filter(|_| weight_raw != 0xFFFF)
                    .map(|(bmi_raw, height_raw)| BmiHeight {
                        bmi_raw,
                        height_raw,
                    }),
            },
        )
}

fn body_composition() -> impl Strategy<Value = BodyCompositionMeasurement> {
    let opt = || option::of(any::<u16>());
    (
        (
            system(),
            any::<bool>(),
            any::<u16>(),
            option::of(date_time()),
            option::of(any::<u8>()),
        ),
        (
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
            opt(),
        ),
    )
        .prop_map(
            |((system, multiple_packet, body_fat_raw, timestamp, user_id), f)| {
                let mut m = BodyCompositionMeasurement {
                    system,
                    multiple_packet,
                    body_fat_raw,
                    timestamp,
                    user_id,
                    basal_metabolism_kj: f.0,
                    muscle_percent_raw: f.1,
                    muscle_mass_raw: f.2,
                    fat_free_mass_raw: f.3,
                    soft_lean_mass_raw: f.4,
                    body_water_mass_raw: f.5,
                    impedance_raw: f.6,
                    weight_raw: f.7,
                    height_raw: f.8,
                };
                if body_fat_raw == 0xFFFF {
                    // Unsuccessful: only time stamp and user id may remain.
                    m = BodyCompositionMeasurement {
                        system,
                        multiple_packet,
                        body_fat_raw,
                        timestamp,
                        user_id,
                        ..Default::default()
                    };
                }
                m
            },
        )
}

fn glucose() -> impl Strategy<Value = GlucoseMeasurement> {
    (
        any::<u16>(),
        date_time(),
        option::of(any::<i16>()),
        prop_oneof![
            Just(ConcentrationUnit::KgPerL),
            Just(ConcentrationUnit::MolPerL)
        ],
        option::of((sfloat(), 0u8..16, 0u8..16)),
        option::of(any::<u16>().prop_map(SensorStatus)),
        any::<bool>(),
    )
        .prop_map(
            |(
                sequence_number,
                base_time,
                time_offset_minutes,
                unit,
                c,
                sensor_status,
                context_follows,
            )| {
                GlucoseMeasurement {
                    sequence_number,
                    base_time,
                    time_offset_minutes,
                    unit,
                    concentration: c.map(|(value, t, l)| GlucoseConcentration {
                        value,
                        sample_type: GlucoseType::from_nibble(t),
                        sample_location: SampleLocation::from_nibble(l),
                    }),
                    sensor_status,
                    context_follows,
                }
            },
        )
}

fn glucose_context() -> impl Strategy<Value = GlucoseMeasurementContext> {
    (
        any::<u16>(),
        option::of(Just(0u8)),
        option::of((any::<u8>(), sfloat())),
        option::of(any::<u8>()),
        option::of((0u8..16, 0u8..16)),
        option::of((any::<u16>(), any::<u8>())),
        option::of((any::<u8>(), sfloat())),
        any::<bool>(),
        option::of(sfloat()),
    )
        .prop_map(
            |(sequence_number, extended_flags, carb, meal, th, ex, med, litres, hba1c)| {
                GlucoseMeasurementContext {
                    sequence_number,
                    extended_flags,
                    carbohydrate: carb.map(|(id, amount_kg)| Carbohydrate { id, amount_kg }),
                    meal,
                    tester_health: th.map(|(tester, health)| TesterHealth { tester, health }),
                    exercise: ex.map(|(duration_s, intensity_percent)| Exercise {
                        duration_s,
                        intensity_percent,
                    }),
                    medication: med.map(|(id, amount)| Medication { id, amount }),
                    medication_unit: if litres {
                        MedicationUnit::Litres
                    } else {
                        MedicationUnit::Kilograms
                    },
                    hba1c,
                }
            },
        )
}

fn temperature() -> impl Strategy<Value = TemperatureMeasurement> {
    (
        any::<bool>(),
        any::<u32>(),
        option::of(date_time()),
        option::of(any::<u8>()),
    )
        .prop_map(|(f, raw, timestamp, t)| TemperatureMeasurement {
            unit: if f {
                TemperatureUnit::Fahrenheit
            } else {
                TemperatureUnit::Celsius
            },
            value: Float::from_raw(raw),
            timestamp,
            temperature_type: t,
        })
}

fn pair() -> impl Strategy<Value = SpO2Pr> {
    (sfloat(), sfloat()).prop_map(|(spo2, pulse_rate)| SpO2Pr { spo2, pulse_rate })
}

fn plx_statuses() -> impl Strategy<
    Value = (
        Option<PlxMeasurementStatus>,
        Option<PlxDeviceSensorStatus>,
        Option<Sfloat>,
    ),
> {
    (
        option::of(any::<u16>().prop_map(PlxMeasurementStatus)),
        option::of((0u32..1 << 24).prop_map(PlxDeviceSensorStatus)),
        option::of(sfloat()),
    )
}

fn plx_spot() -> impl Strategy<Value = PlxSpotCheck> {
    (
        pair(),
        option::of(date_time()),
        plx_statuses(),
        any::<bool>(),
    )
        .prop_map(|(reading, timestamp, (ms, ds, pai), clock)| PlxSpotCheck {
            reading,
            timestamp,
            measurement_status: ms,
            device_sensor_status: ds,
            pulse_amplitude_index: pai,
            device_clock_not_set: clock,
        })
}

fn plx_continuous() -> impl Strategy<Value = PlxContinuous> {
    (
        pair(),
        option::of(pair()),
        option::of(pair()),
        plx_statuses(),
    )
        .prop_map(|(normal, fast, slow, (ms, ds, pai))| PlxContinuous {
            normal,
            fast,
            slow,
            measurement_status: ms,
            device_sensor_status: ds,
            pulse_amplitude_index: pai,
        })
}

fn heart_rate() -> impl Strategy<Value = HeartRateMeasurement> {
    (
        prop_oneof![
            (Just(HeartRateFormat::U8), 0u16..=255),
            (Just(HeartRateFormat::U16), any::<u16>())
        ],
        0u8..4,
        option::of(any::<u16>()),
        vec(any::<u16>(), 0..9),
    )
        .prop_map(
            |((format, heart_rate), contact, energy_expended_kj, rr_intervals)| {
                HeartRateMeasurement {
                    format,
                    heart_rate,
                    sensor_contact: [
                        SensorContact::NotSupported,
                        SensorContact::NotSupportedAlt,
                        SensorContact::NotDetected,
                        SensorContact::Detected,
                    ][usize::from(contact)],
                    energy_expended_kj,
                    rr_intervals,
                }
            },
        )
}

fn racp() -> impl Strategy<Value = Racp> {
    let op = prop_oneof![
        Just(OpCode::ReportStoredRecords),
        Just(OpCode::DeleteStoredRecords),
        Just(OpCode::ReportNumberOfRecords)
    ];
    let no_operand = prop_oneof![
        Just(Operator::AllRecords),
        Just(Operator::FirstRecord),
        Just(Operator::LastRecord)
    ];
    let other_filter = (2u8..=255, vec(any::<u8>(), 0..8))
        .prop_map(|(filter_type, value)| Operand::Other { filter_type, value });
    let one_value = prop_oneof![
        Just(Operator::LessThanOrEqual),
        Just(Operator::GreaterThanOrEqual)
    ];
    let filtered = prop_oneof![
        (one_value.clone(), any::<u16>()).prop_map(|(o, s)| (o, Operand::Sequence(s))),
        (any::<u16>(), any::<u16>())
            .prop_map(|(a, b)| (Operator::WithinRange, Operand::SequenceRange(a, b))),
        (
            prop_oneof![one_value, Just(Operator::WithinRange)],
            other_filter
        )
            .prop_map(|(o, x)| (o, x)),
    ];
    let request = prop_oneof![
        (op.clone(), no_operand).prop_map(|(op_code, operator)| (op_code, operator, Operand::None)),
        (op, filtered).prop_map(|(op_code, (operator, operand))| (op_code, operator, operand)),
        Just((OpCode::Abort, Operator::Null, Operand::None)),
    ]
    .prop_map(|(op_code, operator, operand)| {
        Racp::Request(RacpRequest {
            op_code,
            operator,
            operand,
        })
    });
    prop_oneof![
        request,
        any::<u16>().prop_map(Racp::NumberOfRecords),
        (any::<u8>(), any::<u8>()).prop_map(|(request_op_code, c)| Racp::Response {
            request_op_code,
            code: ResponseCode::from_code(c)
        }),
    ]
}

fn current_time() -> impl Strategy<Value = CurrentTime> {
    (date_time(), 0u8..=7, any::<u8>(), any::<u8>()).prop_map(
        |(date_time, day_of_week, fractions256, adjust_reason)| CurrentTime {
            date_time,
            day_of_week,
            fractions256,
            adjust_reason,
        },
    )
}

fn any_value() -> impl Strategy<Value = Decoded> {
    prop_oneof![
        date_time().prop_map(Decoded::from),
        current_time().prop_map(Decoded::from),
        bpm().prop_map(Decoded::from),
        bpm().prop_map(|b| Decoded::from(IntermediateCuffPressure {
            unit: b.unit,
            current_cuff_pressure: b.systolic,
            unused_diastolic: b.diastolic,
            unused_mean: b.mean_arterial_pressure,
            timestamp: b.timestamp,
            pulse_rate: b.pulse_rate,
            user_id: b.user_id,
            status: b.status,
        })),
        weight().prop_map(Decoded::from),
        body_composition().prop_map(Decoded::from),
        glucose().prop_map(Decoded::from),
        glucose_context().prop_map(Decoded::from),
        temperature().prop_map(Decoded::from),
        plx_spot().prop_map(Decoded::from),
        plx_continuous().prop_map(Decoded::from),
        heart_rate().prop_map(Decoded::from),
        racp().prop_map(Decoded::from),
    ]
}

fn assert_measurements_sane(d: &Decoded) {
    for m in d.to_measurements() {
        for c in &m.components {
            if let RawValue::Number(n) = c.value {
                assert!(n.is_finite(), "{c:?}");
            }
            assert!(c.unit.is_some(), "{c:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(value in any_value()) {
        let (uuid, bytes) = gatt::encode_characteristic(&value);
        let back = gatt::decode_characteristic(uuid, &bytes);
        prop_assert_eq!(back.as_ref(), Ok(&value), "bytes {}", hex::encode(&bytes));
        assert_measurements_sane(&value);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_bytes_reencode(
        uuid in proptest::sample::select(UUIDS.to_vec()),
        bytes in vec(any::<u8>(), 0..40),
    ) {
        if let Ok(d) = gatt::decode_characteristic(uuid, &bytes) {
            prop_assert_eq!(d.encode(), bytes);
            assert_measurements_sane(&d);
        }
    }

    #[test]
    fn flag_guided_bytes_never_panic(uuid in proptest::sample::select(UUIDS.to_vec()), flags in any::<u8>(), rest in vec(any::<u8>(), 0..24)) {
        // Random bytes rarely have sensible flags; pin the flags byte and let the rest vary.
        let mut bytes = vec![flags];
        bytes.extend(rest);
        if let Ok(d) = gatt::decode_characteristic(uuid, &bytes) {
            prop_assert_eq!(d.encode(), bytes);
            assert_measurements_sane(&d);
        }
    }

    #[test]
    fn sfloat_decimal_round_trip(m in -2045i64..=2045, e in -8i32..=7) {
        let s = Sfloat::from_decimal(m, e).expect("in range");
        let d = s.decimal().expect("a number");
        prop_assert_eq!((i64::from(d.mantissa), d.exponent as i32), if m == 0 { (0, 0) } else { (m, e) });
        prop_assert_eq!(Sfloat::from_le_bytes(s.to_le_bytes()), s);
    }

    #[test]
    fn sfloat_from_f64_is_exact(m in -2045i64..=2045, decimals in 0u8..=3) {
        let value = m as f64 / 10f64.powi(i32::from(decimals));
        let s = Sfloat::from_f64(value, decimals).expect("fits");
        prop_assert_eq!(s.to_f64(), Some(value));
    }

    #[test]
    fn float_from_f64_is_exact(m in -8_388_605i64..=8_388_605, decimals in 0u8..=4) {
        let value = m as f64 / 10f64.powi(i32::from(decimals));
        let f = Float::from_f64(value, decimals).expect("fits");
        prop_assert_eq!(f.to_f64(), Some(value));
    }

    #[test]
    fn layouts_never_panic(bytes in vec(any::<u8>(), 0..16)) {
        for text in [include_str!("../profiles/ble/xiaomi-scale-v1.toml"), include_str!("../profiles/ble/xiaomi-scale-v2.toml")] {
            let layout = Layout::from_toml_str(text).expect("valid layout");
            if let Ok(m) = layout.decode(&bytes) {
                prop_assert_eq!(bytes.len(), layout.length());
                for c in &m.components {
                    if let RawValue::Number(n) = c.value {
                        prop_assert!(n.is_finite() && n >= 0.0);
                    }
                }
            }
        }
    }
}
