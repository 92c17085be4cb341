//! `rpm-sim`: the simulator's command line. Its commands (`check`, `devices`,
//! scenario runs over MQTT/BLE/HTTP, load mode) are being built (issue 7);
//! today it lists the bundled scenarios and their expected alerts.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rpm_simulator::scenario::Scenario::load_dir(&rpm_simulator::scenario::bundled_dir()) {
        Ok(scenarios) => {
            println!("rpm-sim: bundled scenarios (commands to run them are not built yet)");
            for s in scenarios {
                println!(
                    "  {:<32} {} expected alert(s)",
                    s.name,
                    s.expected_alerts().len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::from(2)
        }
    }
}
