fn main() -> std::process::ExitCode {
    rpm_simulator::cli::main()
}
