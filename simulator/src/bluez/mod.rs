//! A BlueZ D-Bus emulator: owns `org.bluez` on a (private) system bus and
//! exposes an adapter, simulated devices ([`crate::ble::SimDevice`]), their
//! GATT services, characteristics and descriptors, with notifications —
//! exactly what btleplug 0.13 / bluez-async use (see `shared/bluez.md`).
//! The gateway, pointed at the bus with `DBUS_SYSTEM_BUS_ADDRESS`, runs its
//! real btleplug code path against it; vendors can reuse it to check a
//! device model without a radio.
//!
//! Single-threaded: one loop reads messages, answers them, and sends
//! scheduled values (notifications go out shortly after the StartNotify or
//! WriteValue reply, as over the air). Control commands (forced disconnect,
//! new records) arrive on a channel; events (connections, RACP requests) are
//! reported on another, one line each.

mod bus;
pub mod cli;

pub use bus::PrivateBus;

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::LocalConnection;
use dbus::strings::ErrorName;
use dbus::Message;
use device_profiles::gatt::device::BleUuid;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ble::{SimDevice, StoredRecord, Tagged};

/// Emulator failures.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// D-Bus said no.
    #[error("d-bus: {0}")]
    Dbus(#[from] dbus::Error),
    /// Another process owns org.bluez.
    #[error("cannot own org.bluez on this bus")]
    NameTaken,
    /// The private bus could not start.
    #[error("dbus-daemon: {0}")]
    Daemon(String),
}

/// A control command.
#[derive(Debug, Clone)]
pub enum Command {
    /// Drop the device's link (Connected=false), as out of range.
    Disconnect(String),
    /// Add a glucose record (mg/dL).
    AddGlucose(String, f64),
    /// Add a BP measurement taken now (systolic, diastolic).
    AddBp(String, f64, f64),
    /// Add a device.
    Add(Box<SimDevice>),
    /// Store a measurement in a device's memory; sent at once if the
    /// device is connected and the collector listens (a live reading), else
    /// with the memory on the next connection.
    Store(String, Box<StoredRecord>),
    /// Power the adapter off (links drop) or on.
    Power(bool),
    /// Store `n` blood-pressure records (distinct times, tagged) in a cuff,
    /// all at once: sent together if it is connected and listened to.
    StoreBp(String, usize),
    /// bluetoothd restarts: links drop without a signal, the `org.bluez`
    /// name changes owner, the adapter comes back powered, not discovering.
    Restart,
    /// The glucometer is reset (or replaced): its memory is cleared and its
    /// sequence numbers start again at 1.
    ResetMeter(String),
    /// The next `n` connects of a device stall in service discovery
    /// (Connected, never ServicesResolved).
    Stall(String, u32),
    /// Put a device in pairing mode (it accepts a Pair) or take it out.
    PairingMode(String, bool),
    /// Stop the emulator.
    Quit,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Adapter name (`hci0`).
    pub adapter: String,
    /// Adapter address.
    pub adapter_address: String,
    /// How often devices "advertise" (an RSSI PropertiesChanged) while discovering.
    pub advertise_every: Duration,
    /// Delay between a StartNotify/WriteValue reply and the first value.
    pub notify_delay: Duration,
    /// The bus address (`unix:path=...`); the system bus
    /// (`DBUS_SYSTEM_BUS_ADDRESS`) when `None`.
    pub bus: Option<String>,
    /// Devices drop the link after this long without sending anything, as
    /// real ones do once their memory is sent (never when `None`).
    pub idle_disconnect: Option<Duration>,
    /// Devices advertise only while they hold tagged records not yet sent
    /// (a real cuff sleeps between measurements), so that a gateway with
    /// fewer connection slots than devices gets to every one of them.
    pub quiet_when_sent: bool,
    /// Devices hang up in the very instant their last pending value goes
    /// out (0 ms), as cuffs that send their memory and disconnect at once.
    pub hang_up_when_sent: bool,
    /// Devices send each tagged record once: what was delivered is not
    /// replayed on the next connection (the device saw it acknowledged).
    pub send_once: bool,
    /// `Properties.Set(Powered)` signals `PropertiesChanged` even when the
    /// value does not change, as some bluetoothd versions do.
    pub resignal_powered: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            adapter: "hci0".into(),
            adapter_address: "00:1A:7D:DA:71:13".into(),
            advertise_every: Duration::from_millis(500),
            notify_delay: Duration::from_millis(100),
            bus: None,
            idle_disconnect: None,
            quiet_when_sent: false,
            hang_up_when_sent: false,
            send_once: false,
            resignal_powered: false,
        }
    }
}

const ADAPTER1: &str = "org.bluez.Adapter1";
const DEVICE1: &str = "org.bluez.Device1";
const SERVICE1: &str = "org.bluez.GattService1";
const CHAR1: &str = "org.bluez.GattCharacteristic1";
const DESC1: &str = "org.bluez.GattDescriptor1";
const PROPS: &str = "org.freedesktop.DBus.Properties";
const OBJMGR: &str = "org.freedesktop.DBus.ObjectManager";
const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
const CCCD: u16 = 0x2902;
const AGENT_MANAGER1: &str = "org.bluez.AgentManager1";
const AGENT1: &str = "org.bluez.Agent1";

struct Dev {
    sim: SimDevice,
    connected: bool,
    notifying: HashSet<BleUuid>,
    rssi: i16,
    /// Last connect, write or sent value (idle disconnect).
    active_at: Instant,
    /// Tags of stored records not yet sent to a listening collector.
    unsent: HashSet<u64>,
    /// Values sent on the current connection (hang up when sent).
    sent: usize,
    /// Connects still to stall in service discovery.
    stall: u32,
    /// A bond is stored (both sides): Paired, Bonded.
    bonded: bool,
    /// Trusted (set by the host).
    trusted: bool,
    /// The device accepts pairing.
    pairing_mode: bool,
}

impl Dev {
    fn new(sim: SimDevice) -> Dev {
        Dev {
            sim,
            connected: false,
            notifying: HashSet::new(),
            rssi: -60,
            active_at: Instant::now(),
            unsent: HashSet::new(),
            sent: 0,
            stall: 0,
            bonded: false,
            trusted: false,
            pairing_mode: false,
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obj {
    Root,
    Inner(usize),
    Adapter,
    Device(usize),
    Service(usize, usize),
    Char(usize, usize, usize),
    Desc(usize, usize, usize),
}

/// A value to send: (when, device, characteristic, value, tag of the
/// record it carries).
type Scheduled = (Instant, usize, BleUuid, Vec<u8>, Option<u64>);

struct Emulator {
    cfg: EmulatorConfig,
    powered: bool,
    discovering: bool,
    /// Clients (bus names) with a discovery session.
    discovery_clients: HashSet<String>,
    devices: Vec<Dev>,
    scheduled: Vec<Scheduled>,
    events: mpsc::Sender<String>,
    /// Tags given to records stored by [`Command::StoreBp`].
    next_tag: u64,
    /// The default pairing agent: (bus name, object path).
    agent: Option<(String, String)>,
    /// Pairings waiting for the agent's answer, by the serial of the call
    /// made to it.
    pairing: HashMap<u32, PendingPair>,
    next_serial: u32,
}

/// A `Device1.Pair` waiting for the agent, with its possible replies.
struct PendingPair {
    device: usize,
    method: crate::ble::PairingMethod,
    ok: Message,
    failed: Message,
    rejected: Message,
    canceled: Message,
}

type AnyVariant = Variant<Box<dyn RefArg>>;

fn var<T: RefArg + 'static>(v: T) -> Variant<Box<dyn RefArg>> {
    Variant(Box::new(v))
}

fn dev_node(address: &str) -> String {
    format!("dev_{}", address.replace(':', "_"))
}

impl Emulator {
    fn adapter_path(&self) -> String {
        format!("/org/bluez/{}", self.cfg.adapter)
    }

    fn dev_path(&self, i: usize) -> String {
        format!(
            "{}/{}",
            self.adapter_path(),
            dev_node(&self.devices[i].sim.address)
        )
    }

    fn svc_path(&self, i: usize, s: usize) -> String {
        format!("{}/service{:04x}", self.dev_path(i), s + 1)
    }

    fn char_path(&self, i: usize, s: usize, c: usize) -> String {
        format!("{}/char{:04x}", self.svc_path(i, s), c + 1)
    }

    fn desc_path(&self, i: usize, s: usize, c: usize) -> String {
        format!("{}/desc{:04x}", self.char_path(i, s, c), 1)
    }

    fn has_cccd(&self, i: usize, s: usize, c: usize) -> bool {
        self.devices[i].sim.services()[s].characteristics[c]
            .1
            .bluez_flags()
            .iter()
            .any(|f| *f == "notify" || *f == "indicate")
    }

    fn resolve(&self, path: &str) -> Option<Obj> {
        match path {
            "/" => return Some(Obj::Root),
            "/org" => return Some(Obj::Inner(0)),
            "/org/bluez" => return Some(Obj::Inner(1)),
            _ => {}
        }
        let ap = self.adapter_path();
        if path == ap {
            return Some(Obj::Adapter);
        }
        let rest = path.strip_prefix(&ap)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let dev = parts.next()?;
        let i = self
            .devices
            .iter()
            .position(|d| dev_node(&d.sim.address) == dev)?;
        let Some(svc) = parts.next() else {
            return Some(Obj::Device(i));
        };
        let d = &self.devices[i];
        if !d.connected {
            return None;
        }
        let s = usize::from_str_radix(svc.strip_prefix("service")?, 16)
            .ok()?
            .checked_sub(1)?;
        let services = d.sim.services();
        let service = services.get(s)?;
        let Some(ch) = parts.next() else {
            return Some(Obj::Service(i, s));
        };
        let c = usize::from_str_radix(ch.strip_prefix("char")?, 16)
            .ok()?
            .checked_sub(1)?;
        service.characteristics.get(c)?;
        match parts.next() {
            None => Some(Obj::Char(i, s, c)),
            Some("desc0001") if self.has_cccd(i, s, c) && parts.next().is_none() => {
                Some(Obj::Desc(i, s, c))
            }
            _ => None,
        }
    }

    fn adapter_props(&self) -> PropMap {
        let mut m = PropMap::new();
        m.insert("Address".into(), var(self.cfg.adapter_address.clone()));
        m.insert("AddressType".into(), var("public".to_string()));
        m.insert("Name".into(), var("rpm-bluez-emulator".to_string()));
        m.insert("Alias".into(), var("rpm-bluez-emulator".to_string()));
        m.insert("Class".into(), var(0u32));
        m.insert("Powered".into(), var(self.powered));
        m.insert("Discoverable".into(), var(false));
        m.insert("Pairable".into(), var(true));
        m.insert("Discovering".into(), var(self.discovering));
        m.insert("UUIDs".into(), var(Vec::<String>::new()));
        m.insert("Modalias".into(), var("usb:v1D6Bp0246d0540".to_string()));
        m
    }

    fn device_props(&self, i: usize) -> PropMap {
        let d = &self.devices[i];
        let mut m = PropMap::new();
        m.insert("Address".into(), var(d.sim.address.clone()));
        m.insert("AddressType".into(), var("public".to_string()));
        m.insert("Name".into(), var(d.sim.name.clone()));
        m.insert("Alias".into(), var(d.sim.name.clone()));
        m.insert("Paired".into(), var(d.bonded));
        m.insert("Bonded".into(), var(d.bonded));
        m.insert("Trusted".into(), var(d.trusted));
        m.insert("Blocked".into(), var(false));
        m.insert("LegacyPairing".into(), var(false));
        m.insert("Connected".into(), var(d.connected));
        m.insert("ServicesResolved".into(), var(d.connected && d.stall == 0));
        m.insert("RSSI".into(), var(d.rssi));
        m.insert("Adapter".into(), var(dbus::Path::from(self.adapter_path())));
        let uuids: Vec<String> = d
            .sim
            .advertised_services()
            .iter()
            .map(|u| u.to_string())
            .collect();
        m.insert("UUIDs".into(), var(uuids));
        let sd = d.sim.service_data();
        if !sd.is_empty() {
            let map: HashMap<String, Variant<Box<dyn RefArg>>> = sd
                .into_iter()
                .map(|(k, v)| (k.to_string(), var(v)))
                .collect();
            m.insert("ServiceData".into(), var(map));
        }
        m
    }

    fn service_props(&self, i: usize, s: usize) -> PropMap {
        let svc = &self.devices[i].sim.services()[s];
        let mut m = PropMap::new();
        m.insert("UUID".into(), var(svc.uuid.to_string()));
        m.insert("Primary".into(), var(true));
        m.insert("Device".into(), var(dbus::Path::from(self.dev_path(i))));
        m
    }

    fn char_props(&self, i: usize, s: usize, c: usize) -> PropMap {
        let (uuid, props) = self.devices[i].sim.services()[s].characteristics[c];
        let mut m = PropMap::new();
        m.insert("UUID".into(), var(uuid.to_string()));
        m.insert("Service".into(), var(dbus::Path::from(self.svc_path(i, s))));
        let flags: Vec<String> = props.bluez_flags().iter().map(|f| f.to_string()).collect();
        m.insert("Flags".into(), var(flags));
        m.insert(
            "Notifying".into(),
            var(self.devices[i].notifying.contains(&uuid)),
        );
        m.insert("MTU".into(), var(247u16));
        m
    }

    fn desc_props(&self, i: usize, s: usize, c: usize) -> PropMap {
        let mut m = PropMap::new();
        m.insert("UUID".into(), var(BleUuid::from_u16(CCCD).to_string()));
        m.insert(
            "Characteristic".into(),
            var(dbus::Path::from(self.char_path(i, s, c))),
        );
        m
    }

    /// Interfaces of an object with their properties.
    fn interfaces(&self, o: Obj) -> Vec<(&'static str, PropMap)> {
        match o {
            Obj::Root | Obj::Inner(_) => vec![],
            Obj::Adapter => vec![(ADAPTER1, self.adapter_props())],
            Obj::Device(i) => vec![(DEVICE1, self.device_props(i))],
            Obj::Service(i, s) => vec![(SERVICE1, self.service_props(i, s))],
            Obj::Char(i, s, c) => vec![(CHAR1, self.char_props(i, s, c))],
            Obj::Desc(i, s, c) => vec![(DESC1, self.desc_props(i, s, c))],
        }
    }

    fn children(&self, o: Obj) -> Vec<String> {
        match o {
            Obj::Root => vec!["org".into()],
            Obj::Inner(0) => vec!["bluez".into()],
            Obj::Inner(_) => vec![self.cfg.adapter.clone()],
            Obj::Adapter => self
                .devices
                .iter()
                .map(|d| dev_node(&d.sim.address))
                .collect(),
            Obj::Device(i) if self.devices[i].connected => {
                (0..self.devices[i].sim.services().len())
                    .map(|s| format!("service{:04x}", s + 1))
                    .collect()
            }
            Obj::Device(_) => vec![],
            Obj::Service(i, s) => (0..self.devices[i].sim.services()[s].characteristics.len())
                .map(|c| format!("char{:04x}", c + 1))
                .collect(),
            Obj::Char(i, s, c) if self.has_cccd(i, s, c) => vec!["desc0001".into()],
            Obj::Char(..) | Obj::Desc(..) => vec![],
        }
    }

    /// Introspection XML: interfaces first, then child nodes (bluez-async's
    /// parser needs them contiguous, bluez.md §1).
    fn introspect(&self, o: Obj) -> String {
        let mut x = String::from(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n",
        );
        x.push_str(&format!(
            " <interface name=\"{INTROSPECTABLE}\"><method name=\"Introspect\"><arg name=\"xml\" type=\"s\" direction=\"out\"/></method></interface>\n"
        ));
        if o == Obj::Root {
            x.push_str(&format!(" <interface name=\"{OBJMGR}\"><method name=\"GetManagedObjects\"><arg name=\"objects\" type=\"a{{oa{{sa{{sv}}}}}}\" direction=\"out\"/></method></interface>\n"));
        }
        let ifaces = self.interfaces(o);
        if !ifaces.is_empty() {
            x.push_str(&format!(" <interface name=\"{PROPS}\"><method name=\"Get\"><arg name=\"interface\" type=\"s\" direction=\"in\"/><arg name=\"name\" type=\"s\" direction=\"in\"/><arg name=\"value\" type=\"v\" direction=\"out\"/></method></interface>\n"));
        }
        for (name, props) in ifaces {
            x.push_str(&format!(" <interface name=\"{name}\">\n"));
            let mut keys: Vec<_> = props.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in keys {
                let sig = v.0.signature();
                x.push_str(&format!(
                    "  <property name=\"{k}\" type=\"{sig}\" access=\"read\"/>\n"
                ));
            }
            x.push_str(" </interface>\n");
        }
        for c in self.children(o) {
            x.push_str(&format!(" <node name=\"{c}\"/>\n"));
        }
        x.push_str("</node>\n");
        x
    }

    fn managed_objects(&self) -> HashMap<dbus::Path<'static>, HashMap<String, PropMap>> {
        let mut out = HashMap::new();
        let mut add = |path: String, o: Obj| {
            let ifaces: HashMap<String, PropMap> = self
                .interfaces(o)
                .into_iter()
                .map(|(n, p)| (n.to_string(), p))
                .collect();
            out.insert(dbus::Path::from(path), ifaces);
        };
        add(self.adapter_path(), Obj::Adapter);
        for i in 0..self.devices.len() {
            add(self.dev_path(i), Obj::Device(i));
            if !self.devices[i].connected {
                continue;
            }
            for (s, svc) in self.devices[i].sim.services().iter().enumerate() {
                add(self.svc_path(i, s), Obj::Service(i, s));
                for c in 0..svc.characteristics.len() {
                    add(self.char_path(i, s, c), Obj::Char(i, s, c));
                    if self.has_cccd(i, s, c) {
                        add(self.desc_path(i, s, c), Obj::Desc(i, s, c));
                    }
                }
            }
        }
        out
    }

    fn find_char(&self, i: usize, uuid: BleUuid) -> Option<(usize, usize)> {
        self.devices[i]
            .sim
            .services()
            .iter()
            .enumerate()
            .find_map(|(s, svc)| {
                svc.characteristics
                    .iter()
                    .position(|(u, _)| *u == uuid)
                    .map(|c| (s, c))
            })
    }

    /// Values just stored in device `i`'s memory: unsent until taken, and
    /// indicated at once where the gateway is connected and listening.
    fn stored(&mut self, i: usize, values: Vec<Tagged>) {
        let d = &mut self.devices[i];
        d.unsent.extend(values.iter().filter_map(|v| v.2));
        let live: Vec<Tagged> = if d.connected {
            values
                .into_iter()
                .filter(|v| d.notifying.contains(&v.0))
                .collect()
        } else {
            Vec::new()
        };
        self.schedule(i, live);
    }

    fn schedule(&mut self, i: usize, values: Vec<Tagged>) {
        let base = self
            .scheduled
            .iter()
            .filter(|s| s.1 == i)
            .map(|s| s.0)
            .max()
            .unwrap_or_else(Instant::now)
            .max(Instant::now() + self.cfg.notify_delay);
        for (n, (uuid, v, tag)) in values.into_iter().enumerate() {
            self.scheduled
                .push((base + Duration::from_millis(5 * n as u64), i, uuid, v, tag));
        }
    }

    fn event(&self, line: String) {
        let _ = self.events.send(line);
    }
}

fn properties_changed(path: &str, iface: &str, changed: PropMap) -> Option<Message> {
    Message::new_signal(path.to_string(), PROPS, "PropertiesChanged")
        .ok()
        .map(|m| m.append3(iface, changed, Vec::<String>::new()))
}

fn error(msg: &Message, name: &str, text: &str) -> Message {
    let n = ErrorName::new(name.to_string())
        .unwrap_or_else(|_| ErrorName::from("org.bluez.Error.Failed"));
    let t = CString::new(text).unwrap_or_default();
    msg.error(&n, &t)
}

/// Connects to the bus and owns `org.bluez`.
fn open(cfg: &EmulatorConfig) -> Result<LocalConnection, EmulatorError> {
    let conn = match &cfg.bus {
        Some(address) => {
            let mut channel = dbus::channel::Channel::open_private(address)?;
            channel.register()?;
            LocalConnection::from(channel)
        }
        None => LocalConnection::new_system()?,
    };
    let reply = conn.request_name("org.bluez", false, true, true)?;
    if reply != dbus::blocking::stdintf::org_freedesktop_dbus::RequestNameReply::PrimaryOwner {
        return Err(EmulatorError::NameTaken);
    }
    Ok(conn)
}

/// Runs the emulator on the system bus (`DBUS_SYSTEM_BUS_ADDRESS`) until
/// [`Command::Quit`] or the command channel closes. Sends `READY` on
/// `events` once `org.bluez` is owned, then one line per event.
pub fn run(
    cfg: EmulatorConfig,
    devices: Vec<SimDevice>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<String>,
) -> Result<(), EmulatorError> {
    let mut conn = open(&cfg)?;
    let mut emu = Emulator {
        cfg,
        powered: true,
        discovering: false,
        discovery_clients: HashSet::new(),
        devices: devices.into_iter().map(Dev::new).collect(),
        scheduled: Vec::new(),
        events,
        next_tag: 1_000_000,
        agent: None,
        pairing: HashMap::new(),
        next_serial: 0x4000_0000,
    };
    emu.event("READY".into());
    let mut last_adv = Instant::now();
    loop {
        conn.channel()
            .read_write(Some(Duration::from_millis(10)))
            .map_err(|()| EmulatorError::Daemon("connection to the bus lost".into()))?;
        while let Some(msg) = conn.channel().pop_message() {
            let mut out = Vec::new();
            match msg.msg_type() {
                dbus::MessageType::MethodCall => handle(&mut emu, &msg, &mut out),
                dbus::MessageType::MethodReturn | dbus::MessageType::Error => {
                    agent_replied(&mut emu, &msg, &mut out)
                }
                dbus::MessageType::Signal => {}
            }
            for m in out {
                let _ = conn.channel().send(m);
            }
        }
        // Commands.
        loop {
            match commands.try_recv() {
                Ok(Command::Quit) | Err(mpsc::TryRecvError::Disconnected) => {
                    conn.channel().flush();
                    return Ok(());
                }
                Ok(Command::Restart) => {
                    // The daemon goes away: no signal for the links it held.
                    for d in &mut emu.devices {
                        d.connected = false;
                        d.notifying.clear();
                        d.stall = 0;
                    }
                    emu.scheduled.clear();
                    emu.discovering = false;
                    emu.discovery_clients.clear();
                    emu.powered = true;
                    conn.channel().flush();
                    drop(conn);
                    conn = open(&emu.cfg)?;
                    emu.event("RESTARTED".into());
                }
                Ok(c) => {
                    for m in command(&mut emu, c) {
                        let _ = conn.channel().send(m);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // Scheduled notifications.
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = emu.scheduled.drain(..).partition(|s| s.0 <= now);
        emu.scheduled = later;
        let mut due = due;
        due.sort_by_key(|s| s.0);
        for (_, i, uuid, value, tag) in due {
            if !emu.devices[i].connected {
                continue;
            }
            if let Some((s, c)) = emu.find_char(i, uuid) {
                let mut p = PropMap::new();
                p.insert("Value".into(), var(value));
                if let Some(m) = properties_changed(&emu.char_path(i, s, c), CHAR1, p) {
                    if conn.channel().send(m).is_ok() {
                        emu.devices[i].active_at = Instant::now();
                        emu.devices[i].sent += 1;
                        if let Some(t) = tag {
                            emu.devices[i].unsent.remove(&t);
                            emu.event(format!("DELIVERED {} {t}", emu.devices[i].sim.address));
                        }
                    }
                }
            }
        }
        // Devices that hang up as soon as they have sent: 0 ms after the
        // last value, in the same write to the bus.
        if emu.cfg.hang_up_when_sent {
            for i in 0..emu.devices.len() {
                let d = &emu.devices[i];
                if d.connected && d.sent > 0 && !emu.scheduled.iter().any(|s| s.1 == i) {
                    let mut out = Vec::new();
                    drop_link(&mut emu, i, &mut out);
                    for m in out {
                        let _ = conn.channel().send(m);
                    }
                }
            }
        }
        // Devices done sending hang up.
        if let Some(idle) = emu.cfg.idle_disconnect {
            for i in 0..emu.devices.len() {
                let d = &emu.devices[i];
                if d.connected
                    && d.active_at.elapsed() >= idle
                    && !emu.scheduled.iter().any(|s| s.1 == i)
                {
                    let mut out = Vec::new();
                    drop_link(&mut emu, i, &mut out);
                    for m in out {
                        let _ = conn.channel().send(m);
                    }
                }
            }
        }
        // Advertising: devices not connected announce themselves.
        if emu.discovering && emu.powered && last_adv.elapsed() >= emu.cfg.advertise_every {
            last_adv = Instant::now();
            for i in 0..emu.devices.len() {
                if emu.devices[i].connected
                    || (emu.cfg.quiet_when_sent && emu.devices[i].unsent.is_empty())
                {
                    continue;
                }
                let d = &mut emu.devices[i];
                d.rssi = if d.rssi == -60 { -61 } else { -60 };
                let mut p = PropMap::new();
                p.insert("RSSI".into(), var(d.rssi));
                let sd = d.sim.service_data();
                if !sd.is_empty() {
                    let map: HashMap<String, Variant<Box<dyn RefArg>>> = sd
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), var(v)))
                        .collect();
                    p.insert("ServiceData".into(), var(map));
                }
                if let Some(m) = properties_changed(&emu.dev_path(i), DEVICE1, p) {
                    let _ = conn.channel().send(m);
                }
            }
        }
    }
}

fn drop_link(emu: &mut Emulator, i: usize, out: &mut Vec<Message>) {
    if !emu.devices[i].connected {
        return;
    }
    emu.devices[i].connected = false;
    emu.devices[i].notifying.clear();
    emu.devices[i].sent = 0;
    emu.devices[i].stall = emu.devices[i].stall.saturating_sub(1);
    emu.scheduled.retain(|s| s.1 != i);
    let mut p = PropMap::new();
    p.insert("Connected".into(), var(false));
    p.insert("ServicesResolved".into(), var(false));
    out.extend(properties_changed(&emu.dev_path(i), DEVICE1, p));
    emu.event(format!("DISCONNECTED {}", emu.devices[i].sim.address));
}

fn command(emu: &mut Emulator, c: Command) -> Vec<Message> {
    let mut out = Vec::new();
    let idx = |emu: &Emulator, a: &str| emu.devices.iter().position(|d| d.sim.address == a);
    match c {
        Command::Disconnect(a) => {
            if let Some(i) = idx(emu, &a) {
                drop_link(emu, i, &mut out);
            }
        }
        Command::AddGlucose(a, v) => {
            if let Some(i) = idx(emu, &a) {
                emu.devices[i].sim.add_glucose(v);
            }
        }
        Command::AddBp(a, s, d) => {
            if let Some(i) = idx(emu, &a) {
                emu.devices[i].sim.add_bp(s, d);
            }
        }
        Command::Store(a, r) => {
            if let Some(i) = idx(emu, &a) {
                match emu.devices[i].sim.store(*r) {
                    Ok(values) => emu.stored(i, values),
                    Err(e) => emu.event(format!("REFUSED {a} {e}")),
                }
            }
        }
        Command::Add(d) => {
            emu.devices.push(Dev::new(*d));
            let i = emu.devices.len() - 1;
            let ifaces: HashMap<String, PropMap> = [(DEVICE1.to_string(), emu.device_props(i))]
                .into_iter()
                .collect();
            if let Ok(m) = Message::new_signal("/", OBJMGR, "InterfacesAdded") {
                out.push(m.append2(dbus::Path::from(emu.dev_path(i)), ifaces));
            }
        }
        Command::StoreBp(a, n) => {
            if let Some(i) = idx(emu, &a) {
                let mut values = Vec::new();
                for _ in 0..n {
                    let tag = emu.next_tag;
                    emu.next_tag += 1;
                    // Distinct device times, in the past, one minute apart.
                    let at = chrono::Utc::now().naive_utc() - chrono::Duration::days(10)
                        + chrono::Duration::minutes((tag - 1_000_000) as i64);
                    let r = crate::ble::BpRecord {
                        at,
                        systolic: 110.0 + (tag % 40) as f64,
                        diastolic: 75.0,
                        mean: 90.0,
                        pulse: 70.0,
                        unit: device_profiles::gatt::bpm::PressureUnit::MmHg,
                        irregular_pulse: false,
                        tag: Some(tag),
                    };
                    if let Ok(v) = emu.devices[i].sim.store(StoredRecord::Bp(r)) {
                        values.extend(v);
                    }
                }
                emu.stored(i, values);
            }
        }
        Command::ResetMeter(a) => {
            if let Some(i) = idx(emu, &a) {
                emu.devices[i].sim.reset_memory();
                emu.event(format!("RESET {a}"));
            }
        }
        Command::Stall(a, n) => {
            if let Some(i) = idx(emu, &a) {
                emu.devices[i].stall = n;
            }
        }
        Command::PairingMode(a, on) => {
            if let Some(i) = idx(emu, &a) {
                emu.devices[i].pairing_mode = on;
            }
        }
        Command::Restart => {}
        Command::Power(on) => {
            if !on {
                for i in 0..emu.devices.len() {
                    drop_link(emu, i, &mut out);
                }
            }
            emu.powered = on;
            let mut p = PropMap::new();
            p.insert("Powered".into(), var(on));
            out.extend(properties_changed(&emu.adapter_path(), ADAPTER1, p));
        }
        Command::Quit => {}
    }
    out
}

fn handle(emu: &mut Emulator, msg: &Message, out: &mut Vec<Message>) {
    let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
    let iface = msg.interface().map(|i| i.to_string()).unwrap_or_default();
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    let Some(obj) = emu.resolve(&path) else {
        out.push(error(
            msg,
            "org.freedesktop.DBus.Error.UnknownObject",
            &format!("no object {path}"),
        ));
        return;
    };
    let reply = match (iface.as_str(), member.as_str()) {
        (INTROSPECTABLE, "Introspect") => msg.method_return().append1(emu.introspect(obj)),
        (OBJMGR, "GetManagedObjects") => msg.method_return().append1(emu.managed_objects()),
        (PROPS, "GetAll") => {
            let want: &str = msg.read1().unwrap_or_default();
            match emu.interfaces(obj).into_iter().find(|(n, _)| *n == want) {
                Some((_, p)) => msg.method_return().append1(p),
                None => error(msg, "org.freedesktop.DBus.Error.UnknownInterface", want),
            }
        }
        (PROPS, "Get") => {
            let (want, name): (&str, &str) = msg.read2().unwrap_or_default();
            let value = emu
                .interfaces(obj)
                .into_iter()
                .find(|(n, _)| *n == want)
                .and_then(|(_, mut p)| p.remove(name));
            match value {
                Some(v) => msg.method_return().append1(v),
                None => error(msg, "org.freedesktop.DBus.Error.InvalidArgs", name),
            }
        }
        (PROPS, "Set") => {
            let r: Result<(&str, &str, AnyVariant), _> = msg.read3();
            match (obj, r) {
                (Obj::Adapter, Ok((ADAPTER1, "Powered", v))) => {
                    let on = v.0.as_u64().map(|x| x != 0).unwrap_or(true);
                    emu.event(format!("SET-POWERED {on}"));
                    if on != emu.powered {
                        out.extend(command(emu, Command::Power(on)));
                    } else if emu.cfg.resignal_powered {
                        let mut p = PropMap::new();
                        p.insert("Powered".into(), var(on));
                        out.extend(properties_changed(&emu.adapter_path(), ADAPTER1, p));
                    }
                    msg.method_return()
                }
                (Obj::Device(i), Ok((DEVICE1, "Trusted", v))) => {
                    let on = v.0.as_u64().map(|x| x != 0).unwrap_or(false);
                    emu.devices[i].trusted = on;
                    let mut p = PropMap::new();
                    p.insert("Trusted".into(), var(on));
                    out.extend(properties_changed(&path, DEVICE1, p));
                    msg.method_return()
                }
                _ => error(msg, "org.bluez.Error.NotPermitted", "read-only property"),
            }
        }
        (ADAPTER1, "SetDiscoveryFilter") => msg.method_return(),
        (ADAPTER1, "RemoveDevice") => {
            // The bond is forgotten (the object stays: it is still in range).
            if let Ok(p) = msg.read1::<dbus::Path>() {
                if let Some(Obj::Device(i)) = emu.resolve(&p) {
                    drop_link(emu, i, out);
                    emu.devices[i].bonded = false;
                    emu.devices[i].trusted = false;
                    let mut props = PropMap::new();
                    props.insert("Paired".into(), var(false));
                    props.insert("Bonded".into(), var(false));
                    props.insert("Trusted".into(), var(false));
                    out.extend(properties_changed(&p, DEVICE1, props));
                    emu.event(format!("REMOVED {}", emu.devices[i].sim.address));
                }
            }
            msg.method_return()
        }
        (AGENT_MANAGER1, "RegisterAgent") => {
            let sender = msg.sender().map(|s| s.to_string()).unwrap_or_default();
            match msg.read2::<dbus::Path, &str>() {
                Ok((p, cap)) => {
                    emu.event(format!("AGENT {cap}"));
                    emu.agent = Some((sender, p.to_string()));
                    msg.method_return()
                }
                Err(_) => error(
                    msg,
                    "org.bluez.Error.InvalidArguments",
                    "RegisterAgent(o, s)",
                ),
            }
        }
        (AGENT_MANAGER1, "RequestDefaultAgent") => msg.method_return(),
        (AGENT_MANAGER1, "UnregisterAgent") => {
            emu.agent = None;
            msg.method_return()
        }
        (ADAPTER1, "GetDiscoveryFilters") => msg.method_return().append1(vec![
            "UUIDs".to_string(),
            "Transport".to_string(),
            "DuplicateData".to_string(),
        ]),
        (ADAPTER1, "StartDiscovery") | (ADAPTER1, "StopDiscovery") => {
            if !emu.powered {
                error(msg, "org.bluez.Error.NotReady", "Resource Not Ready")
            } else {
                // As in BlueZ, each client has its own discovery session:
                // the adapter discovers while any client wants it.
                let sender = msg.sender().map(|s| s.to_string()).unwrap_or_default();
                let known = if member == "StartDiscovery" {
                    emu.discovery_clients.insert(sender);
                    true
                } else {
                    emu.discovery_clients.remove(&sender)
                };
                let now = !emu.discovery_clients.is_empty();
                if now != emu.discovering {
                    emu.discovering = now;
                    let mut p = PropMap::new();
                    p.insert("Discovering".into(), var(now));
                    out.extend(properties_changed(&emu.adapter_path(), ADAPTER1, p));
                }
                emu.event(format!("DISCOVERING {now}"));
                if known {
                    msg.method_return()
                } else {
                    error(msg, "org.bluez.Error.Failed", "No discovery started")
                }
            }
        }
        (DEVICE1, "Connect") => match obj {
            Obj::Device(i) if emu.powered && emu.devices[i].sim.connectable() => {
                if emu.devices[i].connected && emu.devices[i].stall > 0 {
                    // Still stuck in discovery from the last attempt.
                    msg.method_return()
                } else if !emu.devices[i].connected {
                    emu.devices[i].connected = true;
                    emu.devices[i].active_at = Instant::now();
                    emu.devices[i].sim.on_connect();
                    let stalled = emu.devices[i].stall > 0;
                    let mut p = PropMap::new();
                    p.insert("Connected".into(), var(true));
                    if stalled {
                        // Service discovery never completes.
                        emu.event(format!("STALLED {}", emu.devices[i].sim.address));
                        out.extend(properties_changed(&emu.dev_path(i), DEVICE1, p));
                        return out.push(msg.method_return());
                    }
                    p.insert("ServicesResolved".into(), var(true));
                    // Before the reply: bluez-async reads ServicesResolved
                    // right after Connect returns (bluez.md §4).
                    out.extend(properties_changed(&emu.dev_path(i), DEVICE1, p));
                    emu.event(format!("CONNECTED {}", emu.devices[i].sim.address));
                    msg.method_return()
                } else {
                    msg.method_return()
                }
            }
            _ => error(
                msg,
                "org.bluez.Error.Failed",
                "le-connection-abort-by-local",
            ),
        },
        (DEVICE1, "Disconnect") => {
            if let Obj::Device(i) = obj {
                drop_link(emu, i, out);
            }
            msg.method_return()
        }
        (DEVICE1, "Pair") => match obj {
            Obj::Device(i) => match pair(emu, i, msg, out) {
                Some(reply) => reply,
                None => return,
            },
            _ => error(msg, "org.bluez.Error.DoesNotExist", "no such device"),
        },
        (DEVICE1, "CancelPairing") => msg.method_return(),
        (CHAR1, "StartNotify") => match obj {
            Obj::Char(i, _, _)
                if emu.devices[i].sim.bonding.is_some() && !emu.devices[i].bonded =>
            {
                // The CCCD write is refused: ATT Insufficient Authentication.
                emu.event(format!("AUTH-REQUIRED {}", emu.devices[i].sim.address));
                error(
                    msg,
                    "org.bluez.Error.AuthenticationFailed",
                    "Insufficient Authentication (0x05)",
                )
            }
            Obj::Char(i, s, c) => {
                let uuid = emu.devices[i].sim.services()[s].characteristics[c].0;
                emu.devices[i].notifying.insert(uuid);
                let mut values = emu.devices[i].sim.on_subscribe_tagged(uuid);
                if emu.cfg.send_once {
                    let unsent = &emu.devices[i].unsent;
                    values.retain(|v| v.2.is_none_or(|t| unsent.contains(&t)));
                }
                emu.devices[i].active_at = Instant::now();
                emu.schedule(i, values);
                let mut p = PropMap::new();
                p.insert("Notifying".into(), var(true));
                out.extend(properties_changed(&path, CHAR1, p));
                msg.method_return()
            }
            _ => error(msg, "org.bluez.Error.NotSupported", "not a characteristic"),
        },
        (CHAR1, "StopNotify") => match obj {
            Obj::Char(i, s, c) => {
                let uuid = emu.devices[i].sim.services()[s].characteristics[c].0;
                if emu.devices[i].notifying.remove(&uuid) {
                    msg.method_return()
                } else {
                    error(msg, "org.bluez.Error.Failed", "No notify session started")
                }
            }
            _ => error(msg, "org.bluez.Error.NotSupported", "not a characteristic"),
        },
        (CHAR1, "WriteValue") => match (obj, msg.read1::<Vec<u8>>()) {
            (Obj::Char(i, s, c), Ok(value)) => {
                let uuid = emu.devices[i].sim.services()[s].characteristics[c].0;
                emu.event(format!(
                    "WRITE {} {} {}",
                    emu.devices[i].sim.address,
                    uuid.short_name(),
                    value.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ));
                emu.devices[i].active_at = Instant::now();
                match emu.devices[i].sim.on_write_tagged(uuid, &value) {
                    Ok(values) => {
                        emu.schedule(i, values);
                        msg.method_return()
                    }
                    Err(e) => error(msg, "org.bluez.Error.NotPermitted", &e),
                }
            }
            _ => error(
                msg,
                "org.bluez.Error.InvalidArguments",
                "WriteValue(ay, a{sv})",
            ),
        },
        (CHAR1, "ReadValue") => match obj {
            Obj::Char(i, s, c) => {
                let uuid = emu.devices[i].sim.services()[s].characteristics[c].0;
                match emu.devices[i].sim.on_read(uuid) {
                    Ok(v) => msg.method_return().append1(v),
                    Err(e) => error(msg, "org.bluez.Error.NotPermitted", &e),
                }
            }
            _ => error(msg, "org.bluez.Error.NotSupported", "not a characteristic"),
        },
        (DESC1, "ReadValue") => msg.method_return().append1(vec![0u8, 0u8]),
        (DESC1, "WriteValue") => msg.method_return(),
        _ => error(
            msg,
            "org.freedesktop.DBus.Error.UnknownMethod",
            &format!("{iface}.{member}"),
        ),
    };
    out.push(reply);
}

/// `Device1.Pair` on device `i`: the reply now, or `None` when the agent
/// was asked and the reply waits for its answer.
fn pair(emu: &mut Emulator, i: usize, msg: &Message, out: &mut Vec<Message>) -> Option<Message> {
    use crate::ble::PairingMethod;
    let d = &emu.devices[i];
    if d.bonded {
        return Some(error(
            msg,
            "org.bluez.Error.AlreadyExists",
            "Already Paired",
        ));
    }
    let method = d.sim.bonding.unwrap_or(PairingMethod::JustWorks);
    if d.sim.bonding.is_some() && !d.pairing_mode {
        // The device ignores the pairing request.
        emu.event(format!("PAIR-TIMEOUT {}", d.sim.address));
        return Some(error(
            msg,
            "org.bluez.Error.ConnectionAttemptFailed",
            "Page Timeout",
        ));
    }
    let (member, number) = match method {
        PairingMethod::JustWorks => {
            bond(emu, i, out);
            return Some(msg.method_return());
        }
        PairingMethod::Passkey(_) => ("RequestPasskey", None),
        PairingMethod::Confirm(n) => ("RequestConfirmation", Some(n)),
    };
    let Some((dest, path)) = emu.agent.clone() else {
        return Some(error(
            msg,
            "org.bluez.Error.AuthenticationRejected",
            "no agent to ask",
        ));
    };
    let dev = dbus::Path::from(emu.dev_path(i));
    let call = match Message::new_method_call(dest, path, AGENT1, member) {
        Ok(m) => m.append1(dev),
        Err(e) => return Some(error(msg, "org.bluez.Error.Failed", &e)),
    };
    let mut call = match number {
        Some(n) => call.append1(n),
        None => call,
    };
    emu.next_serial += 1;
    let serial = emu.next_serial;
    call.set_serial(serial);
    out.push(call);
    emu.pairing.insert(
        serial,
        PendingPair {
            device: i,
            method,
            ok: msg.method_return(),
            failed: error(
                msg,
                "org.bluez.Error.AuthenticationFailed",
                "Authentication Failed",
            ),
            rejected: error(
                msg,
                "org.bluez.Error.AuthenticationRejected",
                "Authentication Rejected",
            ),
            canceled: error(
                msg,
                "org.bluez.Error.AuthenticationCanceled",
                "Authentication Canceled",
            ),
        },
    );
    None
}

/// The agent answered a pairing question.
fn agent_replied(emu: &mut Emulator, msg: &Message, out: &mut Vec<Message>) {
    use crate::ble::PairingMethod;
    let Some(p) = msg.get_reply_serial().and_then(|s| emu.pairing.remove(&s)) else {
        return;
    };
    let reply = if msg.msg_type() == dbus::MessageType::Error {
        let canceled = msg
            .duplicate()
            .ok()
            .and_then(|mut m| m.as_result().err())
            .and_then(|e| e.name().map(|n| n.ends_with(".Canceled")))
            .unwrap_or(false);
        emu.event(format!(
            "PAIR-REFUSED {}",
            emu.devices[p.device].sim.address
        ));
        if canceled {
            p.canceled
        } else {
            p.rejected
        }
    } else {
        let right = match p.method {
            PairingMethod::Passkey(n) => msg.read1::<u32>().ok() == Some(n),
            PairingMethod::Confirm(_) | PairingMethod::JustWorks => true,
        };
        if right {
            bond(emu, p.device, out);
            p.ok
        } else {
            emu.event(format!("PAIR-FAILED {}", emu.devices[p.device].sim.address));
            p.failed
        }
    };
    out.push(reply);
}

/// Stores the bond on both sides.
fn bond(emu: &mut Emulator, i: usize, out: &mut Vec<Message>) {
    emu.devices[i].bonded = true;
    emu.devices[i].pairing_mode = false;
    let mut p = PropMap::new();
    p.insert("Paired".into(), var(true));
    p.insert("Bonded".into(), var(true));
    out.extend(properties_changed(&emu.dev_path(i), DEVICE1, p));
    emu.event(format!("PAIRED {}", emu.devices[i].sim.address));
}
