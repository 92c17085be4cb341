//! The ingest pipeline every source shares: decode → normalize → store items.

use chrono::{DateTime, Utc};
use device_profiles::Source;
use std::sync::Arc;

use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::normalize::{raw_input, Normalizer};
use crate::store::registry::QuarantinedInput;
use crate::store::{Item, Outcome};

/// Decode and normalize, shared by all sources.
pub struct Pipeline {
    /// Profile-driven decoder.
    pub decoder: Decoder,
    /// Canonicalization.
    pub normalizer: Normalizer,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Prepares the store items for an MQTT message.
    pub fn mqtt(&self, topic: &str, payload: &[u8], received_at: DateTime<Utc>) -> Vec<Item> {
        self.metrics.received(Source::Mqtt.name());
        let decoded = self.decoder.decode_mqtt(topic, payload);
        let raw = Arc::new(raw_input(
            Source::Mqtt,
            topic,
            decoded.profile.clone(),
            payload,
            received_at,
        ));
        self.normalizer.normalize(raw, decoded)
    }

    /// Re-decodes a quarantined input (see [`Normalizer::reprocess`]).
    pub fn reprocess(
        &self,
        q: &QuarantinedInput,
    ) -> Result<device_profiles::ReadingGroup, device_profiles::Reject> {
        self.normalizer.reprocess(&self.decoder, q)
    }

    /// Counts the outcomes of a committed batch.
    pub fn record(&self, source: Source, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Stored {
                    stored, duplicates, ..
                } => {
                    self.metrics.stored(source.name(), *stored);
                    if *duplicates > 0 {
                        self.metrics.duplicates(source.name(), *duplicates);
                    }
                }
                Outcome::Quarantined { reason, new: true } => {
                    self.metrics.quarantined(source.name(), reason)
                }
                Outcome::Quarantined { new: false, .. } => {
                    self.metrics.duplicates(source.name(), 1)
                }
            }
        }
    }
}
