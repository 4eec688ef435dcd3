//! The `bitnet-server` binary: parses the command line and runs a subcommand (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
