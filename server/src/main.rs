fn main() {
    eprintln!("bitnet-server: no commands yet");
    std::process::exit(2);
}
