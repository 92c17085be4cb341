//! Decode: raw bytes from a source → decoded measurements, by device profile.
//!
//! Nothing here knows patients or units; it only finds the profile for the
//! input and lets it parse. Whatever cannot be parsed is returned as a
//! typed [`Reject`] for quarantine.

use device_profiles::profile::DecodedMessage;
use device_profiles::{Profile, ProfileSet, Reject};

/// Chooses the profile for an input and decodes it.
#[derive(Debug, Clone)]
pub struct Decoder {
    profiles: ProfileSet,
    max_payload: usize,
}

/// A decoded message and the profile that decoded it.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Profile name, when one matched.
    pub profile: Option<String>,
    /// The message, or why it was refused as a whole.
    pub message: Result<DecodedMessage, Reject>,
}

impl Decoder {
    /// A decoder over `profiles`, refusing payloads above `max_payload` bytes.
    pub fn new(profiles: ProfileSet, max_payload: usize) -> Self {
        Decoder {
            profiles,
            max_payload,
        }
    }

    /// Payloads above this many bytes are refused before parsing.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The loaded profiles.
    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    /// Decodes an MQTT payload received on `topic`.
    pub fn decode_mqtt(&self, topic: &str, payload: &[u8]) -> Decoded {
        match self.profiles.for_topic(topic) {
            Some(profile) => self.decode(profile, topic, payload),
            None => no_profile(topic),
        }
    }

    /// Decodes with a named profile (HTTP ingest, re-processing).
    pub fn decode_with(&self, profile: &str, origin: &str, payload: &[u8]) -> Decoded {
        match self.profiles.by_name(profile) {
            Some(p) => self.decode(p, origin, payload),
            None => no_profile(profile),
        }
    }

    /// Decodes with `profile`, refusing oversized payloads before parsing.
    fn decode(&self, profile: &Profile, origin: &str, payload: &[u8]) -> Decoded {
        let message = if payload.len() > self.max_payload {
            Err(Reject::PayloadTooLarge {
                size: payload.len(),
                limit: self.max_payload,
            })
        } else {
            profile.decode(origin, payload)
        };
        Decoded {
            profile: Some(profile.name.clone()),
            message,
        }
    }
}

fn no_profile(what: &str) -> Decoded {
    Decoded {
        profile: None,
        message: Err(Reject::NoProfile {
            topic: what.to_string(),
        }),
    }
}
