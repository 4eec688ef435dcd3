//! The `bitnet-server` binary: checks the CPU, then parses the command line and runs a
//! subcommand (see `cli`).

fn main() -> std::process::ExitCode {
    // Must stay the first statement: refuses to run on a CPU below this build's tier (exit 78).
    bitnet_server::cpu_guard::enforce();
    bitnet_server::cli::main()
}
