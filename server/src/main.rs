//! The `bitnet-server` binary: parses the command line and runs a subcommand (see `cli`).

fn main() -> std::process::ExitCode {
    bitnet_server::cli::main()
}
