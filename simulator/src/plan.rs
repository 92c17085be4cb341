//! What a scenario sends, and when: every reading with its true measurement
//! time, the device quirks that change how it travels, and the publishes a
//! transport has to make.
//!
//! Two clocks matter and are kept apart. `Emission::at` in
//! [`Planned::emission`] is the **true** measured-at time (ground truth).
//! What goes on the wire is [`Planned::wire_emission`], whose `at` is what
//! the device's own clock said (different under [`Quirk::ClockSkew`]). When
//! it goes is each [`Outgoing::send_at`] (simulated time; map it to wall
//! time with [`crate::schedule::Schedule`]).

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::emission::Emission;
use crate::payload::WireFormat;

/// Identity of one planned reading within a scenario run: its index in
/// measurement order. Both copies of a duplicated publish share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EmissionId(pub u64);

impl fmt::Display for EmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A way a real device misbehaves in transit, applied on demand by a
/// scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "quirk")]
pub enum Quirk {
    /// The same reading is published `copies` times (a QoS 1 redelivery, a
    /// scale re-advertising its last record), `gap_seconds` apart.
    Duplicate {
        /// Total publishes (≥ 2).
        copies: u32,
        /// Spacing between copies.
        gap_seconds: u32,
    },
    /// Held back and delivered just after the device's next reading.
    OutOfOrder,
    /// The device's clock is off by `minutes`: the payload's timestamp is the
    /// true time plus this.
    ClockSkew {
        /// Device clock minus true time, minutes.
        minutes: i64,
    },
    /// The device was offline when it measured; the reading was stored and
    /// sent in a burst with the others when the link came back.
    StoredBurst {
        /// When the link came back (simulated time).
        reconnect_at: DateTime<Utc>,
    },
    /// Delivered before, and sent again when the device dumped its whole
    /// memory on reconnect (the gateway stores it once).
    MemoryDump {
        /// When the link came back (simulated time).
        reconnect_at: DateTime<Utc>,
    },
}

/// One reading of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// Identity within the run.
    pub id: EmissionId,
    /// The reading with its true measured-at time.
    pub emission: Emission,
    /// Wire format of the device.
    pub format: WireFormat,
    /// Quirks applied to this reading.
    pub quirks: Vec<Quirk>,
    /// Simulated times at which it is published (more than one for a
    /// duplicate), ascending.
    pub sends: Vec<DateTime<Utc>>,
}

impl Planned {
    /// The device clock's offset from true time for this reading.
    pub fn clock_skew(&self) -> TimeDelta {
        self.quirks
            .iter()
            .map(|q| match q {
                Quirk::ClockSkew { minutes } => TimeDelta::minutes(*minutes),
                _ => TimeDelta::zero(),
            })
            .fold(TimeDelta::zero(), |a, b| a + b)
    }

    /// The timestamp the device puts in the payload.
    pub fn device_time(&self) -> DateTime<Utc> {
        self.emission.at + self.clock_skew()
    }

    /// The emission to encode: as measured, but stamped with the device's
    /// clock. Pass this to [`crate::payload::encode`].
    pub fn wire_emission(&self) -> Emission {
        let mut e = self.emission.clone();
        e.at = self.device_time();
        e
    }

    /// Whether this reading carries an injected fault (the gateway must
    /// quarantine it rather than store it).
    pub fn is_fault(&self) -> bool {
        self.emission.fault.is_some()
    }

    /// Whether a quirk of this kind applies.
    pub fn has_quirk(&self, pred: impl Fn(&Quirk) -> bool) -> bool {
        self.quirks.iter().any(pred)
    }
}

/// One publish a transport must make.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The reading.
    pub id: EmissionId,
    /// 0 for the first publish, 1.. for duplicates.
    pub copy: u32,
    /// When to publish (simulated time).
    pub send_at: DateTime<Utc>,
    /// True measured-at time (ground truth, not on the wire).
    pub measured_at: DateTime<Utc>,
    /// What to encode (device-clock timestamp).
    pub emission: Emission,
    /// Wire format.
    pub format: WireFormat,
}

/// Everything a scenario run produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Simulated start.
    pub start: DateTime<Utc>,
    /// Simulated end (exclusive).
    pub end: DateTime<Utc>,
    /// Every reading, in measurement order (`id` = index).
    pub readings: Vec<Planned>,
}

impl Plan {
    /// The reading with `id`.
    pub fn get(&self, id: EmissionId) -> Option<&Planned> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.readings.get(i))
            .filter(|p| p.id == id)
    }

    /// Every reading's emission (true time), in measurement order, each once.
    pub fn emissions(&self) -> Vec<Emission> {
        self.readings.iter().map(|p| p.emission.clone()).collect()
    }

    /// Every publish, in send order (ties broken by id, then copy), so a
    /// transport just walks the list, waiting until each `send_at`.
    pub fn outgoing(&self) -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = self
            .readings
            .iter()
            .flat_map(|p| {
                let wire = p.wire_emission();
                p.sends.iter().enumerate().map(move |(i, s)| Outgoing {
                    id: p.id,
                    copy: i as u32,
                    send_at: *s,
                    measured_at: p.emission.at,
                    emission: wire.clone(),
                    format: p.format,
                })
            })
            .collect();
        out.sort_by_key(|o| (o.send_at, o.id, o.copy));
        out
    }

    /// Readings a correct gateway stores: all but the faulty ones, each once.
    pub fn expected_stored(&self) -> impl Iterator<Item = &Planned> {
        self.readings.iter().filter(|p| !p.is_fault())
    }
}
