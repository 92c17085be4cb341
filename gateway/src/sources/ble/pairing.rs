//! Pairing (bonding) with BlueZ, for the installer's commands
//! `rpm-gateway ble scan | pair | forget`.
//!
//! Many blood-pressure cuffs and scales (Omron, A&D, Beurer) give their
//! records only to a bonded host: they refuse the CCCD write (ATT
//! insufficient authentication) until paired, then send their memory after
//! each encrypted reconnect. Pairing needs a BlueZ agent
//! (`org.bluez.Agent1`) to answer the device's questions: this module
//! registers one with `AgentManager1` as the default agent for the time of
//! the pairing, answers Just Works, numeric comparison (confirm the number)
//! and passkey entry (the passkey the device shows, given on the command
//! line), calls `Device1.Pair`, sets `Trusted`, and reads Device
//! Information (service 0x180A) for the registry.
//!
//! Plain blocking D-Bus (the `dbus` crate btleplug already links): one
//! connection, method calls sent without blocking, and the agent's calls
//! answered in the same loop while the pairing is in progress.

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::LocalConnection;
use dbus::channel::{BusType, Channel};
use dbus::strings::ErrorName;
use dbus::Message;
use std::collections::HashMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

const BLUEZ: &str = "org.bluez";
const AGENT_PATH: &str = "/org/rpm_gateway/agent";
const ADAPTER1: &str = "org.bluez.Adapter1";
const DEVICE1: &str = "org.bluez.Device1";
const CHAR1: &str = "org.bluez.GattCharacteristic1";
const PROPS: &str = "org.freedesktop.DBus.Properties";

/// Why a pairing command failed: each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// No system bus, or nobody owns org.bluez.
    #[error("bluetooth unavailable: {0} (is bluetoothd running? DBUS_SYSTEM_BUS_ADDRESS?)")]
    NoBluez(String),
    /// No adapter (or not the configured one).
    #[error("no bluetooth adapter{0}: plug one in, or check `sources.ble.adapter`")]
    NoAdapter(String),
    /// The adapter is off.
    #[error("the bluetooth adapter is powered off (rfkill? `bluetoothctl power on`)")]
    AdapterOff,
    /// The device was not seen.
    #[error("device {0} not found: wake it (take a measurement or press its Bluetooth button) and keep it near the gateway, then try again")]
    NotFound(String),
    /// The device did not answer the pairing request.
    #[error("the device did not answer the pairing request: put it in pairing mode (on most cuffs, hold the Bluetooth/clock button until the symbol blinks) and try again ({0})")]
    NotInPairingMode(String),
    /// The passkey was wrong.
    #[error("pairing failed: wrong passkey; run again with the 6 digits the device shows (--passkey NNNNNN)")]
    WrongPasskey,
    /// The device asked for a passkey and none was given.
    #[error("the device asks for a passkey: run again with --passkey and the 6 digits it shows")]
    PasskeyNeeded,
    /// The device (or the user on it) rejected the pairing.
    #[error("pairing rejected ({0}): remove the gateway from the device's own pairing list if it has one, put it in pairing mode again and retry")]
    Rejected(String),
    /// Anything else BlueZ said.
    #[error("bluez: {0}")]
    Bluez(String),
}

fn bluez_err(e: dbus::Error) -> PairingError {
    PairingError::Bluez(format!(
        "{}: {}",
        e.name().unwrap_or("error"),
        e.message().unwrap_or("")
    ))
}

/// A device seen by a scan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nearby {
    /// `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Advertised name.
    pub name: Option<String>,
    /// Advertised services (16-bit ones as `0x1810`).
    pub services: Vec<String>,
    /// Signal strength, dBm.
    pub rssi: Option<i16>,
    /// Bonded with this host.
    pub paired: bool,
}

pub use crate::store::registry::DeviceInformation;

type Objects = HashMap<dbus::Path<'static>, HashMap<String, PropMap>>;

/// A connection to BlueZ and the adapter to use.
pub struct Bluez {
    conn: LocalConnection,
    adapter: String,
}

fn short_uuid(u: &str) -> String {
    match u.strip_suffix("-0000-1000-8000-00805f9b34fb") {
        Some(head) if head.starts_with("0000") && head.len() == 8 => format!("0x{}", &head[4..]),
        _ => u.to_string(),
    }
}

fn prop_str(p: &PropMap, k: &str) -> Option<String> {
    p.get(k).and_then(|v| v.0.as_str()).map(str::to_string)
}

fn prop_bool(p: &PropMap, k: &str) -> bool {
    p.get(k).and_then(|v| v.0.as_u64()).is_some_and(|x| x != 0)
}

/// The 16-bit SIG health services a scan reports.
const HEALTH: [&str; 7] = [
    "0x1810", "0x1808", "0x181d", "0x181b", "0x1809", "0x1822", "0x183a",
];

impl Bluez {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured) and
    /// picks the adapter named `adapter` (`hci0`) or the first one.
    pub fn open(adapter: Option<&str>) -> Result<Bluez, PairingError> {
        let channel = Channel::get_private(BusType::System)
            .map_err(|e| PairingError::NoBluez(e.to_string()))?;
        let conn = LocalConnection::from(channel);
        let mut b = Bluez {
            conn,
            adapter: String::new(),
        };
        let objects = b.objects().map_err(|e| match e {
            PairingError::Bluez(m) => PairingError::NoBluez(m),
            e => e,
        })?;
        let mut adapters: Vec<(&dbus::Path, &PropMap)> = objects
            .iter()
            .filter_map(|(p, i)| i.get(ADAPTER1).map(|a| (p, a)))
            .collect();
        adapters.sort_by(|a, b| a.0.cmp(b.0));
        let found = adapters
            .into_iter()
            .find(|(p, _)| adapter.is_none_or(|n| p.ends_with(&format!("/{n}"))));
        let Some((path, props)) = found else {
            return Err(PairingError::NoAdapter(
                adapter.map(|n| format!(" named {n}")).unwrap_or_default(),
            ));
        };
        if !prop_bool(props, "Powered") {
            return Err(PairingError::AdapterOff);
        }
        b.adapter = path.to_string();
        Ok(b)
    }

    fn call(&self, path: &str, iface: &str, member: &str) -> Result<Message, PairingError> {
        Message::new_method_call(BLUEZ, path.to_string(), iface, member)
            .map_err(PairingError::Bluez)
    }

    fn send(&self, m: Message, timeout: Duration) -> Result<Message, PairingError> {
        self.conn
            .channel()
            .send_with_reply_and_block(m, timeout)
            .map_err(bluez_err)
    }

    fn objects(&self) -> Result<Objects, PairingError> {
        let m = self.call(
            "/",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
        )?;
        let r = self.send(m, Duration::from_secs(10))?;
        r.read1::<Objects>()
            .map_err(|e| PairingError::Bluez(e.to_string()))
    }

    fn device_path(&self, address: &str) -> String {
        format!(
            "{}/dev_{}",
            self.adapter,
            address.to_ascii_uppercase().replace(':', "_")
        )
    }

    fn devices(&self) -> Result<Vec<(String, PropMap)>, PairingError> {
        let prefix = format!("{}/dev_", self.adapter);
        Ok(self
            .objects()?
            .into_iter()
            .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
            .filter_map(|(p, mut i)| i.remove(DEVICE1).map(|d| (p.to_string(), d)))
            .collect())
    }

    fn discovery(&self, on: bool) -> Result<(), PairingError> {
        if on {
            let mut filter = PropMap::new();
            filter.insert(
                "Transport".into(),
                Variant(Box::new("le".to_string()) as Box<dyn RefArg>),
            );
            let m = self
                .call(&self.adapter, ADAPTER1, "SetDiscoveryFilter")?
                .append1(filter);
            self.send(m, Duration::from_secs(5))?;
        }
        let m = self.call(
            &self.adapter,
            ADAPTER1,
            if on {
                "StartDiscovery"
            } else {
                "StopDiscovery"
            },
        )?;
        match self.send(m, Duration::from_secs(5)) {
            // Another client (the gateway) may already be discovering.
            Err(PairingError::Bluez(e)) if e.contains("InProgress") => Ok(()),
            Err(PairingError::Bluez(e)) if !on && e.contains("NotAuthorized") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Lets the bus deliver for `d` (signals are not needed: state is
    /// read back with GetManagedObjects).
    fn pause(&self, d: Duration) {
        let _ = self.conn.channel().read_write(Some(d));
        while self.conn.channel().pop_message().is_some() {}
    }

    /// Scans for `seconds` and lists the devices BlueZ knows that offer a
    /// health service, or are paired, or are registered (`known`).
    pub fn scan(
        &self,
        seconds: u64,
        known: impl Fn(&str) -> bool,
    ) -> Result<Vec<Nearby>, PairingError> {
        self.discovery(true)?;
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            self.pause(Duration::from_millis(100));
        }
        let _ = self.discovery(false);
        let mut out: Vec<Nearby> = self
            .devices()?
            .into_iter()
            .filter_map(|(_, d)| {
                let address = prop_str(&d, "Address")?;
                let services: Vec<String> = d
                    .get("UUIDs")
                    .and_then(|v| v.0.as_iter())
                    .map(|it| {
                        it.filter_map(|u| u.as_str().map(short_uuid))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let paired = prop_bool(&d, "Paired");
                let health = services.iter().any(|s| HEALTH.contains(&s.as_str()));
                (health || paired || known(&address)).then(|| Nearby {
                    name: prop_str(&d, "Alias").or_else(|| prop_str(&d, "Name")),
                    rssi: d
                        .get("RSSI")
                        .and_then(|v| v.0.as_i64())
                        .and_then(|r| i16::try_from(r).ok()),
                    address,
                    services,
                    paired,
                })
            })
            .collect();
        out.sort_by(|a, b| b.rssi.cmp(&a.rssi).then(a.address.cmp(&b.address)));
        Ok(out)
    }

    /// Finds the device, scanning up to `wait` for it.
    fn find(&self, address: &str, wait: Duration) -> Result<String, PairingError> {
        let path = self.device_path(address);
        let known = |b: &Bluez| -> Result<bool, PairingError> {
            Ok(b.devices()?.iter().any(|(p, _)| *p == path))
        };
        if known(self)? {
            return Ok(path);
        }
        self.discovery(true)?;
        let until = Instant::now() + wait;
        let mut found = false;
        while Instant::now() < until {
            self.pause(Duration::from_millis(200));
            if known(self)? {
                found = true;
                break;
            }
        }
        let _ = self.discovery(false);
        if found {
            Ok(path)
        } else {
            Err(PairingError::NotFound(address.to_string()))
        }
    }

    /// Pairs with `address` (passkey entry with `passkey`, numeric
    /// comparison confirmed, or Just Works), trusts it, and reads its
    /// Device Information. Already bonded: only trusts and reads.
    pub fn pair(
        &self,
        address: &str,
        passkey: Option<u32>,
    ) -> Result<DeviceInformation, PairingError> {
        let path = self.find(address, Duration::from_secs(15))?;
        let paired = self
            .devices()?
            .iter()
            .any(|(p, d)| *p == path && prop_bool(d, "Paired"));
        if !paired {
            self.pair_with_agent(&path, passkey)?;
        }
        let m = self
            .call(&path, PROPS, "Set")?
            .append3(DEVICE1, "Trusted", Variant(true));
        self.send(m, Duration::from_secs(5))?;
        Ok(self.device_information(&path).unwrap_or_default())
    }

    fn pair_with_agent(&self, path: &str, passkey: Option<u32>) -> Result<(), PairingError> {
        let mgr = "org.bluez.AgentManager1";
        let m = self
            .call("/org/bluez", mgr, "RegisterAgent")?
            .append2(dbus::Path::from(AGENT_PATH), "KeyboardDisplay");
        self.send(m, Duration::from_secs(5))?;
        let m = self
            .call("/org/bluez", mgr, "RequestDefaultAgent")?
            .append1(dbus::Path::from(AGENT_PATH));
        let r = self.send(m, Duration::from_secs(5)).and_then(|_| {
            let m = self.call(path, DEVICE1, "Pair")?;
            self.await_pairing(m, passkey)
        });
        if let Ok(m) = self.call("/org/bluez", mgr, "UnregisterAgent") {
            let _ = self.send(
                m.append1(dbus::Path::from(AGENT_PATH)),
                Duration::from_secs(5),
            );
        }
        r
    }

    /// Sends `Pair` and answers the agent's calls until its reply.
    fn await_pairing(&self, pair: Message, passkey: Option<u32>) -> Result<(), PairingError> {
        let ch = self.conn.channel();
        let serial = ch
            .send(pair)
            .map_err(|()| PairingError::Bluez("cannot send Pair".into()))?;
        let mut asked_passkey = false;
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            ch.read_write(Some(Duration::from_millis(100)))
                .map_err(|()| PairingError::NoBluez("connection to the bus lost".into()))?;
            while let Some(mut msg) = ch.pop_message() {
                match msg.msg_type() {
                    dbus::MessageType::MethodCall
                        if msg.path().is_some_and(|p| &*p == AGENT_PATH) =>
                    {
                        if msg.member().is_some_and(|m| &*m == "RequestPasskey") {
                            asked_passkey = true;
                        }
                        let _ = ch.send(agent_answer(&msg, passkey));
                    }
                    dbus::MessageType::MethodReturn if msg.get_reply_serial() == Some(serial) => {
                        return Ok(());
                    }
                    dbus::MessageType::Error if msg.get_reply_serial() == Some(serial) => {
                        let (name, text) = match msg.as_result() {
                            Err(e) => (
                                e.name().unwrap_or_default().to_string(),
                                e.message().unwrap_or_default().to_string(),
                            ),
                            Ok(_) => (String::new(), String::new()),
                        };
                        return Err(classify(&name, &text, asked_passkey && passkey.is_none()));
                    }
                    _ => {}
                }
            }
        }
        Err(PairingError::NotInPairingMode("no answer in 60 s".into()))
    }

    /// Reads Device Information over a link of its own. The gateway may
    /// connect to the freshly bonded device at the same moment, take its
    /// memory and disconnect, and in BlueZ a disconnect drops the link for
    /// every client: a read that finds the characteristics gone connects
    /// again (three tries). The link is dropped afterwards only when this
    /// call opened it, so the gateway's own session is left alone.
    fn device_information(&self, path: &str) -> Result<DeviceInformation, PairingError> {
        let connected = |b: &Self| -> Result<bool, PairingError> {
            Ok(b.devices()?
                .iter()
                .any(|(p, d)| p == path && prop_bool(d, "Connected")))
        };
        let was_connected = connected(self)?;
        let mut info = DeviceInformation::default();
        for _ in 0..3 {
            let m = self.call(path, DEVICE1, "Connect")?;
            self.send(m, Duration::from_secs(30))?;
            info = self.read_device_information(path)?;
            if info != DeviceInformation::default() || connected(self)? {
                break;
            }
        }
        if !was_connected {
            // Hand the device back: it reconnects to the gateway
            // (encrypted, bonded) and sends its memory there.
            if let Ok(m) = self.call(path, DEVICE1, "Disconnect") {
                let _ = self.send(m, Duration::from_secs(5));
            }
        }
        Ok(info)
    }

    fn read_device_information(&self, path: &str) -> Result<DeviceInformation, PairingError> {
        // Services are resolved shortly after the connect.
        let until = Instant::now() + Duration::from_secs(10);
        let mut chars: Vec<(String, String)> = Vec::new();
        while Instant::now() < until {
            chars = self
                .objects()?
                .into_iter()
                .filter(|(p, _)| p.starts_with(&format!("{path}/")))
                .filter_map(|(p, mut i)| {
                    let c = i.remove(CHAR1)?;
                    Some((p.to_string(), prop_str(&c, "UUID")?))
                })
                .collect();
            if !chars.is_empty() {
                break;
            }
            self.pause(Duration::from_millis(100));
        }
        let read = |u: &str| -> Option<String> {
            let (p, _) = chars.iter().find(|(_, uuid)| {
                uuid.eq_ignore_ascii_case(&format!("0000{u}-0000-1000-8000-00805f9b34fb"))
            })?;
            let m = self
                .call(p, CHAR1, "ReadValue")
                .ok()?
                .append1(PropMap::new());
            let r = self.send(m, Duration::from_secs(10)).ok()?;
            let bytes: Vec<u8> = r.read1().ok()?;
            let s = String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .trim()
                .to_string();
            (!s.is_empty()).then_some(s)
        };
        Ok(DeviceInformation {
            manufacturer: read("2a29"),
            model: read("2a24"),
            serial_number: read("2a25"),
            firmware: read("2a26"),
        })
    }

    /// Removes the bond (BlueZ forgets the device; pair it again to use it).
    pub fn forget(&self, address: &str) -> Result<bool, PairingError> {
        let path = self.device_path(address);
        if !self.devices()?.iter().any(|(p, _)| *p == path) {
            return Ok(false);
        }
        let m = self
            .call(&self.adapter, ADAPTER1, "RemoveDevice")?
            .append1(dbus::Path::from(path));
        self.send(m, Duration::from_secs(10))?;
        Ok(true)
    }
}

fn reply_error(msg: &Message, name: &str, text: &str) -> Message {
    let n = ErrorName::new(name.to_string())
        .unwrap_or_else(|_| ErrorName::from("org.bluez.Error.Rejected"));
    let t = CString::new(text).unwrap_or_default();
    msg.error(&n, &t)
}

/// The agent's answer to one of BlueZ's questions.
fn agent_answer(msg: &Message, passkey: Option<u32>) -> Message {
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    match member.as_str() {
        "RequestPasskey" => match passkey {
            Some(p) => msg.method_return().append1(p),
            None => reply_error(msg, "org.bluez.Error.Canceled", "no passkey given"),
        },
        "RequestPinCode" => match passkey {
            Some(p) => msg.method_return().append1(format!("{p:06}")),
            None => reply_error(msg, "org.bluez.Error.Canceled", "no passkey given"),
        },
        "RequestConfirmation" => {
            // Numeric comparison: with --passkey the numbers must match;
            // without, the number is shown and accepted.
            let shown: Option<u32> = msg.read2::<dbus::Path, u32>().ok().map(|(_, n)| n);
            match (passkey, shown) {
                (Some(p), Some(n)) if p != n => {
                    reply_error(msg, "org.bluez.Error.Rejected", "numbers differ")
                }
                (_, n) => {
                    if let Some(n) = n {
                        eprintln!("numeric comparison: the device should show {n:06}");
                    }
                    msg.method_return()
                }
            }
        }
        "DisplayPasskey" | "DisplayPinCode" => {
            if let Ok((_, p)) = msg.read2::<dbus::Path, u32>() {
                eprintln!("enter {p:06} on the device");
            }
            msg.method_return()
        }
        "RequestAuthorization" | "AuthorizeService" | "Cancel" | "Release" => msg.method_return(),
        _ => reply_error(
            msg,
            "org.freedesktop.DBus.Error.UnknownMethod",
            "not an Agent1 method",
        ),
    }
}

/// Maps BlueZ's pairing error to what the installer should do.
fn classify(name: &str, text: &str, passkey_missing: bool) -> PairingError {
    let short = name.rsplit('.').next().unwrap_or(name);
    match short {
        _ if passkey_missing => PairingError::PasskeyNeeded,
        "AuthenticationFailed" => PairingError::WrongPasskey,
        "ConnectionAttemptFailed" | "AuthenticationTimeout" | "NoReply" | "Timeout" => {
            PairingError::NotInPairingMode(text.to_string())
        }
        "AuthenticationRejected" | "AuthenticationCanceled" | "Rejected" | "Canceled" => {
            PairingError::Rejected(text.to_string())
        }
        "AlreadyExists" => PairingError::Bluez("already paired".into()),
        _ => PairingError::Bluez(format!("{name}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_errors_say_what_to_do() {
        assert_eq!(
            classify("org.bluez.Error.AuthenticationFailed", "", false),
            PairingError::WrongPasskey
        );
        assert!(matches!(
            classify(
                "org.bluez.Error.ConnectionAttemptFailed",
                "Page Timeout",
                false
            ),
            PairingError::NotInPairingMode(_)
        ));
        assert!(matches!(
            classify("org.bluez.Error.AuthenticationRejected", "", false),
            PairingError::Rejected(_)
        ));
        assert_eq!(
            classify("org.bluez.Error.AuthenticationCanceled", "", true),
            PairingError::PasskeyNeeded
        );
        assert_eq!(short_uuid("00001810-0000-1000-8000-00805f9b34fb"), "0x1810");
    }
}
