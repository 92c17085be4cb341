fn main() -> std::process::ExitCode {
    rpm_gateway::main()
}
