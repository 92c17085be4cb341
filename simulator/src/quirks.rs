//! Device quirks on demand: `rpm-sim run --quirks duplicate,out-of-order,skew,burst`
//! adds, to every device of a scenario, one occurrence of each requested
//! quirk at a seeded time, as scenario events (the same ones a scenario file
//! can state), so the plan, the sent-report and the tests treat them alike.
//!
//! The quirks are chosen not to change the ground truth: duplicates and
//! reordering change nothing a correct gateway stores; a skew is a slow
//! clock of 5–30 minutes (ahead would be refused as future time near the
//! present); a burst holds readings back for 18–30 hours (a hub offline for
//! a day, so even a once-a-day device has something stored) and sends them
//! late.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::patient::TimeOfDay;
use crate::physiology::derive_seed;
use crate::scenario::{ClockSkewQuirk, DuplicateQuirk, OfflineQuirk, OutOfOrderQuirk, Scenario};

/// A quirk that can be requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuirkKind {
    /// A reading published 2–3 times.
    Duplicate,
    /// A reading delivered after the device's next one.
    OutOfOrder,
    /// The device clock 5–30 minutes slow, for the whole run.
    Skew,
    /// 18–30 hours offline, then the stored readings in a burst.
    Burst,
}

impl QuirkKind {
    /// Every kind.
    pub const ALL: [QuirkKind; 4] = [
        QuirkKind::Duplicate,
        QuirkKind::OutOfOrder,
        QuirkKind::Skew,
        QuirkKind::Burst,
    ];

    /// Command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            QuirkKind::Duplicate => "duplicate",
            QuirkKind::OutOfOrder => "out-of-order",
            QuirkKind::Skew => "skew",
            QuirkKind::Burst => "burst",
        }
    }
}

impl fmt::Display for QuirkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuirkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().replace('_', "-");
        QuirkKind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                format!(
                    "unknown quirk `{s}` (known: {})",
                    QuirkKind::ALL.map(QuirkKind::name).join(", ")
                )
            })
    }
}

fn time_of_day(rng: &mut ChaCha8Rng) -> TimeOfDay {
    // Daytime, away from midnight: a skewed or late reading stays on its day.
    TimeOfDay::hm(rng.random_range(6..=20), rng.random_range(0..60)).unwrap_or_default()
}

/// The scenario with one occurrence of each of `kinds` added to every
/// device, at times derived from `seed` (same seed, same quirks).
pub fn inject(s: &Scenario, kinds: &[QuirkKind], seed: u64) -> Scenario {
    let mut out = s.clone();
    let ev = &mut out.events;
    for p in &s.patients {
        for d in &p.devices {
            for k in kinds {
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                    seed,
                    &[b"quirk", d.id.as_bytes(), k.name().as_bytes()],
                ));
                // Not in the last two days: the quirk applies to the first
                // reading after its moment (and out-of-order needs the one
                // after that).
                let day = rng.random_range(0..s.days.saturating_sub(2).max(1));
                let at = time_of_day(&mut rng);
                let device = d.id.clone();
                match k {
                    QuirkKind::Duplicate => ev.duplicate.push(DuplicateQuirk {
                        device,
                        day,
                        at,
                        copies: rng.random_range(2..=3),
                        gap_seconds: 2,
                    }),
                    QuirkKind::OutOfOrder => {
                        ev.out_of_order.push(OutOfOrderQuirk { device, day, at })
                    }
                    QuirkKind::Skew => {
                        if !ev.clock_skew.iter().any(|q| q.device == device) {
                            ev.clock_skew.push(ClockSkewQuirk {
                                device,
                                day: 0,
                                at: TimeOfDay::default(),
                                minutes: -rng.random_range(5..=30),
                                hours: None,
                            });
                        }
                    }
                    QuirkKind::Burst => ev.offline.push(OfflineQuirk {
                        device,
                        day,
                        at,
                        hours: f64::from(rng.random_range(18..=30u32)),
                        gap_seconds: 1.0,
                        memory_dump: false,
                    }),
                }
            }
        }
    }
    out
}

/// Parses `duplicate,out-of-order,...` (or `all`).
pub fn parse_list(s: &str) -> Result<Vec<QuirkKind>, String> {
    if s.trim() == "all" {
        return Ok(QuirkKind::ALL.to_vec());
    }
    let mut v: Vec<QuirkKind> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Quirk;

    fn demo() -> Scenario {
        Scenario::bundled("fever").unwrap()
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_list("all").unwrap(), QuirkKind::ALL.to_vec());
        assert_eq!(
            parse_list("skew,duplicate,skew").unwrap(),
            vec![QuirkKind::Duplicate, QuirkKind::Skew]
        );
        assert_eq!(
            parse_list("out_of_order").unwrap(),
            vec![QuirkKind::OutOfOrder]
        );
        assert!(parse_list("teleport").is_err());
    }

    /// Each quirk shows in the plan of every device, deterministically.
    #[test]
    fn each_quirk_reaches_every_device() {
        let s = demo();
        let plain = s.plan();
        for k in QuirkKind::ALL {
            let q = inject(&s, &[k], 42);
            assert_eq!(
                q.plan(),
                inject(&s, &[k], 42).plan(),
                "{k}: same seed, same plan"
            );
            let plan = q.plan();
            for p in &s.patients {
                for d in &p.devices {
                    let mine: Vec<_> = plan
                        .readings
                        .iter()
                        .filter(|r| r.emission.device_id == d.id)
                        .collect();
                    let hit = mine.iter().any(|r| match k {
                        QuirkKind::Duplicate => r.sends.len() >= 2,
                        QuirkKind::OutOfOrder => r.has_quirk(|q| *q == Quirk::OutOfOrder),
                        QuirkKind::Skew => r.clock_skew().num_minutes() <= -5,
                        QuirkKind::Burst => r.has_quirk(|q| matches!(q, Quirk::StoredBurst { .. })),
                    });
                    // A device silent at the chosen moment (non-adherence,
                    // no reading after it) may miss a quirk; most must not.
                    if !hit {
                        assert!(
                            mine.len() < 3,
                            "{k}: device {} has {} readings and no quirk",
                            d.id,
                            mine.len()
                        );
                    }
                }
            }
            // Same readings, same measured times: quirks change transit only.
            assert_eq!(plan.emissions(), plain.emissions(), "{k}");
        }
    }

    #[test]
    fn out_of_order_really_reorders_and_burst_is_late() {
        let s = inject(&demo(), &[QuirkKind::OutOfOrder, QuirkKind::Burst], 7);
        let plan = s.plan();
        let out = plan.outgoing();
        let reordered = out.windows(2).any(|w| {
            w[0].emission.device_id == w[1].emission.device_id
                && w[0].measured_at > w[1].measured_at
        });
        assert!(reordered);
        for r in &plan.readings {
            for q in &r.quirks {
                if let Quirk::StoredBurst { reconnect_at } = q {
                    assert!(r.sends[0] >= *reconnect_at && r.emission.at < *reconnect_at);
                }
            }
        }
    }
}
