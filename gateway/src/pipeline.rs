//! The ingest pipeline every source shares: decode → normalize → store items.

use chrono::{DateTime, Utc};
use device_profiles::Source;
use std::sync::Arc;

pub mod ble;

pub use ble::BleInput;

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

    /// Prepares the store items for a value received from a BLE device:
    /// a notification or indication of the SIG characteristic `uuid`.
    /// Characteristics that carry no result (time, RACP, intermediate cuff
    /// pressure, a glucose context on its own) give no items.
    pub fn ble(
        &self,
        address: &str,
        uuid: u16,
        bytes: &[u8],
        received_at: DateTime<Utc>,
    ) -> Vec<Item> {
        self.ble_input(
            &BleInput::Sig {
                uuid,
                bytes,
                context: None,
            },
            address,
            received_at,
        )
    }

    /// Prepares the store items for any BLE input (see [`BleInput`]).
    pub fn ble_input(
        &self,
        input: &BleInput<'_>,
        address: &str,
        received_at: DateTime<Utc>,
    ) -> Vec<Item> {
        let (origin_key, profile, bytes) = input.origin();
        let origin = format!("{address}/{origin_key}");
        let message = match ble::decode(input) {
            Ok(None) => return Vec::new(),
            Ok(Some(m)) => Ok(device_profiles::profile::DecodedMessage {
                device_id: Some(address.to_string()),
                measurements: vec![Ok(m)],
            }),
            Err(reason) => Err(reason),
        };
        self.metrics.received(Source::Ble.name());
        let raw = Arc::new(raw_input(
            Source::Ble,
            &origin,
            Some(profile.clone()),
            bytes,
            received_at,
        ));
        let decoded = crate::decode::Decoded {
            profile: Some(profile),
            message,
        };
        let mut items = self.normalizer.normalize(raw, decoded);
        for item in &mut items {
            if let Item::Quarantine { device_id, .. } = item {
                device_id.get_or_insert_with(|| address.to_string());
            }
        }
        items
    }

    /// Re-decodes a quarantined input (see [`Normalizer::reprocess`]).
    pub fn reprocess(
        &self,
        q: &QuarantinedInput,
    ) -> Result<device_profiles::ReadingGroup, device_profiles::Reject> {
        if q.source == Source::Ble.name() {
            return ble::reprocess(self, q);
        }
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
