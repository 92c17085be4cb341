//! Scenario runs (`rpm-sim run`): prepare a scenario for a live run (seed,
//! start date, quirks and faults on demand), play it through a transport in
//! accelerated time, and report what was sent and which alerts a correct
//! gateway must raise, with absolute time windows.
//!
//! The report (`--report FILE`, JSON) is what an end-to-end test compares
//! the gateway's store with: every `expected` reading stored exactly once,
//! every `faulty` one quarantined, every expected alert raised in its window.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::care::{Acted, CareApi};
use crate::emission::Fault;
use crate::plan::Planned;
use crate::quirks::QuirkKind;
use crate::report::SentReport;
use crate::scenario::{ExpectedReport, ExpectedTask, RuleId, Scenario};
use crate::schedule::{BadSpeed, Schedule};
use crate::transport::{play, Transport};

/// Where a live run puts day 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Move the scenario so its last day ends at today's midnight UTC:
    /// every reading is recent, none in the future (the default: a gateway
    /// refuses readings older than its `max_age`).
    #[default]
    Today,
    /// The start date written in the scenario file (reproducible bytes).
    File,
    /// This date.
    Date(NaiveDate),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "today" => Ok(StartAt::Today),
            "file" => Ok(StartAt::File),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(StartAt::Date)
                .map_err(|_| format!("`{s}`: expected today, file or YYYY-MM-DD")),
        }
    }
}

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Simulated seconds per wall second (the scenario's own when `None`).
    pub speed: Option<f64>,
    /// Seed (the scenario's own when `None`).
    pub seed: Option<u64>,
    /// Day 0.
    pub start: StartAt,
    /// Only the first N days.
    pub days: Option<u32>,
    /// Quirks added to every device.
    pub quirks: Vec<QuirkKind>,
    /// Faulty messages added.
    pub faults: Vec<Fault>,
}

/// The scenario as it will be played.
pub fn prepare(s: &Scenario, o: &RunOptions, now: DateTime<Utc>) -> Scenario {
    let mut s = match o.seed {
        Some(seed) => s.with_seed(seed),
        None => s.clone(),
    };
    if let Some(d) = o.days {
        s = s.truncated(d);
    }
    s = match o.start {
        StartAt::File => s,
        StartAt::Today => s.ending_today(now),
        StartAt::Date(d) => s
            .with_start(d.and_time(NaiveTime::MIN).and_utc())
            .unwrap_or(s),
    };
    if !o.quirks.is_empty() {
        s = crate::quirks::inject(&s, &o.quirks, s.seed);
    }
    if !o.faults.is_empty() {
        s = crate::faults::inject(&s, &o.faults, s.seed);
    }
    s
}

/// One expected alert with its absolute window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertWindow {
    /// The scenario's rule id.
    pub rule: RuleId,
    /// The gateway's bundled rule id, if a bundled rule implements it.
    pub pack_rule: Option<String>,
    /// Patient.
    pub patient: String,
    /// Window start (inclusive): the triggering time falls in `[from, until)`.
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub until: DateTime<Utc>,
    /// Why the scenario expects this alert, for the reader of a failed check.
    pub note: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Transport used.
    pub transport: String,
    /// Simulated start (day 0).
    pub start: DateTime<Utc>,
    /// Days played.
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// Speed factor.
    pub speed: f64,
    /// Wall seconds the run took.
    pub wall_seconds: f64,
    /// Device → patient, for registering the kit.
    pub devices: Vec<(String, String)>,
    /// Ground truth.
    pub expected_alerts: Vec<AlertWindow>,
    /// Publishes not acknowledged at the end (MQTT), if any.
    pub unacknowledged: Option<String>,
    /// Every publish.
    pub sent: SentReport,
    /// Readings left out because the transport has no form for them, per
    /// device id (over BLE: oximeters, thermometers, payload faults).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
    /// Device id → BLE address, the device id the gateway stores (BLE runs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ble_addresses: BTreeMap<String, String>,
    /// What the scenario's care team did (runs given a care API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub care_actions: Vec<Acted>,
    /// The scenario's ground truth of follow-up tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_tasks: Vec<ExpectedTask>,
    /// The scenario's ground truth of the RPM program report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_reports: Vec<ExpectedReport>,
}

impl RunReport {
    /// True when every planned publish went out and was acknowledged.
    pub fn complete(&self) -> bool {
        self.unacknowledged.is_none() && self.sent.failures().is_empty()
    }
}

/// The expected alerts of `s` with absolute windows.
pub fn alert_windows(s: &Scenario) -> Vec<AlertWindow> {
    s.expected_alerts()
        .iter()
        .map(|e| {
            let (from, until) = e.window(s.start);
            AlertWindow {
                rule: e.rule,
                pack_rule: e.rule.pack_rule().map(str::to_string),
                patient: e.patient.clone(),
                from,
                until,
                note: e.note.clone(),
            }
        })
        .collect()
}

/// Plays a prepared scenario through `transport` at `speed` (the
/// scenario's own when `None`), then closes the transport, waiting up to
/// `close_timeout` for acknowledgements.
pub async fn run<T: Transport>(
    s: &Scenario,
    speed: Option<f64>,
    transport: T,
    close_timeout: Duration,
) -> Result<RunReport, BadSpeed> {
    run_only(s, speed, transport, close_timeout, None, |_| true).await
}

/// [`run`], playing only the readings `carries` accepts (a transport's
/// kinds); the others are counted in [`RunReport::skipped`]. With `care`,
/// the scenario's care team acts on follow-up tasks through that API on
/// the same schedule ([`crate::care`]).
pub async fn run_only<T: Transport>(
    s: &Scenario,
    speed: Option<f64>,
    mut transport: T,
    close_timeout: Duration,
    care: Option<&CareApi>,
    carries: impl Fn(&Planned) -> bool,
) -> Result<RunReport, BadSpeed> {
    let schedule = match speed {
        Some(x) => Schedule::new(s.start, x)?,
        None => s.schedule(),
    };
    let mut plan = s.plan();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    plan.readings.retain(|p| {
        let keep = carries(p);
        if !keep {
            *skipped.entry(p.emission.device_id.clone()).or_default() += 1;
        }
        keep
    });
    let mut sent = SentReport::new();
    let name = transport.name().to_string();
    let t0 = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let team = async {
        match care {
            Some(api) => crate::care::act(s, &schedule, api, started).await,
            None => Vec::new(),
        }
    };
    let ((), care_actions) = tokio::join!(play(&plan, &schedule, &mut transport, &mut sent), team);
    let unacknowledged = transport
        .close(close_timeout)
        .await
        .err()
        .map(|e| e.to_string());
    Ok(RunReport {
        scenario: s.name.clone(),
        transport: name,
        start: s.start,
        days: s.days,
        seed: s.seed,
        speed: schedule.speed(),
        wall_seconds: t0.elapsed().as_secs_f64(),
        devices: s
            .registry()
            .into_iter()
            .map(|d| (d.device_id, d.patient_id))
            .collect(),
        expected_alerts: alert_windows(s),
        unacknowledged,
        sent,
        skipped,
        ble_addresses: BTreeMap::new(),
        care_actions,
        expected_tasks: s.expect_tasks.clone(),
        expected_reports: s.expect_reports.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Outgoing;
    use crate::transport::TransportError;

    /// A transport that keeps what it is given (the run loop's own test; the
    /// real transports are tested against real servers).
    #[derive(Default)]
    struct Keep(Vec<(tokio::time::Instant, Outgoing)>);

    impl Transport for Keep {
        fn name(&self) -> &'static str {
            "keep"
        }
        async fn send(&mut self, o: &Outgoing) -> Result<(), TransportError> {
            self.0.push((tokio::time::Instant::now(), o.clone()));
            Ok(())
        }
        async fn close(self, _: Duration) -> Result<(), TransportError> {
            Ok(())
        }
    }

    /// Accelerated time: each publish leaves at its scheduled wall offset
    /// (paused tokio clock: exact, and the test takes no real time).
    #[tokio::test(start_paused = true)]
    async fn publishes_leave_at_their_accelerated_times() {
        let s = Scenario::bundled("fever").unwrap();
        let schedule = Schedule::new(s.start, 10_080.0).unwrap();
        let plan = s.plan();
        let mut t = Keep::default();
        let mut report = SentReport::new();
        let t0 = tokio::time::Instant::now();
        play(&plan, &schedule, &mut t, &mut report).await;
        assert_eq!(t.0.len(), plan.outgoing().len());
        for (at, o) in &t.0 {
            let want = schedule.wall_offset(o.send_at);
            let got = *at - t0;
            assert!(
                got >= want && got - want < Duration::from_millis(2),
                "{got:?} vs {want:?}"
            );
        }
        assert!(report.missing(&plan).is_empty());
        // The whole scenario in days / 7 minutes of (virtual) wall time.
        let total = t.0.last().unwrap().0 - t0;
        assert!(total <= Duration::from_secs_f64(f64::from(s.days) * 86_400.0 / 10_080.0 + 1.0));
    }

    #[test]
    fn prepare_is_deterministic_and_rebases() {
        let s = Scenario::bundled("demo").unwrap();
        let now: DateTime<Utc> = "2027-01-15T10:00:00Z".parse().unwrap();
        let o = RunOptions {
            seed: Some(5),
            quirks: QuirkKind::ALL.to_vec(),
            faults: crate::faults::ALL.to_vec(),
            ..RunOptions::default()
        };
        let a = prepare(&s, &o, now);
        assert_eq!(a.plan(), prepare(&s, &o, now).plan());
        assert_eq!(a.end().to_rfc3339(), "2027-01-15T00:00:00+00:00");
        assert_eq!(a.seed, 5);
        let w = alert_windows(&a);
        assert!(w.iter().all(|w| w.from >= a.start && w.until <= a.end()));
        let file = prepare(
            &s,
            &RunOptions {
                start: StartAt::File,
                ..RunOptions::default()
            },
            now,
        );
        assert_eq!(file.start, s.start);
    }
}
