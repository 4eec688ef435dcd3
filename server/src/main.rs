fn main() {
    // Must stay the first statement: refuses to run on a CPU below this build's tier (exit 78).
    bitnet_server::cpu_guard::enforce();
    eprintln!("bitnet-server: no commands yet");
    std::process::exit(2);
}
