//! `rpm-sim`: the simulator's command line (see [`rpm_simulator::cli`]).

fn main() -> std::process::ExitCode {
    rpm_simulator::cli::main()
}
