//! Declarative BLE device profiles: which devices the gateway picks up, and
//! what to decode from them, as TOML files (no code).
//!
//! A standard health device (one that advertises a Bluetooth SIG health
//! service) needs no profile: the gateway subscribes to every SIG
//! characteristic it decodes. A profile is for the rest:
//!
//! ```toml
//! name = "acme-scale"
//! description = "ACME broadcast scale"
//! connect = false                 # advertisement only (default: true when characteristics are listed)
//!
//! [match]                         # any one of these picks the device up
//! services = [0x181D]             # advertised service UUIDs (16-bit number or 128-bit string)
//! name_prefixes = ["ACME"]        # advertised local name starts with
//! manufacturer_ids = [0x0157]     # manufacturer data company id
//! service_data = [0x181D]         # service data present under this UUID
//! addresses = ["AA:BB:CC:DD:EE:FF"]
//!
//! [[characteristic]]              # GATT characteristics to subscribe to
//! uuid = 0x2A9D                   # a SIG characteristic: decoded by the built-in decoder
//! [[characteristic]]
//! uuid = "0000fff1-0000-1000-8000-00805f9b34fb"
//! layout = "acme-weight"          # a proprietary one: a vendor byte layout (by name, or inline table)
//!
//! [[advertisement]]               # readings broadcast without a connection
//! service_data = 0x181D           # or: manufacturer_id = 0x0157
//! layout = "xiaomi-scale-v1"
//! ```
//!
//! Layouts are [`Layout`] files (see [`super::layout`]); a profile names a
//! bundled or loaded one, or writes it inline as a table.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::layout::{Layout, LayoutError, LayoutSpec};

/// A Bluetooth UUID, 128 bits. 16-bit SIG UUIDs sit in the Bluetooth base
/// UUID `0000xxxx-0000-1000-8000-00805f9b34fb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BleUuid(pub u128);

const BASE: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;
const SHORT_MASK: u128 = !(0xFFFF_FFFFu128 << 96);

impl BleUuid {
    /// The 128-bit form of a 16-bit SIG UUID.
    pub const fn from_u16(short: u16) -> Self {
        BleUuid(BASE | ((short as u128) << 96))
    }

    /// The 16-bit SIG UUID, when this is one.
    pub fn as_u16(self) -> Option<u16> {
        let top = (self.0 >> 96) as u32;
        (self.0 & SHORT_MASK == BASE && top <= 0xFFFF).then_some(top as u16)
    }

    /// Parses `0000180d-0000-1000-8000-00805f9b34fb`, `180d` or `0x180D`.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if t.len() <= 4 {
            return u16::from_str_radix(t, 16).ok().map(Self::from_u16);
        }
        let hex: String = t.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || t.len() != 36 {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(BleUuid)
    }

    /// Short id for origins and logs: `2a35` for SIG UUIDs, else the full form.
    pub fn short_name(self) -> String {
        match self.as_u16() {
            Some(u) => format!("{u:04x}"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for BleUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl<'de> Deserialize<'de> for BleUuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Short(u16),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Short(u) => Ok(BleUuid::from_u16(u)),
            Raw::Text(s) => BleUuid::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a UUID (0x2A9D or 0000fff1-0000-1000-8000-00805f9b34fb)"
                ))
            }),
        }
    }
}

/// Normalises a Bluetooth address to `AA:BB:CC:DD:EE:FF`; `None` if it is not one.
pub fn normalize_address(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split([':', '-', '_']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_uppercase())
}

/// What an advertisement showed (the part profiles match on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvertisementView<'a> {
    /// Normalised address.
    pub address: &'a str,
    /// Local name.
    pub name: Option<&'a str>,
    /// Advertised service UUIDs.
    pub services: &'a [BleUuid],
    /// Manufacturer data company ids.
    pub manufacturer_ids: Vec<u16>,
    /// Service data UUIDs.
    pub service_data: Vec<BleUuid>,
}

/// `[match]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceMatch {
    /// Any of these advertised services.
    pub services: Vec<BleUuid>,
    /// Local name starts with one of these.
    pub name_prefixes: Vec<String>,
    /// Manufacturer data with one of these company ids.
    pub manufacturer_ids: Vec<u16>,
    /// Service data under one of these UUIDs.
    pub service_data: Vec<BleUuid>,
    /// One of these addresses.
    pub addresses: Vec<String>,
}

impl DeviceMatch {
    fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.name_prefixes.is_empty()
            && self.manufacturer_ids.is_empty()
            && self.service_data.is_empty()
            && self.addresses.is_empty()
    }

    /// True when the advertisement satisfies one of the criteria.
    pub fn matches(&self, ad: &AdvertisementView<'_>) -> bool {
        self.addresses
            .iter()
            .any(|a| normalize_address(a).as_deref() == Some(ad.address))
            || self.services.iter().any(|s| ad.services.contains(s))
            || self
                .service_data
                .iter()
                .any(|s| ad.service_data.contains(s))
            || self
                .manufacturer_ids
                .iter()
                .any(|m| ad.manufacturer_ids.contains(m))
            || ad
                .name
                .is_some_and(|n| self.name_prefixes.iter().any(|p| n.starts_with(p.as_str())))
    }
}

/// A layout by name or written inline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LayoutRef {
    /// Name of a bundled or loaded layout.
    Named(String),
    /// Inline layout table.
    Inline(Box<LayoutSpec>),
}

/// `[[characteristic]]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharacteristicSpec {
    uuid: BleUuid,
    #[serde(default)]
    layout: Option<LayoutRef>,
}

/// `[[advertisement]]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvertisementSpec {
    #[serde(default)]
    service_data: Option<BleUuid>,
    #[serde(default)]
    manufacturer_id: Option<u16>,
    layout: LayoutRef,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    connect: Option<bool>,
    #[serde(rename = "match")]
    matcher: DeviceMatch,
    #[serde(default, rename = "characteristic")]
    characteristics: Vec<CharacteristicSpec>,
    #[serde(default, rename = "advertisement")]
    advertisements: Vec<AdvertisementSpec>,
}

/// How the bytes of a characteristic or advertisement are decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DecoderKind {
    /// The built-in decoder of a SIG characteristic.
    Sig(u16),
    /// A vendor byte layout.
    Layout(Layout),
}

/// Where advertised readings are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertisementKey {
    /// Service data under this UUID.
    ServiceData(BleUuid),
    /// Manufacturer data with this company id.
    Manufacturer(u16),
}

/// A validated BLE device profile.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Connect to the device (GATT); false for broadcast-only devices.
    pub connect: bool,
    /// Which devices it applies to.
    pub matcher: DeviceMatch,
    /// Characteristics to subscribe to, with their decoder.
    pub characteristics: Vec<(BleUuid, DecoderKind)>,
    /// Advertised readings.
    pub advertisements: Vec<(AdvertisementKey, Layout)>,
}

/// Why a BLE profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceProfileError {
    /// Unreadable or not valid TOML.
    #[error("BLE profile {source_name}: {message}")]
    Parse {
        /// file
        source_name: String,
        /// what
        message: String,
    },
    /// A layout in it was refused.
    #[error("BLE profile {source_name}: {error}")]
    Layout {
        /// file
        source_name: String,
        /// the layout error
        error: LayoutError,
    },
    /// Parsed but inconsistent.
    #[error("BLE profile {source_name}: {message}")]
    Invalid {
        /// file
        source_name: String,
        /// what
        message: String,
    },
}

/// The bundled layouts (`profiles/ble/*.toml`).
const BUNDLED_LAYOUTS: &[(&str, &str)] = &[
    (
        "xiaomi-scale-v1.toml",
        include_str!("../../profiles/ble/xiaomi-scale-v1.toml"),
    ),
    (
        "xiaomi-scale-v2.toml",
        include_str!("../../profiles/ble/xiaomi-scale-v2.toml"),
    ),
];

/// The bundled device profiles (`profiles/ble/devices/*.toml`).
const BUNDLED_PROFILES: &[(&str, &str)] = &[
    (
        "devices/xiaomi-scale-v1.toml",
        include_str!("../../profiles/ble/devices/xiaomi-scale-v1.toml"),
    ),
    (
        "devices/xiaomi-scale-v2.toml",
        include_str!("../../profiles/ble/devices/xiaomi-scale-v2.toml"),
    ),
];

/// The SIG health services whose advertisement alone makes the gateway
/// connect (no profile needed).
pub const HEALTH_SERVICES: &[u16] = &[
    super::uuid::SERVICE_BLOOD_PRESSURE,
    super::uuid::SERVICE_WEIGHT_SCALE,
    super::uuid::SERVICE_BODY_COMPOSITION,
    super::uuid::SERVICE_GLUCOSE,
    super::uuid::SERVICE_HEALTH_THERMOMETER,
    super::uuid::SERVICE_HEART_RATE,
    super::uuid::SERVICE_PULSE_OXIMETER,
];

/// The SIG characteristics subscribed to on a standard health device.
pub const SIG_SUBSCRIBE: &[u16] = &[
    super::uuid::BLOOD_PRESSURE_MEASUREMENT,
    super::uuid::WEIGHT_MEASUREMENT,
    super::uuid::BODY_COMPOSITION_MEASUREMENT,
    super::uuid::GLUCOSE_MEASUREMENT,
    super::uuid::GLUCOSE_MEASUREMENT_CONTEXT,
    super::uuid::TEMPERATURE_MEASUREMENT,
    super::uuid::PLX_SPOT_CHECK_MEASUREMENT,
    super::uuid::PLX_CONTINUOUS_MEASUREMENT,
    super::uuid::HEART_RATE_MEASUREMENT,
    super::uuid::RECORD_ACCESS_CONTROL_POINT,
];

/// Layouts and device profiles, bundled and loaded.
#[derive(Debug, Clone, Default)]
pub struct DeviceProfileSet {
    layouts: BTreeMap<String, Layout>,
    profiles: Vec<DeviceProfile>,
}

impl DeviceProfileSet {
    /// The bundled layouts and profiles.
    pub fn bundled() -> Self {
        let mut set = DeviceProfileSet::default();
        for (file, text) in BUNDLED_LAYOUTS {
            if let Ok(l) = Layout::from_toml_str(text) {
                set.layouts.insert(l.name().to_string(), l);
            } else {
                debug_assert!(false, "bundled layout {file} is invalid");
            }
        }
        for (file, text) in BUNDLED_PROFILES {
            match set.parse_profile(text, file) {
                Ok(p) => set.profiles.push(p),
                Err(e) => debug_assert!(false, "bundled profile {file}: {e}"),
            }
        }
        set
    }

    /// Adds a file: a device profile (it has a `[match]` table) or a layout.
    pub fn add_text(&mut self, text: &str, source_name: &str) -> Result<(), DeviceProfileError> {
        let is_profile = toml::from_str::<toml::Table>(text)
            .map(|t| t.contains_key("match"))
            .unwrap_or(true);
        if is_profile {
            let p = self.parse_profile(text, source_name)?;
            self.profiles.retain(|q| q.name != p.name);
            self.profiles.push(p);
        } else {
            let l = Layout::from_toml_str(text).map_err(|error| DeviceProfileError::Layout {
                source_name: source_name.into(),
                error,
            })?;
            self.layouts.insert(l.name().to_string(), l);
        }
        Ok(())
    }

    /// Adds every `*.toml` of a directory (layouts first, then profiles, so
    /// a profile may name a layout of the same directory). Returns every error.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), Vec<DeviceProfileError>> {
        let io = |e: std::io::Error| {
            vec![DeviceProfileError::Parse {
                source_name: dir.display().to_string(),
                message: e.to_string(),
            }]
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                let is_profile = toml::from_str::<toml::Table>(&text)
                    .map(|t| t.contains_key("match"))
                    .unwrap_or(true);
                files.push((is_profile, path, text));
            }
        }
        files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let errors: Vec<_> = files
            .iter()
            .filter_map(|(_, p, t)| self.add_text(t, &p.display().to_string()).err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn resolve(&self, r: &LayoutRef, source_name: &str) -> Result<Layout, DeviceProfileError> {
        match r {
            LayoutRef::Named(n) => {
                self.layouts
                    .get(n)
                    .cloned()
                    .ok_or_else(|| DeviceProfileError::Invalid {
                        source_name: source_name.into(),
                        message: format!("layout `{n}` is not known"),
                    })
            }
            LayoutRef::Inline(spec) => {
                Layout::from_spec((**spec).clone()).map_err(|error| DeviceProfileError::Layout {
                    source_name: source_name.into(),
                    error,
                })
            }
        }
    }

    fn parse_profile(
        &self,
        text: &str,
        source_name: &str,
    ) -> Result<DeviceProfile, DeviceProfileError> {
        let spec: ProfileSpec = toml::from_str(text).map_err(|e| DeviceProfileError::Parse {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| DeviceProfileError::Invalid {
            source_name: source_name.into(),
            message,
        };
        if spec.name.trim().is_empty() {
            return Err(invalid("name is empty".into()));
        }
        if spec.matcher.is_empty() {
            return Err(invalid("[match] has no criterion".into()));
        }
        if let Some(a) = spec
            .matcher
            .addresses
            .iter()
            .find(|a| normalize_address(a).is_none())
        {
            return Err(invalid(format!("`{a}` is not a Bluetooth address")));
        }
        let mut characteristics = Vec::new();
        for c in &spec.characteristics {
            let kind = match &c.layout {
                Some(r) => DecoderKind::Layout(self.resolve(r, source_name)?),
                None => match c.uuid.as_u16() {
                    Some(u) if SIG_SUBSCRIBE.contains(&u) => DecoderKind::Sig(u),
                    _ => {
                        return Err(invalid(format!(
                            "characteristic {} has no built-in decoder: give it a layout",
                            c.uuid
                        )))
                    }
                },
            };
            characteristics.push((c.uuid, kind));
        }
        let mut advertisements = Vec::new();
        for a in &spec.advertisements {
            let key = match (a.service_data, a.manufacturer_id) {
                (Some(u), None) => AdvertisementKey::ServiceData(u),
                (None, Some(m)) => AdvertisementKey::Manufacturer(m),
                _ => return Err(invalid(
                    "an [[advertisement]] needs exactly one of service_data and manufacturer_id"
                        .into(),
                )),
            };
            advertisements.push((key, self.resolve(&a.layout, source_name)?));
        }
        if characteristics.is_empty() && advertisements.is_empty() {
            return Err(invalid(
                "the profile lists no [[characteristic]] and no [[advertisement]]".into(),
            ));
        }
        let connect = spec.connect.unwrap_or(!characteristics.is_empty());
        Ok(DeviceProfile {
            name: spec.name,
            description: spec.description,
            connect,
            matcher: spec.matcher,
            characteristics,
            advertisements,
        })
    }

    /// The profiles, in load order.
    pub fn profiles(&self) -> &[DeviceProfile] {
        &self.profiles
    }

    /// A profile by name.
    pub fn by_name(&self, name: &str) -> Option<&DeviceProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// A layout by name.
    pub fn layout(&self, name: &str) -> Option<&Layout> {
        self.layouts.get(name)
    }

    /// The profile for an advertisement: the last loaded one that matches
    /// (so a local file overrides a bundled one).
    pub fn for_advertisement(&self, ad: &AdvertisementView<'_>) -> Option<&DeviceProfile> {
        self.profiles.iter().rev().find(|p| p.matcher.matches(ad))
    }
}

/// True when the advertisement names a SIG health service.
pub fn advertises_health_service(services: &[BleUuid]) -> bool {
    services
        .iter()
        .any(|s| s.as_u16().is_some_and(|u| HEALTH_SERVICES.contains(&u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let u = BleUuid::from_u16(0x2A35);
        assert_eq!(u.to_string(), "00002a35-0000-1000-8000-00805f9b34fb");
        assert_eq!(BleUuid::parse(&u.to_string()), Some(u));
        assert_eq!(BleUuid::parse("0x2A35"), Some(u));
        assert_eq!(u.as_u16(), Some(0x2A35));
        let v = BleUuid::parse("0000fff1-0000-1000-8000-00805f9b34fc").unwrap();
        assert_eq!(v.as_u16(), None);
        assert_eq!(u.short_name(), "2a35");
        assert_eq!(BleUuid::parse("xyz"), None);
        assert_eq!(
            normalize_address("aa-bb-cc-dd-ee-0f").as_deref(),
            Some("AA:BB:CC:DD:EE:0F")
        );
        assert_eq!(normalize_address("aa:bb"), None);
    }

    #[test]
    fn bundled_profiles_load_and_match() {
        let set = DeviceProfileSet::bundled();
        assert_eq!(set.profiles().len(), 2);
        let sd = [BleUuid::from_u16(0x181D)];
        let ad = AdvertisementView {
            address: "AA:BB:CC:DD:EE:FF",
            name: Some("MI SCALE2"),
            services: &[],
            manufacturer_ids: vec![],
            service_data: sd.to_vec(),
        };
        let p = set.for_advertisement(&ad).unwrap();
        assert_eq!(p.name, "xiaomi-scale-v1");
        assert!(!p.connect);
    }

    /// The example of docs/device-vendors.md "Adding a vendor Bluetooth device".
    #[test]
    fn readme_example_profile() {
        let mut set = DeviceProfileSet::bundled();
        let text = r#"
name = "acme-scale"
connect = false
[match]
name_prefixes = ["ACME-SCALE"]
service_data = [0xFFF0]
[[advertisement]]
service_data = 0xFFF0
[advertisement.layout]
name = "acme-scale-adv"
length = 9
[[advertisement.layout.require]]
name = "stable"
offset = 0
mask = 0x01
value = 0x01
[[advertisement.layout.field]]
name = "weight"
offset = 1
type = "u16"
scale = 0.01
unit = "kg"
metric = "body_weight"
[advertisement.layout.timestamp]
offset = 3
format = "unix_seconds"
"#;
        set.add_text(text, "acme-scale.toml").unwrap();
        let p = set.by_name("acme-scale").unwrap();
        let (key, layout) = &p.advertisements[0];
        assert_eq!(
            *key,
            AdvertisementKey::ServiceData(BleUuid::from_u16(0xFFF0))
        );
        let m = layout
            .decode_ready(&[0x01, 0x52, 0x1C, 0, 0, 0, 0x60, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(m.components[0].value, crate::RawValue::Number(72.5));
        assert!(layout
            .decode_ready(&[0x00, 0x52, 0x1C, 0, 0, 0, 0x60, 0, 0])
            .unwrap()
            .is_none());
    }

    #[test]
    fn vendor_profile_with_inline_layout_and_errors() {
        let mut set = DeviceProfileSet::bundled();
        let text = r#"
name = "acme-weight"
[match]
name_prefixes = ["ACME-W"]
[[characteristic]]
uuid = "0000fff1-0000-1000-8000-00805f9b34fb"
[characteristic.layout]
name = "acme-weight-v1"
length = 2
[[characteristic.layout.field]]
name = "weight"
offset = 0
type = "u16"
scale = 0.1
unit = "kg"
metric = "body_weight"
"#;
        set.add_text(text, "acme.toml").unwrap();
        let p = set.by_name("acme-weight").unwrap();
        assert!(p.connect);
        assert!(matches!(p.characteristics[0].1, DecoderKind::Layout(_)));
        let bad = "name = \"x\"\n[match]\nservices = [0x1810]\n[[characteristic]]\nuuid = 0xFFF1\n";
        assert!(set.add_text(bad, "bad.toml").is_err());
        let bad = "name = \"x\"\n[match]\n[[advertisement]]\nservice_data = 0x181D\nlayout = \"xiaomi-scale-v1\"\n";
        assert!(set.add_text(bad, "bad.toml").is_err());
        let bad = "name = \"x\"\n[match]\nservices = [0x1810]\nlayout = 3\n";
        assert!(set.add_text(bad, "bad.toml").is_err());
    }
}
