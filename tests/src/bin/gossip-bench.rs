//! Gossip membership, our node against stock HashiCorp Serf: real processes on loopback, same
//! machine, same run, one cluster at a time. For each size N it measures join convergence (from
//! the seed's spawn until every node sees N alive members), failure detection after SIGKILL of a
//! non-seed node (first node and all nodes to report it failed), RSS per node once converged, and
//! false positives (failure reports about nodes that were not killed). Needs `serf` on PATH.
//!
//! `cargo run --release -p vantage-tests --bin gossip-bench -- [--ours PATH] [--sizes 10,50] [--serf-only]`
//!
//! The last line printed is machine-readable, for the largest N:
//! `gossip-bench n=50 ours_join_s=… serf_join_s=… ours_detect_s=… serf_detect_s=… ours_rss_kib=… serf_rss_kib=…`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vantage_tests::cluster::{Cluster, Kind};

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const DETECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Quiet time after convergence before RSS is read and a node killed.
const SETTLE: Duration = Duration::from_secs(2);
/// How long to keep listening for false positives after the last detection.
const LINGER: Duration = Duration::from_secs(3);
/// Each (size, kind) gets its own port range, `PORT_STRIDE` wide, from `FIRST_PORT`.
const FIRST_PORT: u16 = 17000;
const PORT_STRIDE: u16 = 200;
const OUR_BINARY: &str = "vantage-gossip-node";

struct Args {
    ours: Option<PathBuf>,
    sizes: Vec<usize>,
    serf_only: bool,
}

fn usage() -> &'static str {
    "gossip-bench [--ours PATH (default: vantage-gossip-node next to this executable)] \
     [--sizes 10,50] [--serf-only]"
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        ours: None,
        sizes: vec![10, 50],
        serf_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--ours" => a.ours = Some(it.next().context("--ours needs a path")?.into()),
            "--sizes" => {
                let v = it.next().context("--sizes needs a list like 10,50")?;
                a.sizes = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse()
                            .with_context(|| format!("--sizes takes integers, got `{s}`"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--serf-only" => a.serf_only = true,
            "--help" | "-h" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument `{other}`; accepted: --ours, --sizes, --serf-only\n{}",
                usage()
            ),
        }
    }
    ensure!(!a.sizes.is_empty(), "--sizes must name at least one size");
    for &n in &a.sizes {
        ensure!(
            (2..=usize::from(PORT_STRIDE)).contains(&n),
            "sizes must be between 2 and {PORT_STRIDE}, got {n}"
        );
    }
    Ok(a)
}

/// Our node binary: `--ours`, or `vantage-gossip-node` in this executable's directory.
fn our_binary(arg: Option<PathBuf>) -> Result<PathBuf> {
    let path = match arg {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot find this executable's path")?
            .parent()
            .context("this executable has no parent directory")?
            .join(OUR_BINARY),
    };
    ensure!(
        path.is_file(),
        "our gossip node {} does not exist; build it with \
         `cargo build --release -p vantage-tests --bin vantage-gossip-node` \
         (or pass --ours PATH, or --serf-only)",
        path.display()
    );
    Ok(path)
}

/// What one cluster run measured.
struct Figures {
    n: usize,
    kind: &'static str,
    join: Duration,
    detect_first: Duration,
    detect_all: Duration,
    rss_kib: u64,
    false_positives: usize,
    reap: Duration,
}

fn measure(kind: Kind, n: usize, base_port: u16) -> Result<Figures> {
    let label = kind.label();
    eprintln!("{label} n={n}: starting {n} processes on 127.0.0.1:{base_port}..");
    let mut cluster = Cluster::spawn(kind, n, base_port)
        .with_context(|| format!("start the {label} cluster of {n}"))?;
    let join = cluster
        .wait_converged(JOIN_TIMEOUT)
        .with_context(|| format!("{label} n={n}: join"))?;
    eprintln!("{label} n={n}: converged in {:.2} s", join.as_secs_f64());

    std::thread::sleep(SETTLE);
    let rss = cluster
        .rss_kib()
        .with_context(|| format!("{label} n={n}: RSS"))?;
    let rss_kib = rss.iter().sum::<u64>() / rss.len() as u64;

    let victim = n / 2; // never the seed, n0
    let reap = cluster
        .kill(victim)
        .with_context(|| format!("{label} n={n}: kill"))?;
    eprintln!("{label} n={n}: killed {}", cluster.name(victim));
    let (detect_first, detect_all) = cluster
        .wait_failed(victim, DETECT_TIMEOUT)
        .with_context(|| format!("{label} n={n}: failure detection"))?;
    eprintln!(
        "{label} n={n}: {} detected failed after {:.2} s (first) / {:.2} s (all)",
        cluster.name(victim),
        detect_first.as_secs_f64(),
        detect_all.as_secs_f64()
    );

    std::thread::sleep(LINGER);
    let false_positives = cluster.false_positives(Some(victim));
    if false_positives > 0 {
        let pairs = cluster.false_positive_pairs(Some(victim));
        let shown: Vec<String> = pairs
            .iter()
            .take(10)
            .map(|(by, about)| format!("{by} said {about}"))
            .collect();
        eprintln!(
            "{label} n={n}: {false_positives} false failure report(s): {}{}",
            shown.join(", "),
            if pairs.len() > 10 { ", …" } else { "" }
        );
    }
    drop(cluster);
    Ok(Figures {
        n,
        kind: label,
        join,
        detect_first,
        detect_all,
        rss_kib,
        false_positives,
        reap,
    })
}

fn print_table(rows: &[Figures]) {
    println!();
    println!(
        "{:>4}  {:<5} {:>8} {:>15} {:>13} {:>9} {:>10} {:>8}",
        "N", "impl", "join_s", "detect_first_s", "detect_all_s", "rss_kib", "false_pos", "reap_ms"
    );
    for f in rows {
        println!(
            "{:>4}  {:<5} {:>8.2} {:>15.2} {:>13.2} {:>9} {:>10} {:>8.1}",
            f.n,
            f.kind,
            f.join.as_secs_f64(),
            f.detect_first.as_secs_f64(),
            f.detect_all.as_secs_f64(),
            f.rss_kib,
            f.false_positives,
            f.reap.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "join_s: seed spawn until every node sees N alive; detect_*: SIGKILL of node N/2 until the \
         first / every remaining node reports it failed; rss_kib: mean VmRSS per node {} s after \
         convergence; false_pos: failure reports about nodes not killed; reap_ms: SIGKILL to \
         waitpid.",
        SETTLE.as_secs()
    );
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let ours = if args.serf_only {
        None
    } else {
        Some(our_binary(args.ours.clone())?)
    };
    let mut rows = Vec::new();
    for (k, &n) in args.sizes.iter().enumerate() {
        let base = |kind_idx: usize| -> Result<u16> {
            u16::try_from(usize::from(FIRST_PORT) + usize::from(PORT_STRIDE) * (2 * k + kind_idx))
                .context("too many sizes for the port plan")
        };
        if let Some(binary) = &ours {
            rows.push(measure(
                Kind::Ours {
                    binary: binary.clone(),
                },
                n,
                base(0)?,
            )?);
        }
        rows.push(measure(Kind::Serf, n, base(1)?)?);
    }
    print_table(&rows);

    if ours.is_some() {
        let n = *args.sizes.iter().max().context("no sizes")?;
        let get = |kind: &str| {
            rows.iter()
                .find(|f| f.n == n && f.kind == kind)
                .with_context(|| format!("no {kind} figures for n={n}"))
        };
        let (o, s) = (get("ours")?, get("serf")?);
        println!(
            "gossip-bench n={n} ours_join_s={:.2} serf_join_s={:.2} ours_detect_s={:.2} \
             serf_detect_s={:.2} ours_rss_kib={} serf_rss_kib={}",
            o.join.as_secs_f64(),
            s.join.as_secs_f64(),
            o.detect_all.as_secs_f64(),
            s.detect_all.as_secs_f64(),
            o.rss_kib,
            s.rss_kib
        );
    }
    Ok(())
}
