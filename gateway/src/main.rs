//! The `rpm-gateway` binary: a thin shell over the library (see `cli`).
fn main() -> std::process::ExitCode {
    rpm_gateway::main()
}
