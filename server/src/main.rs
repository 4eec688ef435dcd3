//! The `bitnet-server` binary: checks the CPU, then parses the command line and runs a
//! subcommand (see `cli`).

fn main() -> std::process::ExitCode {
    // Must stay the first statement: refuses to run on a CPU below this build's tier (exit 78).
    // It also keeps `bitnet-cpu-guard` linked into the binary, and with it the guard object's
    // `.init_array` entry that runs the same check before `main`.
    bitnet_cpu_guard::enforce();
    bitnet_server::memory::return_large_frees_to_the_os();
    bitnet_server::cli::main()
}
