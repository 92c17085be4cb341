//! `rpm-bluez-emulator`: a BlueZ D-Bus emulator with simulated health
//! devices, for running the gateway's real Bluetooth code path without a
//! radio (see `rpm_simulator::bluez`).
//!
//! ```text
//! rpm-bluez-emulator [--private-bus DIR] [--adapter hci0]
//!                    --device bp,AA:00:00:00:00:01[,N] --device scale,ADDR[,N]
//!                    --device glucometer,ADDR[,N] --device mi-scale,ADDR[,KG]
//! ```
//! Without `--private-bus` it serves the bus in `DBUS_SYSTEM_BUS_ADDRESS`.
//! With it, it starts its own `dbus-daemon` and prints `BUS <address>`.
//! It prints `READY` once it owns `org.bluez`, then one line per event
//! (CONNECTED, DISCONNECTED, WRITE ...). Commands on stdin, one per line:
//! `disconnect ADDR`, `add-glucose ADDR MGDL`, `add-bp ADDR SYS DIA`,
//! `power on|off`, `quit` (end of input quits too).

fn main() -> std::process::ExitCode {
    rpm_simulator::bluez::cli::main_with_args(std::env::args().skip(1))
}
