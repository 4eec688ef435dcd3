use clap::Parser;

fn main() {
    let cli = bitnet_server::cli::Cli::parse();
    if let Err(e) = bitnet_server::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
