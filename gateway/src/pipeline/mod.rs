//! The ingest pipeline every source shares: [`decode`] (bytes → measurements,
//! by device profile) → [`normalize`] (canonical readings or quarantine
//! items) → store items. [`inbox`] is the stage that runs it over the MQTT
//! inbox on the store writer's thread; [`ble`] adapts Bluetooth values.

use chrono::{DateTime, Utc};
use device_profiles::Source;
use std::sync::Arc;

pub mod ble;
pub mod config;
pub mod decode;
pub mod inbox;
pub mod normalize;

pub use ble::BleInput;

use device_profiles::questionnaire::response::TimeLimits;
use device_profiles::questionnaire::{QuestionnaireSet, ResponseInput};

use crate::metrics::Metrics;
use crate::pipeline::decode::Decoder;
use crate::pipeline::normalize::Normalizer;
use crate::store::registry::QuarantinedInput;
use crate::store::{Item, Outcome, RawInput};

/// An HTTP push that cannot even be attempted (the client's mistake, not
/// the device's: answered 4xx, not quarantined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpInputError {
    /// No profile of that name.
    #[error("no device profile named `{0}`")]
    UnknownProfile(String),
    /// The profile takes the device id from its topic, and none was given.
    #[error("profile topic `{0}` names the device: `device_id` is required")]
    DeviceIdRequired(String),
    /// A device id that cannot be a topic level.
    #[error("device_id must be 1 to 128 characters of letters, digits and . _ : -")]
    BadDeviceId,
}

/// Whether `id` is a usable device id (also a safe MQTT topic level).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// The topic a device would publish on under `pattern`: `{device_id}` is
/// the device, wildcards become `http`.
fn origin_topic(pattern: &str, device_id: Option<&str>) -> Result<String, HttpInputError> {
    if let Some(d) = device_id {
        if !valid_device_id(d) {
            return Err(HttpInputError::BadDeviceId);
        }
    }
    let levels: Result<Vec<&str>, HttpInputError> = pattern
        .split('/')
        .map(|level| match level {
            "{device_id}" => {
                device_id.ok_or_else(|| HttpInputError::DeviceIdRequired(pattern.to_string()))
            }
            "+" | "#" => Ok("http"),
            other => Ok(other),
        })
        .collect();
    Ok(levels?.join("/"))
}

/// The profile name questionnaire responses are quarantined under (they
/// are read by their questionnaire, not by a device profile).
pub const RESPONSE_PROFILE: &str = "questionnaire-response";

pub use device_profiles::questionnaire::response::ResponseFormat as ResponseForm;

/// Decode and normalize, shared by all sources.
pub struct Pipeline {
    /// Profile-driven decoder.
    pub decoder: Decoder,
    /// Canonicalization.
    pub normalizer: Normalizer,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Questionnaire definitions responses are validated and scored by.
    pub questionnaires: Arc<QuestionnaireSet>,
}

impl Pipeline {
    /// The pipeline over `profiles`, with the `[normalize]` policy.
    pub fn new(
        profiles: device_profiles::ProfileSet,
        normalize: &config::NormalizeConfig,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            decoder: Decoder::new(profiles, normalize.max_payload_bytes),
            normalizer: Normalizer::new(normalize.clock_policy()),
            metrics,
            questionnaires: Arc::new(device_profiles::questionnaire::bundled()),
        }
    }

    /// The same pipeline with these questionnaire definitions.
    pub fn with_questionnaires(mut self, set: QuestionnaireSet) -> Pipeline {
        self.questionnaires = Arc::new(set);
        self
    }

    /// Prepares the store item for a questionnaire response: validated
    /// against its definition and scored, or quarantined with the reason
    /// and the bytes as received. `origin` is the route or topic; `device`
    /// the device the topic names (a response naming another is refused).
    pub fn response(
        &self,
        source: Source,
        origin: &str,
        device: Option<&str>,
        form: ResponseForm,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> Item {
        let raw = Arc::new(RawInput::new(
            source,
            origin,
            Some(RESPONSE_PROFILE.to_string()),
            payload,
            received_at,
        ));
        let clock = &self.normalizer.clock;
        let limits = TimeLimits {
            max_future: clock.max_future_skew,
            max_age: clock.max_age,
        };
        let limit = self.decoder.max_payload();
        let input = if payload.len() > limit {
            Err(device_profiles::Reject::PayloadTooLarge {
                size: payload.len(),
                limit,
            })
        } else {
            ResponseInput::parse(form, payload)
        };
        let input = input.and_then(|mut i| {
            if let Some(d) = device {
                match &i.subject.device_id {
                    Some(named) if named != d => {
                        return Err(device_profiles::Reject::SchemaMismatch {
                            profile: RESPONSE_PROFILE.into(),
                            detail: format!("the response names device `{named}`, the topic `{d}`"),
                        })
                    }
                    _ => i.subject.device_id = Some(d.to_string()),
                }
            }
            Ok(i)
        });
        let device_id = input
            .as_ref()
            .ok()
            .and_then(|i| i.subject.device_id.clone());
        match input.and_then(|i| self.questionnaires.accept(&i, received_at, limits)) {
            Ok(a) => Item::Response {
                raw,
                response: Arc::new(a),
            },
            // Position 0: a response is one measurement of its message, and
            // a refusal at a position keeps its device (re-processed when
            // the device is assigned).
            Err(reason) => Item::Quarantine {
                raw,
                index: Some(0),
                device_id,
                reason,
            },
        }
    }

    /// Prepares the store items for an MQTT message (taken from the inbox
    /// by the normalize stage: the source counted it when it arrived).
    pub fn mqtt(&self, topic: &str, payload: &Arc<[u8]>, received_at: DateTime<Utc>) -> Vec<Item> {
        if let Some(p) = self.decoder.profiles().for_topic(topic) {
            if let device_profiles::profile::Format::QuestionnaireResponse(form) = p.format {
                let device = p.topic.matches(topic).flatten();
                return vec![self.response(
                    Source::Mqtt,
                    topic,
                    device,
                    form,
                    payload,
                    received_at,
                )];
            }
        }
        let decoded = self.decoder.decode_mqtt(topic, payload);
        let raw = Arc::new(RawInput::shared(
            Source::Mqtt,
            topic,
            decoded.profile.clone(),
            payload.clone(),
            received_at,
        ));
        self.normalizer.normalize(raw, decoded)
    }

    /// Prepares the store items for an HTTP push (`POST /api/v1/readings`):
    /// the payload is decoded by the named profile exactly as if the device
    /// had published it on its MQTT topic. The origin kept with the input
    /// (and used to re-process it) is that topic, so quarantine and
    /// re-processing work the same for both sources.
    pub fn http(
        &self,
        profile: &str,
        device_id: Option<&str>,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Vec<Item>, HttpInputError> {
        let p = self
            .decoder
            .profiles()
            .by_name(profile)
            .ok_or_else(|| HttpInputError::UnknownProfile(profile.to_string()))?;
        let origin = origin_topic(&p.topic.to_string(), device_id)?;
        self.metrics.received(Source::Http.name());
        if let device_profiles::profile::Format::QuestionnaireResponse(form) = p.format {
            // A check-in pushed with its profile, as a tablet would publish it.
            return Ok(vec![self.response(
                Source::Http,
                &origin,
                device_id,
                form,
                payload,
                received_at,
            )]);
        }
        let decoded = self.decoder.decode_with(profile, &origin, payload);
        let raw = Arc::new(RawInput::new(
            Source::Http,
            &origin,
            decoded.profile.clone(),
            payload,
            received_at,
        ));
        Ok(self.normalizer.normalize(raw, decoded))
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
        let raw = Arc::new(RawInput::new(
            Source::Ble,
            &origin,
            Some(profile.clone()),
            bytes,
            received_at,
        ));
        let decoded = crate::pipeline::decode::Decoded {
            profile: Some(profile),
            message,
        };
        let mut items = self.normalizer.normalize(raw, decoded);
        for item in &mut items {
            if let Item::Quarantine { device_id, .. } = item {
                device_id.get_or_insert_with(|| address.to_string());
            }
        }
        if let BleInput::Sig {
            context: Some(ctx), ..
        } = input
        {
            ble::stamp_facts(
                &mut items,
                &ble::BleFacts {
                    context: Some(hex::encode(ctx)),
                    ..Default::default()
                },
            );
        }
        items
    }

    /// Re-decodes a quarantined input (see [`Normalizer::reprocess`]). An
    /// input a home box sent up (`via` in its facts) keeps saying so: its
    /// readings are annotated `via`, as the box's pushed readings are.
    pub fn reprocess(&self, q: &QuarantinedInput) -> crate::store::registry::Redecoded {
        if q.profile.as_deref() == Some(RESPONSE_PROFILE) {
            return vec![(0, self.reprocess_response(q))];
        }
        let mut out = if q.source == Source::Ble.name() {
            vec![(
                q.index.unwrap_or(0),
                ble::reprocess(self, q).map(Into::into),
            )]
        } else {
            self.normalizer.reprocess(&self.decoder, q)
        };
        let via = q
            .facts
            .as_deref()
            .and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok())
            .and_then(|v| v.get("via")?.as_str().map(String::from));
        if let Some(via) = via {
            for (_, group) in &mut out {
                if let Ok(crate::store::registry::Recovered::Group(g)) = group {
                    for r in &mut g.readings {
                        r.annotations.insert("via".into(), via.clone());
                    }
                }
            }
        }
        out
    }

    /// Validates and scores a quarantined questionnaire response again (a
    /// device assigned since, a definition loaded since): its form and
    /// device come from where it arrived (the route, or the topic's profile).
    fn reprocess_response(
        &self,
        q: &QuarantinedInput,
    ) -> Result<crate::store::registry::Recovered, device_profiles::Reject> {
        let source: Source = q.source.parse().unwrap_or(Source::Http);
        let (form, device) = match q.origin.as_str() {
            "/api/v1/responses" => (ResponseForm::Plain, None),
            "/fhir/QuestionnaireResponse" => (ResponseForm::Fhir, None),
            topic => match self.decoder.profiles().for_topic(topic) {
                Some(p) => match p.format {
                    device_profiles::profile::Format::QuestionnaireResponse(form) => {
                        (form, p.topic.matches(topic).flatten())
                    }
                    _ => {
                        return Err(device_profiles::Reject::NoProfile {
                            topic: topic.to_string(),
                        })
                    }
                },
                None => {
                    return Err(device_profiles::Reject::NoProfile {
                        topic: topic.to_string(),
                    })
                }
            },
        };
        match self.response(source, &q.origin, device, form, &q.payload, q.received_at) {
            Item::Response { response, .. } => Ok(crate::store::registry::Recovered::Response(
                response, source,
            )),
            Item::Quarantine { reason, .. } => Err(reason),
            Item::Reading { .. } => Err(device_profiles::Reject::Empty),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's items share its bytes with the inbox entry and hold no
    /// spare room: a backlog's steps hold thousands of them.
    #[test]
    fn a_message_becomes_items_that_share_its_bytes_and_hold_no_spare_room() {
        let pipeline = Pipeline::new(
            device_profiles::profile::bundled(),
            &config::NormalizeConfig::default(),
            Arc::default(),
        );
        let at = Utc::now().timestamp() - 3600;
        let payload: Arc<[u8]> = format!(r#"[{{"bt":{at},"n":"systolic","u":"mm[Hg]","v":120}}]"#)
            .into_bytes()
            .into();
        let items = pipeline.mqtt("rpm/senml/cuff-1", &payload, Utc::now());
        assert_eq!(items.len(), 1);
        assert_eq!(items.capacity(), 1);
        let Item::Reading { raw, group, .. } = &items[0] else {
            panic!("not a reading: {items:?}");
        };
        assert!(Arc::ptr_eq(&raw.payload, &payload));
        assert_eq!(raw.size, payload.len());
        assert_eq!(group.readings.len(), 1);
    }

    #[test]
    fn http_origin_is_the_topic_the_device_would_publish_on() {
        assert_eq!(
            origin_topic("acme/bp/{device_id}", Some("cuff-1")).unwrap(),
            "acme/bp/cuff-1"
        );
        assert_eq!(
            origin_topic("vendor/+/{device_id}/#", Some("d")).unwrap(),
            "vendor/http/d/http"
        );
        assert_eq!(
            origin_topic("acme/bp/{device_id}", None),
            Err(HttpInputError::DeviceIdRequired(
                "acme/bp/{device_id}".into()
            ))
        );
        assert_eq!(
            origin_topic("acme/bp/{device_id}", Some("a/b")),
            Err(HttpInputError::BadDeviceId)
        );
        assert_eq!(origin_topic("cloud/feed", None).unwrap(), "cloud/feed");
        assert!(!valid_device_id(&"x".repeat(129)));
        assert!(valid_device_id("urn:dev:mac:0024befffe804ff1"));
    }
}
