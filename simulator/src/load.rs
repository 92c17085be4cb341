//! Load mode (`rpm-sim load`): thousands of virtual devices publishing at a
//! target rate of readings per second, for benchmarks.
//!
//! Devices are `load-00000`, `load-00001`, ... with kits cycling through
//! the five kinds; they share `connections` MQTT connections (the topic
//! names the device, as with a hub). Each payload is SenML carrying the
//! wall-clock measurement time with millisecond resolution, so the gateway's
//! store gives publish→commit latency per reading as
//! `committed_at - measured_at` (both Unix ms). Pacing counts readings (a
//! blood-pressure message holds four), so `--rate` is readings per second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use crate::devices::KINDS;
use crate::emission::{DeviceKind, Emission};
use crate::patient::device_values;
use crate::payload::{encode, WireFormat};
use crate::physiology::{Baseline, Condition, Vitals};
use crate::transport::mqtt::{PublishError, Publisher};

/// Load settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Number of virtual devices.
    pub devices: u32,
    /// Target readings per second.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// MQTT connections the devices share.
    pub connections: u32,
    /// How long to wait for the last PUBACKs.
    pub drain_timeout: Duration,
}

/// Device id of load device `i`.
pub fn device_id(i: u32) -> String {
    format!("load-{i:05}")
}

/// Kind of load device `i`.
pub fn device_kind(i: u32) -> DeviceKind {
    KINDS[i as usize % KINDS.len()]
}

/// `[[devices]]` entries assigning every load device to a patient of its
/// own (`load-patient-NNNNN`), to append to the gateway's config.
pub fn gateway_config(devices: u32) -> String {
    let mut s = String::new();
    for i in 0..devices {
        s.push_str(&format!(
            "[[devices]]\nid = \"{}\"\npatient = \"load-patient-{i:05}\"\n",
            device_id(i)
        ));
    }
    s
}

/// What a load run achieved.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Devices.
    pub devices: u32,
    /// Connections.
    pub connections: u32,
    /// Target readings/s.
    pub target_rate: f64,
    /// Messages published.
    pub messages: u64,
    /// Readings in them.
    pub readings: u64,
    /// Messages the broker acknowledged.
    pub acked: u64,
    /// Seconds spent publishing.
    pub publish_seconds: f64,
    /// Seconds until the last acknowledgement.
    pub total_seconds: f64,
    /// Readings per second achieved while publishing.
    pub achieved_rate: f64,
    /// Messages by kind.
    pub by_kind: BTreeMap<String, u64>,
}

fn vitals(i: u32, n: u64) -> Vitals {
    let b = Baseline::typical(Condition::Healthy);
    // A small deterministic wobble: plausible, never alarming.
    let w = ((u64::from(i) * 31 + n * 7) % 11) as f64 / 10.0 - 0.5;
    Vitals {
        weight_kg: b.weight_kg + w,
        systolic: b.systolic + 4.0 * w,
        diastolic: b.diastolic + 2.0 * w,
        pulse: b.pulse + 4.0 * w,
        glucose_mg_dl: b.glucose_mg_dl + 8.0 * w,
        spo2: (b.spo2 + w).min(100.0),
        temperature_c: b.temperature_c + 0.2 * w,
        irregular_pulse: false,
    }
}

/// Runs the load; prints nothing (the caller reports).
pub async fn run(o: &LoadOptions) -> Result<LoadReport, PublishError> {
    let connections = o.connections.clamp(1, o.devices.max(1));
    let pid = std::process::id();
    let mut pubs: Vec<Publisher> = (0..connections)
        .map(|c| Publisher::connect(&o.host, o.port, &format!("rpm-sim-load-{pid}-{c}")))
        .collect();
    let mut seq = vec![0u64; o.devices as usize];
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let (mut messages, mut readings) = (0u64, 0u64);
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_device = 0u32;
    let mut budget = 0.0f64;
    while start.elapsed() < o.duration {
        interval.tick().await;
        // Readings due so far minus readings sent: catches up after a stall.
        budget = o.rate * start.elapsed().as_secs_f64() - readings as f64;
        while budget > 0.0 {
            let i = next_device;
            next_device = (next_device + 1) % o.devices.max(1);
            let kind = device_kind(i);
            let n = seq[i as usize];
            seq[i as usize] += 1;
            let e = Emission {
                at: Utc::now(),
                patient_id: String::new(),
                device_id: device_id(i),
                device: kind,
                values: device_values(kind, crate::patient::default_unit(kind), &vitals(i, n)),
                annotations: BTreeMap::new(),
                sequence: Some(n),
                fault: None,
            };
            let m = encode(&e, WireFormat::Senml);
            let p = &mut pubs[(i % connections) as usize];
            p.publish(&m).await?;
            messages += 1;
            readings += e.values.len() as u64;
            budget -= e.values.len() as f64;
            *by_kind
                .entry(crate::devices::kind_name(kind).to_string())
                .or_default() += 1;
        }
    }
    let _ = budget;
    let publish_seconds = start.elapsed().as_secs_f64();
    let mut acked = 0;
    let mut first_err = None;
    for p in pubs.drain(..) {
        let sent = p.sent();
        let counter = p.acked_counter();
        if let Err(e) = p.close(o.drain_timeout).await {
            first_err.get_or_insert(e);
        }
        acked += counter.load(std::sync::atomic::Ordering::SeqCst).min(sent);
    }
    let report = LoadReport {
        devices: o.devices,
        connections,
        target_rate: o.rate,
        messages,
        readings,
        acked,
        publish_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        achieved_rate: readings as f64 / publish_seconds.max(1e-9),
        by_kind,
    };
    match first_err {
        Some(PublishError::Timeout { .. }) | None => Ok(report),
        Some(e) => Err(e),
    }
}

impl LoadReport {
    /// The readable summary.
    pub fn render(&self) -> String {
        format!(
            "devices {} over {} connection(s)\ntarget  {:.0} readings/s\nsent    {} messages, {} readings in {:.1} s\nachieved {:.1} readings/s ({:.1} messages/s)\nacked   {} of {} messages ({:.1} s until the last PUBACK)\n\nLatency per reading, from the gateway's store:\n  sqlite3 rpm-gateway.db \"SELECT COUNT(*), AVG(committed_at - measured_at) FROM readings WHERE device_id LIKE 'load-%'\"\n",
            self.devices,
            self.connections,
            self.target_rate,
            self.messages,
            self.readings,
            self.publish_seconds,
            self.achieved_rate,
            self.messages as f64 / self.publish_seconds.max(1e-9),
            self.acked,
            self.messages,
            self.total_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_payloads_decode_and_carry_millisecond_times() {
        let set = device_profiles::profile::bundled();
        for i in 0..10 {
            let kind = device_kind(i);
            let at = Utc::now();
            let e = Emission {
                at,
                patient_id: String::new(),
                device_id: device_id(i),
                device: kind,
                values: device_values(kind, crate::patient::default_unit(kind), &vitals(i, 3)),
                annotations: BTreeMap::new(),
                sequence: Some(3),
                fault: None,
            };
            let m = encode(&e, WireFormat::Senml);
            let d = set
                .for_topic(&m.topic)
                .unwrap()
                .decode(&m.topic, &m.payload)
                .unwrap();
            let meas = d.measurements[0].as_ref().unwrap();
            match meas.time {
                Some(device_profiles::DeviceTime::Utc(t)) => {
                    assert_eq!(t.timestamp_millis(), at.timestamp_millis())
                }
                ref other => panic!("{other:?}"),
            }
        }
        assert!(gateway_config(2).contains("id = \"load-00001\""));
    }
}
