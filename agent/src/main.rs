use anyhow::{Context, Result};
use clap::Parser;
use vantage_agent::Args;

#[tokio::main]
async fn main() -> Result<()> {
    let config = Args::parse().validate()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let socket = std::net::UdpSocket::bind(config.bind)
        .with_context(|| format!("cannot bind underlay UDP {}", config.bind))?;
    vantage_agent::run(config, socket, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
