//! A private D-Bus "system" bus (`dbus-daemon`, Debian package `dbus-daemon`)
//! on a socket in a directory of its own, with the permissive policy of
//! `shared/bluez.md` §2, so that the emulator may own `org.bluez` without
//! root and without touching the machine's real bus.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::EmulatorError;

const CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>  <allow own="*"/>
    <allow send_type="method_call"/><allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/>
    <allow receive_type="method_call"/><allow receive_type="signal"/><allow receive_type="method_return"/><allow receive_type="error"/>
  </policy>
</busconfig>
"#;

/// A running private bus; killed when dropped.
pub struct PrivateBus {
    /// `unix:path=...`: give it as `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    /// The socket file.
    pub socket: PathBuf,
    child: Child,
}

fn dbus_daemon() -> PathBuf {
    for d in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(d).join("dbus-daemon");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("dbus-daemon")
}

impl PrivateBus {
    /// Starts `dbus-daemon` with its socket and config in `dir`.
    pub fn start(dir: &Path) -> Result<PrivateBus, EmulatorError> {
        let socket = dir.join("system_bus_socket");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            CONFIG.replace("SOCKET", &socket.display().to_string()),
        )
        .map_err(|e| EmulatorError::Daemon(e.to_string()))?;
        let mut child = Command::new(dbus_daemon())
            .arg(format!("--config-file={}", conf.display()))
            .args(["--print-address=1", "--nofork", "--nopidfile"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                EmulatorError::Daemon(format!(
                    "cannot start dbus-daemon ({e}); install the Debian package `dbus-daemon`"
                ))
            })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let address = line.trim().to_string();
        if !address.starts_with("unix:") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EmulatorError::Daemon(format!(
                "dbus-daemon printed no address ({address:?})"
            )));
        }
        Ok(PrivateBus {
            address,
            socket,
            child,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
