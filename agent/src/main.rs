use anyhow::{Context, Result};
use clap::Parser;
use vantage_agent::Args;

#[tokio::main]
async fn main() -> Result<()> {
    keep_large_allocations_mapped();
    let config = Args::parse().validate()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let socket = std::net::UdpSocket::bind(config.member.bind)
        .with_context(|| format!("cannot bind underlay UDP {}", config.member.bind))?;
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

/// Each overlay TCP connection allocates multi-MiB windows. glibc's dynamic mmap threshold would
/// move such blocks onto the heap after the first one is freed, where calloc must zero (and so
/// touch) every page; keeping them mmapped means only the bytes a connection uses become resident.
#[allow(unsafe_code)]
fn keep_large_allocations_mapped() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
