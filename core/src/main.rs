//! The `gatekeeper` command: logging, then the subcommand (`gatekeeper::cli`).

use clap::Parser as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = gatekeeper::cli::Cli::parse();
    gatekeeper::cli::init_logging(cli.log_format);
    if let Err(e) = gatekeeper::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
