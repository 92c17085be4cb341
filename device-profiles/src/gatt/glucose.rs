//! Glucose Measurement 0x2A18 and Glucose Measurement Context 0x2A34
//! (domain.md §1.5, §1.6).
//!
//! Layout decisions:
//! - Flags bits 5-7 of 0x2A18 are RFU and rejected; each defined bit adds a
//!   field. Sensor Status bits 12-15 are RFU but move nothing: kept as sent.
//! - Type/Sample Location share one byte: **low nibble = type, high nibble =
//!   location**.
//! - Status bit 5 = result *higher* than the device can process, bit 6 =
//!   *lower* (the GATT XML and Wireshark; Nordic's field names are swapped).
//! - 0x2A34's Extended Flags are all RFU; a non-zero value would announce
//!   fields we cannot place, so it is rejected.
//!
//! Clinical decisions (in [`GlucoseMeasurement::to_measurements`]):
//! - kg/L becomes mg/dL (×10^5) and mol/L becomes mmol/L (×10^3), exactly, on
//!   the SFLOAT exponent.
//! - Control-solution records (type 10 or location 4) are `not_clinical`.
//! - Out-of-device-range results (status bits 5/6, the meter's "HI"/"LO") are
//!   `not_clinical`: the number sent is the device's limit, not the
//!   patient's glucose, and storing it would understate a critical value. The
//!   reason names the direction so the quarantine record can be escalated.
//! - Bits saying the result itself is unreliable (sensor malfunction, sample
//!   size insufficient, strip insertion error, strip type incorrect,
//!   temperature too high/low, read interrupted, general device fault) are
//!   `not_clinical` too. Battery low and time fault are annotations only: the
//!   value is fine; the time is judged by the canonicaliser's clock policy.

use chrono::Duration;

use super::bit_names;
use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError};
use super::ieee11073::Sfloat;
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement};
use crate::metric::Metric;

/// Concentration unit (flags bit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConcentrationUnit {
    /// kg/L (bit 2 = 0); reported as mg/dL.
    #[default]
    KgPerL,
    /// mol/L (bit 2 = 1); reported as mmol/L.
    MolPerL,
}

/// Glucose sample type (low nibble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlucoseType {
    /// 1
    CapillaryWholeBlood,
    /// 2
    CapillaryPlasma,
    /// 3
    VenousWholeBlood,
    /// 4
    VenousPlasma,
    /// 5
    ArterialWholeBlood,
    /// 6
    ArterialPlasma,
    /// 7
    UndeterminedWholeBlood,
    /// 8
    UndeterminedPlasma,
    /// 9
    InterstitialFluid,
    /// 10
    ControlSolution,
    /// 0 or 11-15: reserved, kept as sent.
    Reserved(u8),
}

impl GlucoseType {
    /// From the nibble.
    pub const fn from_nibble(n: u8) -> Self {
        use GlucoseType::*;
        match n & 0x0F {
            1 => CapillaryWholeBlood,
            2 => CapillaryPlasma,
            3 => VenousWholeBlood,
            4 => VenousPlasma,
            5 => ArterialWholeBlood,
            6 => ArterialPlasma,
            7 => UndeterminedWholeBlood,
            8 => UndeterminedPlasma,
            9 => InterstitialFluid,
            10 => ControlSolution,
            n => Reserved(n),
        }
    }

    /// The nibble.
    pub const fn nibble(self) -> u8 {
        use GlucoseType::*;
        match self {
            CapillaryWholeBlood => 1,
            CapillaryPlasma => 2,
            VenousWholeBlood => 3,
            VenousPlasma => 4,
            ArterialWholeBlood => 5,
            ArterialPlasma => 6,
            UndeterminedWholeBlood => 7,
            UndeterminedPlasma => 8,
            InterstitialFluid => 9,
            ControlSolution => 10,
            Reserved(n) => n & 0x0F,
        }
    }

    /// Annotation value.
    pub fn name(self) -> String {
        use GlucoseType::*;
        match self {
            CapillaryWholeBlood => "capillary_whole_blood",
            CapillaryPlasma => "capillary_plasma",
            VenousWholeBlood => "venous_whole_blood",
            VenousPlasma => "venous_plasma",
            ArterialWholeBlood => "arterial_whole_blood",
            ArterialPlasma => "arterial_plasma",
            UndeterminedWholeBlood => "undetermined_whole_blood",
            UndeterminedPlasma => "undetermined_plasma",
            InterstitialFluid => "interstitial_fluid",
            ControlSolution => "control_solution",
            Reserved(n) => return format!("reserved({n})"),
        }
        .into()
    }
}

/// Sample location (high nibble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleLocation {
    /// 1
    Finger,
    /// 2: alternate site test.
    AlternateSite,
    /// 3
    Earlobe,
    /// 4
    ControlSolution,
    /// 15
    NotAvailable,
    /// 0 or 5-14: reserved, kept as sent.
    Reserved(u8),
}

impl SampleLocation {
    /// From the nibble.
    pub const fn from_nibble(n: u8) -> Self {
        match n & 0x0F {
            1 => SampleLocation::Finger,
            2 => SampleLocation::AlternateSite,
            3 => SampleLocation::Earlobe,
            4 => SampleLocation::ControlSolution,
            15 => SampleLocation::NotAvailable,
            n => SampleLocation::Reserved(n),
        }
    }

    /// The nibble.
    pub const fn nibble(self) -> u8 {
        match self {
            SampleLocation::Finger => 1,
            SampleLocation::AlternateSite => 2,
            SampleLocation::Earlobe => 3,
            SampleLocation::ControlSolution => 4,
            SampleLocation::NotAvailable => 15,
            SampleLocation::Reserved(n) => n & 0x0F,
        }
    }

    /// Annotation value.
    pub fn name(self) -> String {
        match self {
            SampleLocation::Finger => "finger",
            SampleLocation::AlternateSite => "alternate_site",
            SampleLocation::Earlobe => "earlobe",
            SampleLocation::ControlSolution => "control_solution",
            SampleLocation::NotAvailable => "not_available",
            SampleLocation::Reserved(n) => return format!("reserved({n})"),
        }
        .into()
    }
}

/// Sensor Status Annunciation (16 bits, raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SensorStatus(pub u16);

impl SensorStatus {
    /// Bit 0.
    pub const BATTERY_LOW: u16 = 1 << 0;
    /// Bit 1.
    pub const SENSOR_MALFUNCTION: u16 = 1 << 1;
    /// Bit 2.
    pub const SAMPLE_SIZE_INSUFFICIENT: u16 = 1 << 2;
    /// Bit 3.
    pub const STRIP_INSERTION_ERROR: u16 = 1 << 3;
    /// Bit 4.
    pub const STRIP_TYPE_INCORRECT: u16 = 1 << 4;
    /// Bit 5: result higher than the device can process.
    pub const RESULT_TOO_HIGH: u16 = 1 << 5;
    /// Bit 6: result lower than the device can process.
    pub const RESULT_TOO_LOW: u16 = 1 << 6;
    /// Bit 7.
    pub const TEMPERATURE_TOO_HIGH: u16 = 1 << 7;
    /// Bit 8.
    pub const TEMPERATURE_TOO_LOW: u16 = 1 << 8;
    /// Bit 9: strip pulled too soon.
    pub const READ_INTERRUPTED: u16 = 1 << 9;
    /// Bit 10.
    pub const GENERAL_DEVICE_FAULT: u16 = 1 << 10;
    /// Bit 11: time may be inaccurate.
    pub const TIME_FAULT: u16 = 1 << 11;

    const NAMES: [(u16, &'static str); 12] = [
        (Self::BATTERY_LOW, "battery_low"),
        (Self::SENSOR_MALFUNCTION, "sensor_malfunction"),
        (Self::SAMPLE_SIZE_INSUFFICIENT, "sample_size_insufficient"),
        (Self::STRIP_INSERTION_ERROR, "strip_insertion_error"),
        (Self::STRIP_TYPE_INCORRECT, "strip_type_incorrect"),
        (
            Self::RESULT_TOO_HIGH,
            "result_higher_than_device_can_process",
        ),
        (Self::RESULT_TOO_LOW, "result_lower_than_device_can_process"),
        (Self::TEMPERATURE_TOO_HIGH, "temperature_too_high"),
        (Self::TEMPERATURE_TOO_LOW, "temperature_too_low"),
        (Self::READ_INTERRUPTED, "read_interrupted"),
        (Self::GENERAL_DEVICE_FAULT, "general_device_fault"),
        (Self::TIME_FAULT, "time_fault"),
    ];

    /// Bits that make the result unfit as clinical data.
    pub const NOT_CLINICAL: u16 = Self::SENSOR_MALFUNCTION
        | Self::SAMPLE_SIZE_INSUFFICIENT
        | Self::STRIP_INSERTION_ERROR
        | Self::STRIP_TYPE_INCORRECT
        | Self::RESULT_TOO_HIGH
        | Self::RESULT_TOO_LOW
        | Self::TEMPERATURE_TOO_HIGH
        | Self::TEMPERATURE_TOO_LOW
        | Self::READ_INTERRUPTED
        | Self::GENERAL_DEVICE_FAULT;

    /// True if every bit of `mask` is set.
    pub const fn has(self, mask: u16) -> bool {
        self.0 & mask == mask
    }

    /// Names of the set bits (within `mask`), in bit order.
    pub fn names(self, mask: u16) -> Vec<&'static str> {
        bit_names(&Self::NAMES, self.0 & mask)
    }
}

/// Concentration with its sample type and location (flags bit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlucoseConcentration {
    /// The value, in kg/L or mol/L (see [`GlucoseMeasurement::unit`]).
    pub value: Sfloat,
    /// Sample type.
    pub sample_type: GlucoseType,
    /// Sample location.
    pub sample_location: SampleLocation,
}

/// Glucose Measurement 0x2A18: one stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlucoseMeasurement {
    /// Record sequence number (the dedup and RACP key).
    pub sequence_number: u16,
    /// Base time.
    pub base_time: DateTime,
    /// Minutes to add to the base time (flags bit 0).
    pub time_offset_minutes: Option<i16>,
    /// Flags bit 2; meaningful only with a concentration, kept as sent.
    pub unit: ConcentrationUnit,
    /// Concentration, type and location (flags bit 1).
    pub concentration: Option<GlucoseConcentration>,
    /// Sensor Status Annunciation (flags bit 3).
    pub sensor_status: Option<SensorStatus>,
    /// Flags bit 4: a 0x2A34 with the same sequence number follows.
    pub context_follows: bool,
}

impl GlucoseMeasurement {
    /// Decodes a 0x2A18 value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::GlucoseMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xE0, 0, "flags")?;
        let sequence_number = r.u16("sequence number")?;
        let base_time = DateTime::read(&mut r)?;
        let time_offset_minutes = (flags & 0x01 != 0)
            .then(|| r.i16("time offset"))
            .transpose()?;
        let concentration = (flags & 0x02 != 0)
            .then(|| {
                let value = r.sfloat("glucose concentration")?;
                let tl = r.u8("type and sample location")?;
                Ok::<_, Fault>(GlucoseConcentration {
                    value,
                    sample_type: GlucoseType::from_nibble(tl & 0x0F),
                    sample_location: SampleLocation::from_nibble(tl >> 4),
                })
            })
            .transpose()?;
        let sensor_status = (flags & 0x08 != 0)
            .then(|| r.u16("sensor status").map(SensorStatus))
            .transpose()?;
        r.finish()?;
        Ok(GlucoseMeasurement {
            sequence_number,
            base_time,
            time_offset_minutes,
            unit: if flags & 0x04 != 0 {
                ConcentrationUnit::MolPerL
            } else {
                ConcentrationUnit::KgPerL
            },
            concentration,
            sensor_status,
            context_follows: flags & 0x10 != 0,
        })
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.time_offset_minutes.is_some())
            | u8::from(self.concentration.is_some()) << 1
            | u8::from(self.unit == ConcentrationUnit::MolPerL) << 2
            | u8::from(self.sensor_status.is_some()) << 3
            | u8::from(self.context_follows) << 4
    }

    /// Encodes; flags follow from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.put_u8(self.flags());
        out.put_u16(self.sequence_number);
        self.base_time.write(&mut out);
        if let Some(o) = self.time_offset_minutes {
            out.put_u16(o as u16);
        }
        if let Some(c) = self.concentration {
            out.put_sfloat(c.value);
            out.put_u8(c.sample_type.nibble() | c.sample_location.nibble() << 4);
        }
        if let Some(s) = self.sensor_status {
            out.put_u16(s.0);
        }
        out
    }

    /// Effective measurement time: base time plus offset; `None` when the
    /// base date is not known.
    pub fn time(&self) -> Option<chrono::NaiveDateTime> {
        let base = self.base_time.to_naive()?;
        let offset = Duration::minutes(i64::from(self.time_offset_minutes.unwrap_or(0)));
        base.checked_add_signed(offset)
    }

    /// The value in mg/dL (kg/L × 10^5) or mmol/L (mol/L × 10^3), with that
    /// unit's UCUM code; special values stay special.
    pub fn concentration_value(&self) -> Option<(crate::decoded::RawValue, &'static str)> {
        let c = self.concentration?;
        Some(match self.unit {
            ConcentrationUnit::KgPerL => (c.value.to_raw_value_scaled(5), "mg/dL"),
            ConcentrationUnit::MolPerL => (c.value.to_raw_value_scaled(3), "mmol/L"),
        })
    }

    /// One measurement of [`Metric::BloodGlucose`] with the record's sequence
    /// number, effective time and annotations; see the module docs for what
    /// is marked `not_clinical`. A record without a concentration (status
    /// only) has no component and is `not_clinical`, so it is quarantined
    /// with its bytes rather than silently dropped.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut a = Annotations::new();
        let mut reasons: Vec<String> = Vec::new();
        let mut components = Vec::new();
        match (self.concentration, self.concentration_value()) {
            (Some(c), Some((value, unit))) => {
                components.push(Component {
                    metric: Metric::BloodGlucose,
                    value,
                    unit: Some(unit.into()),
                });
                a.insert("glucose_type".into(), c.sample_type.name());
                a.insert("sample_location".into(), c.sample_location.name());
                if c.sample_type == GlucoseType::ControlSolution
                    || c.sample_location == SampleLocation::ControlSolution
                {
                    reasons.push("control solution test".into());
                }
            }
            _ => reasons.push("record has no glucose concentration".into()),
        }
        if let Some(s) = self.sensor_status {
            a.insert("sensor_status_raw".into(), format!("{:#06x}", s.0));
            let names = s.names(u16::MAX);
            if !names.is_empty() {
                a.insert("sensor_status".into(), names.join(","));
            }
            if s.has(SensorStatus::RESULT_TOO_HIGH) {
                a.insert("out_of_device_range".into(), "above".into());
            }
            if s.has(SensorStatus::RESULT_TOO_LOW) {
                a.insert("out_of_device_range".into(), "below".into());
            }
            let bad = s.names(SensorStatus::NOT_CLINICAL);
            if !bad.is_empty() {
                reasons.push(format!("device reports {}", bad.join(", ")));
            }
        }
        if self.context_follows {
            a.insert("context_follows".into(), "true".into());
        }
        vec![DecodedMeasurement {
            time: self.time().map(crate::decoded::DeviceTime::Local),
            sequence: Some(u64::from(self.sequence_number)),
            components,
            annotations: a,
            not_clinical: (!reasons.is_empty()).then(|| reasons.join("; ")),
            ..Default::default()
        }]
    }
}

/// Medication unit (0x2A34 flags bit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MedicationUnit {
    /// Kilograms (reported in mg).
    #[default]
    Kilograms,
    /// Litres (reported in mL).
    Litres,
}

/// Carbohydrate intake (flags bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Carbohydrate {
    /// 1 breakfast, 2 lunch, 3 dinner, 4 snack, 5 drink, 6 supper, 7 brunch.
    pub id: u8,
    /// Amount in kg.
    pub amount_kg: Sfloat,
}

/// Tester and health (flags bit 2): one byte, low nibble tester, high
/// nibble health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TesterHealth {
    /// 1 self, 2 health care professional, 3 lab test, 15 not available.
    pub tester: u8,
    /// 1 minor issues, 2 major issues, 3 menses, 4 stress, 5 none, 15 n/a.
    pub health: u8,
}

/// Exercise (flags bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exercise {
    /// Duration in seconds; 0xFFFF = overrun.
    pub duration_s: u16,
    /// Intensity in %.
    pub intensity_percent: u8,
}

/// Medication (flags bit 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Medication {
    /// 1 rapid-acting, 2 short-acting, 3 intermediate-acting, 4 long-acting,
    /// 5 pre-mixed insulin.
    pub id: u8,
    /// Amount in kg or litres (see [`GlucoseMeasurementContext::medication_unit`]).
    pub amount: Sfloat,
}

/// Glucose Measurement Context 0x2A34.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GlucoseMeasurementContext {
    /// Sequence number of the 0x2A18 record this belongs to.
    pub sequence_number: u16,
    /// Extended Flags (flags bit 7); only 0 is accepted (all bits RFU).
    pub extended_flags: Option<u8>,
    /// Carbohydrate (bit 0).
    pub carbohydrate: Option<Carbohydrate>,
    /// Meal (bit 1): 1 preprandial, 2 postprandial, 3 fasting, 4 casual,
    /// 5 bedtime.
    pub meal: Option<u8>,
    /// Tester and health (bit 2).
    pub tester_health: Option<TesterHealth>,
    /// Exercise (bit 3).
    pub exercise: Option<Exercise>,
    /// Medication (bit 4).
    pub medication: Option<Medication>,
    /// Medication unit (bit 5), kept as sent.
    pub medication_unit: MedicationUnit,
    /// HbA1c in % (bit 6).
    pub hba1c: Option<Sfloat>,
}

fn table_name(table: &[&str], id: u8) -> String {
    match table.get(usize::from(id)) {
        Some(n) if !n.is_empty() => (*n).to_string(),
        _ => format!("reserved({id})"),
    }
}

const CARB_NAMES: [&str; 8] = [
    "",
    "breakfast",
    "lunch",
    "dinner",
    "snack",
    "drink",
    "supper",
    "brunch",
];
const MEAL_NAMES: [&str; 6] = [
    "",
    "preprandial",
    "postprandial",
    "fasting",
    "casual",
    "bedtime",
];
const TESTER_NAMES: [&str; 16] = [
    "",
    "self",
    "health_care_professional",
    "lab_test",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "not_available",
];
const HEALTH_NAMES: [&str; 16] = [
    "",
    "minor_health_issues",
    "major_health_issues",
    "during_menses",
    "under_stress",
    "no_health_issues",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "not_available",
];
const MEDICATION_NAMES: [&str; 6] = [
    "",
    "rapid_acting_insulin",
    "short_acting_insulin",
    "intermediate_acting_insulin",
    "long_acting_insulin",
    "pre_mixed_insulin",
];

impl GlucoseMeasurementContext {
    /// Decodes a 0x2A34 value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::GlucoseMeasurementContext))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        let bit = |n: u8| flags & (1 << n) != 0;
        let sequence_number = r.u16("sequence number")?;
        let at = r.pos();
        let extended_flags = bit(7).then(|| r.u8("extended flags")).transpose()?;
        reject_reserved(
            extended_flags.unwrap_or(0).into(),
            0xFF,
            at,
            "extended flags",
        )?;
        let carbohydrate = bit(0)
            .then(|| {
                Ok::<_, Fault>(Carbohydrate {
                    id: r.u8("carbohydrate id")?,
                    amount_kg: r.sfloat("carbohydrate")?,
                })
            })
            .transpose()?;
        let meal = bit(1).then(|| r.u8("meal")).transpose()?;
        let tester_health = bit(2)
            .then(|| {
                r.u8("tester and health").map(|b| TesterHealth {
                    tester: b & 0x0F,
                    health: b >> 4,
                })
            })
            .transpose()?;
        let exercise = bit(3)
            .then(|| {
                Ok::<_, Fault>(Exercise {
                    duration_s: r.u16("exercise duration")?,
                    intensity_percent: r.u8("exercise intensity")?,
                })
            })
            .transpose()?;
        let medication = bit(4)
            .then(|| {
                Ok::<_, Fault>(Medication {
                    id: r.u8("medication id")?,
                    amount: r.sfloat("medication")?,
                })
            })
            .transpose()?;
        let hba1c = bit(6).then(|| r.sfloat("hba1c")).transpose()?;
        r.finish()?;
        Ok(GlucoseMeasurementContext {
            sequence_number,
            extended_flags,
            carbohydrate,
            meal,
            tester_health,
            exercise,
            medication,
            medication_unit: if bit(5) {
                MedicationUnit::Litres
            } else {
                MedicationUnit::Kilograms
            },
            hba1c,
        })
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.carbohydrate.is_some())
            | u8::from(self.meal.is_some()) << 1
            | u8::from(self.tester_health.is_some()) << 2
            | u8::from(self.exercise.is_some()) << 3
            | u8::from(self.medication.is_some()) << 4
            | u8::from(self.medication_unit == MedicationUnit::Litres) << 5
            | u8::from(self.hba1c.is_some()) << 6
            | u8::from(self.extended_flags.is_some()) << 7
    }

    /// Encodes; flags follow from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.put_u8(self.flags());
        out.put_u16(self.sequence_number);
        if let Some(x) = self.extended_flags {
            out.put_u8(x);
        }
        if let Some(c) = self.carbohydrate {
            out.put_u8(c.id);
            out.put_sfloat(c.amount_kg);
        }
        if let Some(m) = self.meal {
            out.put_u8(m);
        }
        if let Some(t) = self.tester_health {
            out.put_u8((t.tester & 0x0F) | t.health << 4);
        }
        if let Some(e) = self.exercise {
            out.put_u16(e.duration_s);
            out.put_u8(e.intensity_percent);
        }
        if let Some(m) = self.medication {
            out.put_u8(m.id);
            out.put_sfloat(m.amount);
        }
        if let Some(h) = self.hba1c {
            out.put_sfloat(h);
        }
        out
    }

    /// Adds this context to `m` as annotations (`meal`, `carbohydrate_id`,
    /// `carbohydrate_g`, `tester`, `health`, `exercise_duration_s`,
    /// `exercise_intensity_percent`, `medication_id`, `medication`,
    /// `hba1c_percent`), if `m` is the record with the same sequence number;
    /// returns whether it was.
    pub fn apply_to(&self, m: &mut DecodedMeasurement) -> bool {
        if m.sequence != Some(u64::from(self.sequence_number)) {
            return false;
        }
        let a = &mut m.annotations;
        if let Some(c) = self.carbohydrate {
            a.insert("carbohydrate_id".into(), table_name(&CARB_NAMES, c.id));
            a.insert("carbohydrate_g".into(), scaled_text(c.amount_kg, 3));
        }
        if let Some(meal) = self.meal {
            a.insert("meal".into(), table_name(&MEAL_NAMES, meal));
        }
        if let Some(t) = self.tester_health {
            a.insert("tester".into(), table_name(&TESTER_NAMES, t.tester));
            a.insert("health".into(), table_name(&HEALTH_NAMES, t.health));
        }
        if let Some(e) = self.exercise {
            let d = if e.duration_s == 0xFFFF {
                "overrun".to_string()
            } else {
                e.duration_s.to_string()
            };
            a.insert("exercise_duration_s".into(), d);
            a.insert(
                "exercise_intensity_percent".into(),
                e.intensity_percent.to_string(),
            );
        }
        if let Some(med) = self.medication {
            a.insert(
                "medication_id".into(),
                table_name(&MEDICATION_NAMES, med.id),
            );
            let text = match self.medication_unit {
                MedicationUnit::Kilograms => format!("{} mg", scaled_text(med.amount, 6)),
                MedicationUnit::Litres => format!("{} mL", scaled_text(med.amount, 3)),
            };
            a.insert("medication".into(), text);
        }
        if let Some(h) = self.hba1c {
            a.insert("hba1c_percent".into(), scaled_text(h, 0));
        }
        true
    }
}

fn scaled_text(v: Sfloat, pow10: i32) -> String {
    match v.to_raw_value_scaled(pow10) {
        crate::decoded::RawValue::Number(n) => n.to_string(),
        crate::decoded::RawValue::Special(s) => s.to_string(),
    }
}

/// Merges a context into the measurement with the same sequence number
/// (contexts arrive right after their record, but a gateway collecting a
/// whole RACP transfer may apply them afterwards). Returns `false` when no
/// measurement matches, so the caller can keep the context for later.
pub fn merge_context(
    measurements: &mut [DecodedMeasurement],
    context: &GlucoseMeasurementContext,
) -> bool {
    measurements.iter_mut().any(|m| context.apply_to(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoded::{DeviceTime, RawValue};
    use crate::gatt::error::GattErrorKind;

    const VECTOR: [u8; 15] = [
        0x03, 0x2A, 0x00, 0xE8, 0x07, 0x03, 0x0F, 0x07, 0x1E, 0x00, 0x00, 0x00, 0x5A, 0xB0, 0x11,
    ];

    #[test]
    fn computed_vector() {
        let m = GlucoseMeasurement::decode(&VECTOR).unwrap();
        assert_eq!(m.sequence_number, 42);
        assert_eq!(m.time_offset_minutes, Some(0));
        let c = m.concentration.unwrap();
        assert_eq!(c.value.to_f64(), Some(0.0009));
        assert_eq!(
            (c.sample_type, c.sample_location),
            (GlucoseType::CapillaryWholeBlood, SampleLocation::Finger)
        );
        assert_eq!(m.encode(), VECTOR);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[0].value, RawValue::Number(90.0));
        assert_eq!(d.components[0].unit.as_deref(), Some("mg/dL"));
        assert_eq!(d.sequence, Some(42));
        assert_eq!(d.not_clinical, None);
        assert_eq!(d.annotations["glucose_type"], "capillary_whole_blood");
        assert_eq!(d.annotations["sample_location"], "finger");
    }

    #[test]
    fn offset_units_and_status() {
        let mut m = GlucoseMeasurement::decode(&VECTOR).unwrap();
        m.time_offset_minutes = Some(-90);
        m.unit = ConcentrationUnit::MolPerL;
        m.concentration = Some(GlucoseConcentration {
            value: Sfloat::from_decimal(55, -4).unwrap(),
            sample_type: GlucoseType::CapillaryPlasma,
            sample_location: SampleLocation::Finger,
        });
        m.sensor_status = Some(SensorStatus(
            SensorStatus::RESULT_TOO_HIGH | SensorStatus::BATTERY_LOW,
        ));
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[0].value, RawValue::Number(5.5));
        assert_eq!(d.components[0].unit.as_deref(), Some("mmol/L"));
        let t = d.time.unwrap();
        assert_eq!(
            t,
            DeviceTime::Local(
                chrono::NaiveDate::from_ymd_opt(2024, 3, 15)
                    .and_then(|d| d.and_hms_opt(6, 0, 0))
                    .unwrap()
            )
        );
        assert_eq!(d.annotations["out_of_device_range"], "above");
        assert!(d
            .not_clinical
            .as_deref()
            .unwrap_or_default()
            .contains("result_higher_than_device_can_process"));
        assert_eq!(GlucoseMeasurement::decode(&m.encode()).unwrap(), m);
        // Bit 6 is "lower", not "higher" (Nordic has them swapped).
        m.sensor_status = Some(SensorStatus(0x0040));
        assert_eq!(
            m.to_measurements()[0].annotations["out_of_device_range"],
            "below"
        );
        // Battery low alone is not a reason to drop the value.
        m.sensor_status = Some(SensorStatus(
            SensorStatus::BATTERY_LOW | SensorStatus::TIME_FAULT,
        ));
        assert_eq!(m.to_measurements()[0].not_clinical, None);
    }

    #[test]
    fn control_solution() {
        let mut bytes = VECTOR;
        bytes[14] = 0x4A; // type 10, location 4
        let d = &GlucoseMeasurement::decode(&bytes)
            .unwrap()
            .to_measurements()[0];
        assert_eq!(d.not_clinical.as_deref(), Some("control solution test"));
        bytes[14] = 0x41; // location 4 only
        assert!(GlucoseMeasurement::decode(&bytes)
            .unwrap()
            .to_measurements()[0]
            .not_clinical
            .is_some());
    }

    #[test]
    fn malformed() {
        let e = GlucoseMeasurement::decode(&[0x20, 1, 0, 0xE8, 7, 1, 1, 0, 0, 0]).unwrap_err();
        assert!(matches!(e.kind, GattErrorKind::ReservedBits { .. }));
        assert_eq!(
            GlucoseMeasurement::decode(&VECTOR[..14])
                .unwrap_err()
                .offset,
            14
        );
        assert_eq!(
            GlucoseMeasurement::decode(&VECTOR[..13])
                .unwrap_err()
                .offset,
            12
        );
    }

    #[test]
    fn context_merges_by_sequence() {
        // Nordic test byte 0x12: tester = HCP (low nibble 2), health = minor (high nibble 1).
        let bytes = [
            0x5F, 0x2A, 0x00, 0x01, 0x32, 0xD0, 0x02, 0x12, 0x2C, 0x01, 0x32, 0x02, 0x05, 0xA0,
            0x41, 0xF0,
        ];
        let ctx = GlucoseMeasurementContext::decode(&bytes).unwrap();
        assert_eq!(ctx.sequence_number, 42);
        assert_eq!(
            ctx.tester_health,
            Some(TesterHealth {
                tester: 2,
                health: 1
            })
        );
        assert_eq!(ctx.encode(), bytes);
        let mut ms = GlucoseMeasurement::decode(&VECTOR)
            .unwrap()
            .to_measurements();
        assert!(merge_context(&mut ms, &ctx));
        let a = &ms[0].annotations;
        assert_eq!(a["meal"], "postprandial");
        assert_eq!(a["tester"], "health_care_professional");
        assert_eq!(a["health"], "minor_health_issues");
        assert_eq!(a["carbohydrate_id"], "breakfast");
        assert_eq!(a["carbohydrate_g"], "50");
        assert_eq!(a["exercise_duration_s"], "300");
        assert_eq!(a["medication_id"], "short_acting_insulin");
        assert_eq!(a["medication"], "5 mg");
        assert_eq!(a["hba1c_percent"], "6.5");
        let other = GlucoseMeasurementContext {
            sequence_number: 7,
            ..ctx
        };
        assert!(!merge_context(&mut ms, &other));
        assert!(
            GlucoseMeasurementContext::decode(&[0x80, 1, 0, 1]).is_err(),
            "non-zero extended flags"
        );
        assert!(GlucoseMeasurementContext::decode(&[0x80, 1, 0, 0]).is_ok());
    }
}
