//! Normalize: decoded measurements → canonical readings or quarantine items.
//!
//! Units, LOINC codes, plausibility and clock checks are applied by
//! [`device_profiles::canonicalize`] (shared with the simulator's `check`).
//! What is the gateway's own: the clock policy from config, and the binding
//! of a device to its patient, which happens at commit time in the store
//! (see [`crate::store`]) so that an assignment and its re-processing can
//! never race with ingestion.

use chrono::{DateTime, Utc};
use device_profiles::canonical::{content_digest, Context};
use device_profiles::{canonicalize, ClockPolicy, ReadingGroup, Reject, Source};
use std::sync::Arc;

use crate::pipeline::decode::{Decoded, Decoder};
use crate::store::registry::{QuarantinedInput, Redecoded, Targets};
use crate::store::{Item, RawInput};

/// The normalization stage.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub(crate) clock: ClockPolicy,
}

/// Patient id placeholder before binding at commit.
const UNBOUND: &str = "";

impl Normalizer {
    /// A normalizer with this clock policy.
    pub fn new(clock: ClockPolicy) -> Self {
        Normalizer { clock }
    }

    /// Turns one decoded input into store items: readings for the good
    /// measurements, quarantine for each refusal.
    pub fn normalize(&self, raw: Arc<RawInput>, decoded: Decoded) -> Vec<Item> {
        let message = match decoded.message {
            Ok(m) => m,
            Err(reason) => {
                return vec![Item::Quarantine {
                    raw,
                    index: None,
                    device_id: None,
                    reason,
                }]
            }
        };
        let device_id = message.device_id.unwrap_or_default();
        // Extended, not collected: collecting would reuse the decoder's
        // buffer in place (room for four decoded measurements where most
        // messages hold one), and a backlog's steps hold thousands of these.
        let mut items = Vec::with_capacity(message.measurements.len());
        items.extend(
            message
                .measurements
                .into_iter()
                .enumerate()
                .map(|(index, m)| {
                    let group = m.and_then(|m| {
                        let device = m.device_id.as_deref().unwrap_or(&device_id);
                        self.canonical(&m, device, raw.source, raw.received_at, &raw.digest, index)
                    });
                    match group {
                        Ok(group) => Item::Reading {
                            raw: raw.clone(),
                            index,
                            group,
                        },
                        Err(reason) => Item::Quarantine {
                            raw: raw.clone(),
                            index: Some(index),
                            device_id: Some(device_id.clone()),
                            reason,
                        },
                    }
                }),
        );
        items
    }

    pub(crate) fn canonical(
        &self,
        m: &device_profiles::DecodedMeasurement,
        device_id: &str,
        source: Source,
        received_at: DateTime<Utc>,
        digest: &str,
        index: usize,
    ) -> Result<ReadingGroup, Reject> {
        let cx = Context {
            device_id,
            patient_id: UNBOUND,
            source,
            received_at,
            clock: &self.clock,
            content_digest: digest,
            index,
        };
        canonicalize(m, &cx)
    }

    /// Re-runs decode and normalization on a quarantined input (after its
    /// device was assigned), with its original time of receipt: one result
    /// per measurement the input stands for.
    pub fn reprocess(&self, decoder: &Decoder, q: &QuarantinedInput) -> Redecoded {
        let first = q.index.unwrap_or(0);
        let Some(profile) = q.profile.as_deref() else {
            return vec![(
                first,
                Err(Reject::NoProfile {
                    topic: q.origin.clone(),
                }),
            )];
        };
        let decoded = match decoder.decode_with(profile, &q.origin, &q.payload).message {
            Ok(d) => d,
            Err(reason) => return vec![(first, Err(reason))],
        };
        let device_id = decoded.device_id.clone().unwrap_or_default();
        let source = q.source.parse().unwrap_or(Source::Mqtt);
        let digest = content_digest(&q.payload);
        let mut measurements: Vec<Option<Result<_, Reject>>> =
            decoded.measurements.into_iter().map(Some).collect();
        let wanted: Vec<usize> = match q.targets() {
            Targets::Some(list) => list,
            Targets::All => (0..measurements.len()).collect(),
        };
        if wanted.is_empty() {
            return vec![(first, Err(Reject::Empty))];
        }
        wanted
            .into_iter()
            .map(|index| {
                let m = measurements
                    .get_mut(index)
                    .and_then(Option::take)
                    .unwrap_or(Err(Reject::Empty));
                let group = m.and_then(|m| {
                    let device = m.device_id.clone().unwrap_or_else(|| device_id.clone());
                    self.canonical(&m, &device, source, q.received_at, &digest, index)
                });
                (index, group.map(Into::into))
            })
            .collect()
    }
}
