//! Date Time 0x2A08 and Current Time 0x2A2B (domain.md §1.11).
//!
//! Date Time has no time zone: it is the device's wall clock, so it becomes
//! [`DeviceTime::Local`] and the gateway applies the configured offset. Year,
//! month and day 0 mean "not known"; such a time is kept (so re-encoding is
//! exact) but yields no instant. Values outside the defined ranges are
//! rejected rather than clamped: a clock that says 25:61 is not a clock we
//! can put a measurement on.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike, Weekday};

use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::reader::{Put, Reader};
use crate::decoded::DeviceTime;

/// Date Time 0x2A08: device-local wall time, 7 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// 1582..=9999, or 0 = not known.
    pub year: u16,
    /// 1..=12, or 0 = not known.
    pub month: u8,
    /// 1..=31, or 0 = not known.
    pub day: u8,
    /// 0..=23.
    pub hours: u8,
    /// 0..=59.
    pub minutes: u8,
    /// 0..=59.
    pub seconds: u8,
}

impl DateTime {
    /// Encoded length in bytes.
    pub const LEN: usize = 7;

    /// Decodes exactly 7 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        let mut r = Reader::new(bytes);
        let t = DateTime::read(&mut r).and_then(|t| r.finish().map(|()| t));
        t.map_err(|f| f.at(Characteristic::DateTime))
    }

    /// Encodes to 7 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.write(&mut out);
        out
    }

    /// Reads and validates a Date Time embedded in another characteristic.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Fault> {
        let start = r.pos();
        let year = r.u16("date time year")?;
        let month = r.u8("date time month")?;
        let day = r.u8("date time day")?;
        let hours = r.u8("date time hours")?;
        let minutes = r.u8("date time minutes")?;
        let seconds = r.u8("date time seconds")?;
        let t = DateTime {
            year,
            month,
            day,
            hours,
            minutes,
            seconds,
        };
        t.validate(start)?;
        Ok(t)
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.put_u16(self.year);
        out.extend_from_slice(&[self.month, self.day, self.hours, self.minutes, self.seconds]);
    }

    fn validate(&self, start: usize) -> Result<(), Fault> {
        let range =
            |ok: bool, off: usize, field: &'static str, value: i64, expected: &'static str| {
                if ok {
                    Ok(())
                } else {
                    Err(Fault::new(
                        start + off,
                        GattErrorKind::OutOfRange {
                            field,
                            value,
                            expected,
                        },
                    ))
                }
            };
        let y = self.year;
        range(
            y == 0 || (1582..=9999).contains(&y),
            0,
            "year",
            y.into(),
            "0 or 1582..=9999",
        )?;
        range(self.month <= 12, 2, "month", self.month.into(), "0..=12")?;
        range(self.day <= 31, 3, "day", self.day.into(), "0..=31")?;
        range(self.hours <= 23, 4, "hours", self.hours.into(), "0..=23")?;
        range(
            self.minutes <= 59,
            5,
            "minutes",
            self.minutes.into(),
            "0..=59",
        )?;
        range(
            self.seconds <= 59,
            6,
            "seconds",
            self.seconds.into(),
            "0..=59",
        )?;
        if self.is_date_known() && self.naive_date().is_none() {
            // All parts known and in range, but no such day (30 February).
            return range(
                false,
                3,
                "day",
                self.day.into(),
                "a day that exists in that month",
            );
        }
        Ok(())
    }

    /// True when year, month and day are all known (non-zero).
    pub fn is_date_known(&self) -> bool {
        self.year != 0 && self.month != 0 && self.day != 0
    }

    fn naive_date(&self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(
            i32::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }

    /// The wall time, or `None` when the date is not known.
    pub fn to_naive(&self) -> Option<NaiveDateTime> {
        if !self.is_date_known() {
            return None;
        }
        self.naive_date()?.and_hms_opt(
            u32::from(self.hours),
            u32::from(self.minutes),
            u32::from(self.seconds),
        )
    }

    /// As the shared model's time: device-local, no zone.
    pub fn to_device_time(&self) -> Option<DeviceTime> {
        self.to_naive().map(DeviceTime::Local)
    }

    /// From a wall time (sub-second part dropped); `None` outside 1582..=9999.
    pub fn from_naive(t: NaiveDateTime) -> Option<Self> {
        let year = u16::try_from(t.year())
            .ok()
            .filter(|y| (1582..=9999).contains(y))?;
        Some(DateTime {
            year,
            month: t.month() as u8,
            day: t.day() as u8,
            hours: t.hour() as u8,
            minutes: t.minute() as u8,
            seconds: t.second() as u8,
        })
    }
}

/// Current Time 0x2A2B: Exact Time 256 (Date Time, Day of Week,
/// Fractions256) and Adjust Reason, 10 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CurrentTime {
    /// Date and time.
    pub date_time: DateTime,
    /// 1 = Monday … 7 = Sunday, 0 = not known.
    pub day_of_week: u8,
    /// 1/256 s.
    pub fractions256: u8,
    /// Adjust Reason bits: 0 manual update, 1 external reference, 2 time-zone
    /// change, 3 DST change. Bits 4-7 are RFU; they describe, not lay out,
    /// so they are kept as sent and not rejected.
    pub adjust_reason: u8,
}

impl CurrentTime {
    /// Encoded length in bytes.
    pub const LEN: usize = 10;

    /// Decodes exactly 10 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::CurrentTime))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let date_time = DateTime::read(&mut r)?;
        let at = r.pos();
        let day_of_week = r.u8("day of week")?;
        if day_of_week > 7 {
            return Err(Fault::new(
                at,
                GattErrorKind::OutOfRange {
                    field: "day of week",
                    value: day_of_week.into(),
                    expected: "0..=7",
                },
            ));
        }
        let fractions256 = r.u8("fractions256")?;
        let adjust_reason = r.u8("adjust reason")?;
        r.finish()?;
        Ok(CurrentTime {
            date_time,
            day_of_week,
            fractions256,
            adjust_reason,
        })
    }

    /// Encodes to 10 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.date_time.write(&mut out);
        out.extend_from_slice(&[self.day_of_week, self.fractions256, self.adjust_reason]);
        out
    }

    /// The weekday, when known.
    pub fn weekday(&self) -> Option<Weekday> {
        match self.day_of_week {
            1 => Some(Weekday::Mon),
            2 => Some(Weekday::Tue),
            3 => Some(Weekday::Wed),
            4 => Some(Weekday::Thu),
            5 => Some(Weekday::Fri),
            6 => Some(Weekday::Sat),
            7 => Some(Weekday::Sun),
            _ => None,
        }
    }

    /// The value a gateway writes to set a device's clock (CTS write is
    /// optional for servers and may be refused, domain.md §5.2): the wall
    /// time with its weekday, fractions from the sub-second part, and adjust
    /// reason "manual time update" plus "external reference".
    pub fn from_naive(t: NaiveDateTime) -> Option<Self> {
        Some(CurrentTime {
            date_time: DateTime::from_naive(t)?,
            day_of_week: t.weekday().number_from_monday() as u8,
            fractions256: (u64::from(t.nanosecond().min(999_999_999)) * 256 / 1_000_000_000) as u8,
            adjust_reason: 0b11,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_unknown_date() {
        let t = DateTime::decode(&[0, 0, 0, 0, 0x12, 0x1A, 0x20]).unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hours, t.minutes, t.seconds),
            (0, 0, 0, 18, 26, 32)
        );
        assert_eq!(t.to_device_time(), None);
        assert_eq!(t.encode(), vec![0, 0, 0, 0, 0x12, 0x1A, 0x20]);
    }

    #[test]
    fn date_time_ranges() {
        let ok = DateTime::decode(&[0xE8, 0x07, 2, 29, 23, 59, 59]).unwrap();
        assert_eq!(
            ok.to_naive().map(|t| t.to_string()).as_deref(),
            Some("2024-02-29 23:59:59")
        );
        let e = DateTime::decode(&[0xE8, 0x07, 2, 30, 0, 0, 0]).unwrap_err();
        assert_eq!(e.offset, 3);
        assert_eq!(
            DateTime::decode(&[0xE8, 0x07, 13, 1, 0, 0, 0])
                .unwrap_err()
                .offset,
            2
        );
        assert_eq!(
            DateTime::decode(&[0xE8, 0x07, 1, 1, 24, 0, 0])
                .unwrap_err()
                .offset,
            4
        );
        assert_eq!(
            DateTime::decode(&[0xE8, 0x07, 1, 1, 0, 60, 0])
                .unwrap_err()
                .offset,
            5
        );
        assert_eq!(
            DateTime::decode(&[0x2D, 0x06, 1, 1, 0, 0, 0])
                .unwrap_err()
                .offset,
            0,
            "year 1581"
        );
        assert!(DateTime::decode(&[0xE8, 0x07, 1, 1, 0, 0]).is_err());
        assert!(DateTime::decode(&[0xE8, 0x07, 1, 1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn current_time() {
        let bytes = [0xE9, 0x07, 0x01, 0x0F, 0x0E, 0x1E, 0x2D, 0x03, 0x21, 0x01];
        let t = CurrentTime::decode(&bytes).unwrap();
        assert_eq!(
            t.date_time.to_naive().map(|t| t.to_string()).as_deref(),
            Some("2025-01-15 14:30:45")
        );
        assert_eq!(t.weekday(), Some(Weekday::Wed));
        assert_eq!((t.fractions256, t.adjust_reason), (33, 1));
        assert_eq!(t.encode(), bytes);
        let mut bad = bytes;
        bad[7] = 8;
        assert_eq!(CurrentTime::decode(&bad).unwrap_err().offset, 7);
        let now =
            NaiveDate::from_ymd_opt(2025, 1, 15).and_then(|d| d.and_hms_milli_opt(14, 30, 45, 500));
        let ct = now.and_then(CurrentTime::from_naive).unwrap();
        assert_eq!((ct.day_of_week, ct.fractions256), (3, 128));
    }
}
