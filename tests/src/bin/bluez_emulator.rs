fn main() -> std::process::ExitCode {
    rpm_simulator::bluez::cli::main_with_args(std::env::args().skip(1))
}
