//! One connection to one device: set its clock, subscribe, ask a
//! glucometer for the records it has not yet given, turn every value into
//! store items, and consider a record taken only once committed.
//!
//! - **Clock.** Where Current Time (0x2A2B) is writable, it is set on
//!   connect. Where it is only readable, the device clock offset is measured
//!   and, beyond `clock_offset_threshold`, applied to the readings of the
//!   connection (device time kept, corrected time used, flagged). Without
//!   Current Time, a fast clock is estimated from each burst of records
//!   (see [`ClockState`]).
//! - **Stored memory.** Cuffs and scales resend their memory on every
//!   connection: a reading's id derives from device, metric, device time and
//!   sequence, so each is stored once.
//! - **Glucose (RACP).** Records newer than the last committed sequence
//!   (`≥ N+1`, or all when none) are requested; a record's context (0x2A34,
//!   same sequence) is joined to it; the durable sequence advances only
//!   after the record's commit, in order, and stops at the first failure.
//!   Record N is then checked (see [`next_racp_phase`]): a meter whose
//!   numbering restarted is noticed and read again in full.
//! - **Body composition** sent as two packets is merged before decoding.

use chrono::{DateTime, Utc};
use device_profiles::gatt::device::{BleUuid, DecoderKind, DeviceProfile, SIG_SUBSCRIBE};
use device_profiles::gatt::uuid as u;
use device_profiles::gatt::{
    BodyCompositionMeasurement, CurrentTime, GlucoseMeasurement, Racp, ResponseCode,
};
use device_profiles::Source;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

use super::transport::{CharacteristicInfo, Link, LinkEvent, Transport, TransportError};
use super::Shared;
use crate::pipeline::ble::{apply_clock_offset, stamp_facts, BleFacts};
use crate::pipeline::BleInput;
use crate::store::writer::CommitResult;

/// Battery Level characteristic (Battery service 0x180F).
const BATTERY_LEVEL: u16 = 0x2A19;

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The device went away (normal: devices disconnect after sending).
    Disconnected,
    /// The gateway is stopping.
    Shutdown,
}

/// A commit to wait for, with the glucose sequence it makes durable.
struct Pending {
    sequence: Option<u16>,
    commit: oneshot::Receiver<CommitResult>,
}

/// Runs one session until the device disconnects or `stop` flips.
pub async fn run(
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    address: String,
    profile: Option<DeviceProfile>,
    mut stop: watch::Receiver<bool>,
) -> Result<SessionEnd, TransportError> {
    let cfg = &shared.cfg;
    let mut link =
        match tokio::time::timeout(cfg.connect_timeout, transport.connect(&address)).await {
            Ok(link) => link?,
            Err(_) => {
                // The link may be up in BlueZ with discovery stalled: take it
                // down, or the device never advertises (and is never retried).
                shared.metrics().ble_connect_timeout();
                transport.cancel_connect(&address).await;
                return Err(TransportError::Link("connect timed out".into()));
            }
        };
    let result = connected(&shared, link.as_mut(), &address, profile, &mut stop).await;
    if let Err(TransportError::PairingRequired) = &result {
        // Said without the device id (info and above carry no ids): the
        // registry's `connection` column names it.
        tracing::warn!("a bluetooth device refuses its readings until it is paired with this gateway: run `rpm-gateway ble scan`, then `rpm-gateway ble pair ADDRESS`");
        shared.metrics().ble_pairing_required();
        shared.set_link(&address, "pairing_required", None).await;
    } else if result.is_err() {
        shared.set_link(&address, "disconnected", None).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), link.disconnect()).await;
    result
}

async fn connected(
    shared: &Arc<Shared>,
    link: &mut dyn Link,
    address: &str,
    profile: Option<DeviceProfile>,
    stop: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, TransportError> {
    let mut events = link
        .events()
        .ok_or_else(|| TransportError::Link("link events already taken".into()))?;
    let chars = link.characteristics();
    let find = |x: u16| {
        chars
            .iter()
            .find(|c| c.uuid == BleUuid::from_u16(x))
            .copied()
    };

    shared.metrics().ble_links(1);
    let _guard = LinkGuard(shared.clone());
    let battery = match find(BATTERY_LEVEL).filter(|c| c.read) {
        Some(c) => link
            .read(c.uuid)
            .await
            .ok()
            .and_then(|v| v.first().copied()),
        None => None,
    };
    shared.set_link(address, "connected", battery).await;
    tracing::debug!(device = address, "ble device connected");

    let has_cts = find(u::CURRENT_TIME).is_some_and(|c| c.read || c.write);
    let clock_offset = clock(shared, link, find(u::CURRENT_TIME)).await;

    // What to subscribe to, and how to decode it.
    let plan: Vec<(CharacteristicInfo, DecoderKind)> = match &profile {
        Some(p) if !p.characteristics.is_empty() => p
            .characteristics
            .iter()
            .filter_map(|(uuid, kind)| {
                chars
                    .iter()
                    .find(|c| c.uuid == *uuid)
                    .map(|c| (*c, kind.clone()))
            })
            .collect(),
        _ => chars
            .iter()
            .filter_map(|c| {
                let short = c.uuid.as_u16()?;
                SIG_SUBSCRIBE
                    .contains(&short)
                    .then_some((*c, DecoderKind::Sig(short)))
            })
            .collect(),
    };
    let racp = plan
        .iter()
        .find(|(c, _)| c.uuid == BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT))
        .map(|(c, _)| *c);
    // Control point last: its reply must not overtake the records' CCCDs.
    for (c, _) in plan.iter().filter(|(c, _)| Some(*c) != racp) {
        if c.notify || c.indicate {
            link.subscribe(c.uuid).await?;
        }
    }

    // Commits are awaited in order by this task, which records metrics and
    // advances the glucose sequence only after each commit.
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(1024);
    let acker = tokio::spawn(ack_in_order(
        shared.clone(),
        address.to_string(),
        pending_rx,
    ));

    let mut phase = RacpPhase::Idle;
    if let Some(c) = racp {
        link.subscribe(c.uuid).await?;
        let last = shared.last_sequence(address).await;
        let (request, next) = match last {
            Some(n) => match Racp::report_newer_than(n) {
                Some(r) => (r, RacpPhase::Newer(n)),
                None => (Racp::report_range(n, n), RacpPhase::Verify(n, None)),
            },
            None => (Racp::report_all(), RacpPhase::All),
        };
        link.write(c.uuid, request.encode()).await?;
        phase = next;
    }

    let facts = BleFacts {
        connected_at_ms: Some(Utc::now().timestamp_millis()),
        ..BleFacts::default()
    };
    let mut state = Collect::default();
    let mut clock = ClockState::new(clock_offset, has_cts, shared);
    let mut deadline: Option<tokio::time::Instant> = None;
    let end = loop {
        let ev = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break SessionEnd::Shutdown,
            _ = sleep_until(deadline), if deadline.is_some() => None,
            ev = events.recv() => Some(ev),
        };
        let Some(ev) = ev else {
            deadline = None;
            if !submit(shared, &pending_tx, clock.flush(), &facts).await {
                break SessionEnd::Disconnected;
            }
            continue;
        };
        let (uuid, value) = match ev {
            Some(LinkEvent::Value { uuid, value }) => (uuid, value),
            Some(LinkEvent::Disconnected) | None => break SessionEnd::Disconnected,
        };
        let received_at = Utc::now();
        let racp_code = match (uuid.as_u16(), Racp::decode(&value)) {
            (Some(u::RECORD_ACCESS_CONTROL_POINT), Ok(Racp::Response { code, .. })) => Some(code),
            _ => None,
        };
        let decoder = plan.iter().find(|(c, _)| c.uuid == uuid).map(|(_, k)| k);
        let batches = match decoder {
            Some(DecoderKind::Layout(layout)) => {
                let key = uuid.short_name();
                vec![(
                    None,
                    shared.pipeline.ble_input(
                        &BleInput::Layout {
                            layout,
                            key: &key,
                            bytes: &value,
                        },
                        address,
                        received_at,
                    ),
                )]
            }
            Some(DecoderKind::Sig(short)) => state.sig(shared, address, *short, value, received_at),
            None => Vec::new(),
        };
        if let RacpPhase::Verify(_, newest) | RacpPhase::LastCheck(_, newest) = &mut phase {
            for (seq, items) in &batches {
                let time = items.iter().find_map(|i| match i {
                    crate::store::Item::Reading { group, .. } => group
                        .readings
                        .first()
                        .and_then(|r| r.device_measured_at)
                        .map(|t| t.timestamp_millis()),
                    _ => None,
                });
                if let Some(s) = seq {
                    *newest = Some((*s, time));
                }
            }
        }
        if let (Some(code), Some(c)) = (racp_code, racp) {
            phase = next_racp_phase(shared, &*link, address, c.uuid, phase, code).await?;
        }
        let ready = clock.take(batches);
        if clock.holding() {
            // The end of a glucose transfer, or a quiet moment, closes the burst.
            if uuid == BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT) {
                deadline = Some(tokio::time::Instant::now());
            } else {
                deadline = Some(tokio::time::Instant::now() + SETTLE);
            }
        }
        if !submit(shared, &pending_tx, ready, &facts).await {
            break SessionEnd::Disconnected;
        }
    };
    // Whatever is still held (a record whose context never came, a first
    // body-composition packet, a burst waiting for its clock estimate) is
    // submitted now.
    let rest = clock.take(state.flush(shared, address));
    submit(shared, &pending_tx, rest, &facts).await;
    submit(shared, &pending_tx, clock.flush(), &facts).await;
    drop(pending_tx);
    let _ = acker.await;
    shared.set_link(address, "disconnected", None).await;
    tracing::debug!(device = address, ?end, "ble session ended");
    Ok(end)
}

/// Quiet time that ends a burst of stored records.
const SETTLE: Duration = Duration::from_millis(300);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where a glucose transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RacpPhase {
    /// No transfer.
    Idle,
    /// Records `≥ N+1` were asked for.
    Newer(u16),
    /// Record N was asked for again, to check that it is still the one
    /// stored under N. Holds N and the record seen (sequence, device time ms).
    Verify(u16, Option<(u16, Option<i64>)>),
    /// The meter has no record N: its newest record was asked for, to tell
    /// "old records deleted" from "the sequence numbers restarted".
    LastCheck(u16, Option<(u16, Option<i64>)>),
    /// Every record was asked for.
    All,
    /// Finished.
    Done,
}

/// The next step of a glucose transfer once the meter answered `code`.
///
/// A meter whose sequence numbers restarted (reset, or replaced by one with
/// the same address) answers "≥ N+1" with nothing for ever, or, once it
/// has more than N records, with only its records above N. So after each
/// transfer the record numbered N is asked for again: another device time
/// than the one stored under N means the numbering restarted; no record N
/// at all, with a newest record below N, means the same. The cursor then
/// starts a new epoch and every record is asked for: none is lost, and
/// those already stored are recognised by their ids (device, time,
/// sequence). A meter that supports neither request just ends the check.
async fn next_racp_phase(
    shared: &Shared,
    link: &dyn Link,
    address: &str,
    racp: BleUuid,
    phase: RacpPhase,
    code: ResponseCode,
) -> Result<RacpPhase, TransportError> {
    let restarted = match phase {
        RacpPhase::Newer(n) if code.is_complete() => {
            link.write(racp, Racp::report_range(n, n).encode()).await?;
            return Ok(RacpPhase::Verify(n, None));
        }
        RacpPhase::Verify(n, None) if code == ResponseCode::NoRecordsFound => {
            link.write(racp, Racp::report_last().encode()).await?;
            return Ok(RacpPhase::LastCheck(n, None));
        }
        RacpPhase::Verify(n, Some((s, Some(t)))) if code.is_complete() && s == n => shared
            .sequence_time(address, n)
            .await
            .is_some_and(|stored| stored != t),
        RacpPhase::LastCheck(n, Some((s, _))) if code.is_complete() => s < n,
        RacpPhase::Idle => return Ok(RacpPhase::Idle),
        _ => false,
    };
    if !restarted {
        return Ok(RacpPhase::Done);
    }
    tracing::warn!("a glucometer's record numbers restarted (meter reset or replaced); all its records are fetched again");
    shared.metrics().ble_sequence_reset();
    if !shared.reset_sequence(address).await {
        return Ok(RacpPhase::Done);
    }
    link.write(racp, Racp::report_all().encode()).await?;
    Ok(RacpPhase::All)
}

/// Submits batches, each input stamped with the connection's `facts`;
/// false when the writer is gone.
async fn submit(
    shared: &Shared,
    pending: &mpsc::Sender<Pending>,
    batches: Vec<Batch>,
    facts: &BleFacts,
) -> bool {
    for (sequence, mut items) in batches {
        if items.is_empty() {
            continue;
        }
        stamp_facts(&mut items, facts);
        let commit = match shared.writer.submit(items).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "store writer gone; closing the ble session");
                return false;
            }
        };
        if pending.send(Pending { sequence, commit }).await.is_err() {
            return false;
        }
    }
    true
}

/// The device clock for this connection.
///
/// - Current Time set: nothing to do. Read: the measured offset is applied.
/// - No Current Time: records come in bursts (stored memory, a RACP
///   transfer). A burst is held until it settles; if its newest device time
///   is ahead of the gateway clock by more than the threshold, the clock is
///   fast by at least that much: that estimate (a lower bound) is applied to
///   the burst and the rest of the connection, flagged
///   `clock_offset_estimated`. A slow clock cannot be told apart from an old
///   record; the canonical clock rules handle those.
struct ClockState {
    exact: Option<chrono::Duration>,
    estimate_mode: bool,
    estimate: Option<chrono::Duration>,
    threshold: chrono::Duration,
    held: Vec<Batch>,
}

impl ClockState {
    fn new(exact: Option<chrono::Duration>, has_cts: bool, shared: &Shared) -> Self {
        ClockState {
            exact,
            estimate_mode: !has_cts,
            estimate: None,
            threshold: chrono::Duration::from_std(shared.cfg.clock_offset_threshold)
                .unwrap_or(chrono::Duration::MAX),
            held: Vec::new(),
        }
    }

    fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Batches ready to submit now (the others are held).
    fn take(&mut self, mut batches: Vec<Batch>) -> Vec<Batch> {
        batches.retain(|(_, items)| !items.is_empty());
        if let Some(offset) = self.exact {
            for (_, items) in &mut batches {
                apply_clock_offset(items, offset, false);
            }
            return batches;
        }
        if !self.estimate_mode {
            return batches;
        }
        if let Some(offset) = self.estimate {
            for (_, items) in &mut batches {
                apply_clock_offset(items, offset, true);
            }
            return batches;
        }
        self.held.extend(batches);
        Vec::new()
    }

    /// Ends a burst: estimates, applies, releases.
    fn flush(&mut self) -> Vec<Batch> {
        let mut batches = std::mem::take(&mut self.held);
        let ahead = batches
            .iter()
            .flat_map(|(_, items)| items)
            .filter_map(|i| match i {
                crate::store::Item::Reading { group, .. } => Some(group),
                _ => None,
            })
            .flat_map(|g| &g.readings)
            .filter_map(|r| r.device_measured_at.map(|d| d - r.received_at))
            .max();
        if let Some(a) = ahead.filter(|a| *a > self.threshold) {
            self.estimate = Some(a);
            for (_, items) in &mut batches {
                apply_clock_offset(items, a, true);
            }
        }
        batches
    }
}

/// Decrements the connected-devices gauge however the session ends.
struct LinkGuard(Arc<Shared>);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        self.0.metrics().ble_links(-1);
    }
}

/// Sets the device clock, or measures its offset. Returns the offset to
/// apply to this connection's readings (device minus gateway), if any.
async fn clock(
    shared: &Shared,
    link: &dyn Link,
    cts: Option<CharacteristicInfo>,
) -> Option<chrono::Duration> {
    let cts = cts?;
    let local_offset = shared.pipeline_clock_offset();
    if cts.write && shared.cfg.set_device_clock {
        let now = (Utc::now() + local_offset).naive_utc();
        if let Some(ct) = CurrentTime::from_naive(now) {
            match link.write(cts.uuid, ct.encode()).await {
                Ok(()) => return None,
                // Writing CTS is optional for servers (domain.md §5.2).
                Err(e) => tracing::debug!(error = %e, "device refused the current time"),
            }
        }
    }
    if !cts.read {
        return None;
    }
    let bytes = link.read(cts.uuid).await.ok()?;
    let device_now = CurrentTime::decode(&bytes).ok()?.date_time.to_naive()?;
    let offset = device_now - (Utc::now() + local_offset).naive_utc();
    let threshold = chrono::Duration::from_std(shared.cfg.clock_offset_threshold).ok()?;
    (offset.abs() > threshold).then_some(offset)
}

/// Values held until their partner arrives.
#[derive(Default)]
struct Collect {
    /// A glucose record announcing a context: (bytes, sequence, received).
    glucose: Option<(Vec<u8>, u16, DateTime<Utc>)>,
    /// The first packet of a two-packet body composition record.
    body: Option<(BodyCompositionMeasurement, DateTime<Utc>)>,
}

type Batch = (Option<u16>, Vec<crate::store::Item>);

impl Collect {
    fn sig(
        &mut self,
        shared: &Shared,
        address: &str,
        short: u16,
        value: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Vec<Batch> {
        let p = &shared.pipeline;
        let mut out = Vec::new();
        match short {
            u::GLUCOSE_MEASUREMENT => {
                out.extend(self.flush_glucose(shared, address));
                match GlucoseMeasurement::decode(&value) {
                    Ok(g) if g.context_follows => {
                        self.glucose = Some((value, g.sequence_number, at));
                    }
                    Ok(g) => out.push((Some(g.sequence_number), p.ble(address, short, &value, at))),
                    Err(_) => out.push((None, p.ble(address, short, &value, at))),
                }
            }
            u::GLUCOSE_MEASUREMENT_CONTEXT => {
                let seq = value.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]]));
                match self.glucose.take() {
                    Some((bytes, s, t)) if Some(s) == seq => {
                        let items = p.ble_input(
                            &BleInput::Sig {
                                uuid: u::GLUCOSE_MEASUREMENT,
                                bytes: &bytes,
                                context: Some(&value),
                            },
                            address,
                            t,
                        );
                        out.push((Some(s), items));
                    }
                    held => {
                        // A context for another record: keep the held one
                        // waiting for its own.
                        self.glucose = held;
                    }
                }
            }
            u::RECORD_ACCESS_CONTROL_POINT => {
                out.extend(self.flush_glucose(shared, address));
                match Racp::decode(&value) {
                    Ok(Racp::Response { code, .. })
                        if code != ResponseCode::Success
                            && code != ResponseCode::NoRecordsFound =>
                    {
                        tracing::warn!(code = ?code, "glucometer refused the record request");
                    }
                    _ => {}
                }
            }
            u::BODY_COMPOSITION_MEASUREMENT => match BodyCompositionMeasurement::decode(&value) {
                Ok(b) if b.multiple_packet => match self.body.take() {
                    Some((first, t)) => match first.merge(&b) {
                        Some(m) => out.push((None, p.ble(address, short, &m.encode(), t))),
                        None => {
                            out.push((None, p.ble(address, short, &first.encode(), t)));
                            self.body = Some((b, at));
                        }
                    },
                    None => self.body = Some((b, at)),
                },
                _ => out.push((None, p.ble(address, short, &value, at))),
            },
            _ => out.push((None, p.ble(address, short, &value, at))),
        }
        out
    }

    fn flush_glucose(&mut self, shared: &Shared, address: &str) -> Option<Batch> {
        let (bytes, seq, t) = self.glucose.take()?;
        Some((
            Some(seq),
            shared
                .pipeline
                .ble(address, u::GLUCOSE_MEASUREMENT, &bytes, t),
        ))
    }

    fn flush(&mut self, shared: &Shared, address: &str) -> Vec<Batch> {
        let mut out: Vec<Batch> = self.flush_glucose(shared, address).into_iter().collect();
        if let Some((b, t)) = self.body.take() {
            out.push((
                None,
                shared
                    .pipeline
                    .ble(address, u::BODY_COMPOSITION_MEASUREMENT, &b.encode(), t),
            ));
        }
        out
    }
}

/// Awaits commits in submission order: counts outcomes, and advances the
/// durable glucose sequence only past committed records.
async fn ack_in_order(shared: Arc<Shared>, address: String, mut rx: mpsc::Receiver<Pending>) {
    let mut failed = false;
    while let Some(p) = rx.recv().await {
        match p.commit.await {
            Ok(Ok(outcomes)) => {
                shared.pipeline.record(Source::Ble, &outcomes);
                if let (Some(seq), false) = (p.sequence, failed) {
                    shared.set_sequence(&address, seq).await;
                }
            }
            Ok(Err(e)) => {
                failed = true;
                tracing::error!(error = %e, "ble reading not committed; it will be fetched again on the next connection");
            }
            Err(_) => failed = true,
        }
    }
}
