//! A gossip-only node over plain UDP/TCP, for the Serf comparison and for debugging. It prints
//! membership changes as Serf's agent logs them (`EventMemberJoin: <name> <ip>`, …), one a line.
//!
//! `vantage-gossip-node --name n1 --bind 127.0.0.1:7947 [--join 127.0.0.1:7946,…] [--profile lan]`

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use vantage_gossip::transport::PlainTransport;
use vantage_gossip::{Config, Event, Profile, Tags};

struct Args {
    name: String,
    bind: SocketAddr,
    join: Vec<SocketAddr>,
    profile: Profile,
    seed: u64,
}

fn parse() -> Result<Args> {
    let mut name = None;
    let mut bind = None;
    let mut join = Vec::new();
    let mut profile = Profile::Lan;
    let mut seed = u64::from(std::process::id());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--bind" => bind = Some(value()?.parse().context("--bind takes ip:port")?),
            "--join" => {
                for s in value()?.split(',').filter(|s| !s.is_empty()) {
                    join.push(
                        s.parse()
                            .with_context(|| format!("--join takes ip:port, got `{s}`"))?,
                    );
                }
            }
            "--profile" => profile = value()?.parse().map_err(anyhow::Error::msg)?,
            "--seed" => seed = value()?.parse().context("--seed takes an integer")?,
            "-h" | "--help" => {
                println!("vantage-gossip-node --name NAME --bind IP:PORT [--join IP:PORT,...] [--profile lan|wan|fleet] [--seed N]");
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument `{other}`; accepted: --name, --bind, --join, --profile, --seed"
            ),
        }
    }
    Ok(Args {
        name: name.context("--name is required")?,
        bind: bind.context("--bind is required")?,
        join,
        profile,
        seed,
    })
}

fn main() -> Result<()> {
    let args = parse()?;
    // one thread: a gossip node is a handful of timers and sockets
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let transport = PlainTransport::bind(args.bind)
        .await
        .with_context(|| format!("cannot bind {}", args.bind))?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let config = Config::profile(args.profile);
    let handle = vantage_gossip::spawn(config, &args.name, &Tags::new(), transport, args.seed, tx)?;
    if !args.join.is_empty() {
        let n = handle
            .join(args.join.clone())
            .await
            .context("join failed")?;
        eprintln!("joined through {n} of {} seeds", args.join.len());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => print_event(&e),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    handle.leave().await.ok();
    Ok(())
}

fn print_event(e: &Event) {
    match e {
        Event::Joined(m) => println!("EventMemberJoin: {} {}", m.name, m.addr.ip()),
        Event::Updated(m) => println!("EventMemberUpdate: {} {}", m.name, m.addr.ip()),
        Event::Failed { name } => println!("EventMemberFailed: {name}"),
        Event::Left { name } => println!("EventMemberLeave: {name}"),
        Event::Reaped { name } => println!("EventMemberReap: {name}"),
        Event::Suspect { name } => eprintln!("suspect: {name}"),
        Event::User { ltime, name, .. } => println!("EventUser: {name} ltime={ltime}"),
        Event::Conflict {
            name,
            addr,
            claimed,
        } => eprintln!("conflict: {name} at {addr}, claimed from {claimed}"),
        Event::CoordinateUpdated { .. } => {}
    }
}
