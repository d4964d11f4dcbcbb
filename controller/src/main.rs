//! `vantage`: the user's binary. Parses the command line, sets up logging and hands over to
//! [`vantage::cli::run`]; the exit code comes from the error (see `vantage::cli` and
//! `vantage --help`):
//!
//! - 0 ok; 1 `serve` stopped with an error;
//! - 2 usage: bad flags, or the controller refused the request (400, 401, 404, 413);
//! - 3 no eligible agent (503 `no_agent`, or a load that failed with `no_agent`);
//! - 4 the page failed (every run of a region failed, or failure `page`/`rejected`);
//! - 5 the controller or the network failed (5xx, 429, unreachable, `agent_lost`,
//!   `controller_restart`, `internal`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vantage::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.cmd.default_log_level());
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs on stderr (stdout is the command's output), coloured only for a terminal, `RUST_LOG`
/// over the command's default level.
fn init_tracing(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
