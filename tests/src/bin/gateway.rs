fn main() -> std::process::ExitCode {
    rpm_gateway::cli::main()
}
