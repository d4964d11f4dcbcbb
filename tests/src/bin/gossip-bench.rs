//! Gossip membership, our node against stock HashiCorp Serf: real processes on loopback, same
//! machine, same run, one cluster at a time, each size several times (`--runs`). For each run it
//! measures join convergence (from the seed's spawn until every node sees N alive members),
//! failure detection after SIGKILL of a non-seed node (first node and all nodes to report it
//! failed), RSS per node once converged, false positives (failure reports about nodes that were
//! not killed), and the kernel's UDP receive-buffer drops during the join. A cluster that does
//! not converge within 60 s is a figure (`DNF`), not an abort. Needs `serf` on PATH.
//!
//! `cargo run --release -p vantage-tests --bin gossip-bench -- [--ours PATH] [--sizes 10,50] [--runs 5] [--serf-only]`
//!
//! The last line printed is machine-readable, for the largest N (medians over the runs, `_max`
//! the worst run; a cluster that did not converge counts as the 60 s timeout and in `_dnf`):
//! `gossip-bench n=50 runs=5 ours_join_s=… ours_join_max_s=… serf_join_s=… serf_join_max_s=… ours_detect_s=… serf_detect_s=… ours_rss_kib=… serf_rss_kib=… ours_dnf=… serf_dnf=…`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vantage_tests::cluster::{Cluster, Kind};

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A run still not converged after this long is a straggler: who misses whom is printed, so a
/// long tail comes with its evidence.
const STRAGGLER_AFTER: Duration = Duration::from_secs(2);
const DETECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Quiet time after convergence before RSS is read and a node killed.
const SETTLE: Duration = Duration::from_secs(2);
/// How long to keep listening for false positives after the last detection.
const LINGER: Duration = Duration::from_secs(3);
/// Each (size, kind) gets its own port range, `PORT_STRIDE` wide, from `FIRST_PORT`.
const FIRST_PORT: u16 = 17000;
const PORT_STRIDE: u16 = 200;
const OUR_BINARY: &str = "vantage-gossip-node";
/// Every run of every size and kind has its own port range; this keeps them below 65535.
const MAX_RUNS: usize = 40;

struct Args {
    ours: Option<PathBuf>,
    sizes: Vec<usize>,
    runs: usize,
    serf_only: bool,
}

/// Runs per size unless `--runs` says otherwise: enough for a median and a tail, few enough that
/// sizes 10 and 50 finish in a few minutes.
const DEFAULT_RUNS: usize = 5;

fn usage() -> &'static str {
    "gossip-bench [--ours PATH (default: vantage-gossip-node next to this executable)] \
     [--sizes 10,50] [--runs 5] [--serf-only]"
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        ours: None,
        sizes: vec![10, 50],
        runs: DEFAULT_RUNS,
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
            "--runs" => {
                let v = it.next().context("--runs needs a count")?;
                a.runs = v
                    .parse()
                    .ok()
                    .filter(|r| (1..=MAX_RUNS).contains(r))
                    .with_context(|| format!("--runs takes 1 to {MAX_RUNS}, got `{v}`"))?;
            }
            "--serf-only" => a.serf_only = true,
            "--help" | "-h" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument `{other}`; accepted: --ours, --sizes, --runs, --serf-only\n{}",
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

/// What one cluster run measured; `None` where the run did not get that far.
struct Figures {
    n: usize,
    kind: &'static str,
    /// `None`: the cluster did not converge within `JOIN_TIMEOUT`.
    join: Option<Duration>,
    detect_first: Option<Duration>,
    detect_all: Option<Duration>,
    rss_kib: Option<u64>,
    false_positives: usize,
    reap: Option<Duration>,
    /// Datagrams the kernel dropped for a full UDP receive buffer during the join.
    rcvbuf_drops: u64,
}

fn measure(kind: Kind, n: usize, base_port: u16) -> Result<Figures> {
    let label = kind.label();
    eprintln!("{label} n={n}: starting {n} processes on 127.0.0.1:{base_port}..");
    let drops_before = udp_rcvbuf_errors()?;
    let mut cluster = Cluster::spawn(kind, n, base_port)
        .with_context(|| format!("start the {label} cluster of {n}"))?;
    let join = wait_join(&cluster, label, n);
    let rcvbuf_drops = udp_rcvbuf_errors()?.saturating_sub(drops_before);
    let mut f = Figures {
        n,
        kind: label,
        join,
        detect_first: None,
        detect_all: None,
        rss_kib: None,
        false_positives: 0,
        reap: None,
        rcvbuf_drops,
    };
    if join.is_none() {
        return Ok(f);
    }

    std::thread::sleep(SETTLE);
    let rss = cluster
        .rss_kib()
        .with_context(|| format!("{label} n={n}: RSS"))?;
    f.rss_kib = Some(rss.iter().sum::<u64>() / rss.len() as u64);

    let victim = n / 2; // never the seed, n0
    f.reap = Some(
        cluster
            .kill(victim)
            .with_context(|| format!("{label} n={n}: kill"))?,
    );
    eprintln!("{label} n={n}: killed {}", cluster.name(victim));
    match cluster.wait_failed(victim, DETECT_TIMEOUT) {
        Ok((first, all)) => {
            eprintln!(
                "{label} n={n}: {} detected failed after {:.2} s (first) / {:.2} s (all)",
                cluster.name(victim),
                first.as_secs_f64(),
                all.as_secs_f64()
            );
            (f.detect_first, f.detect_all) = (Some(first), Some(all));
        }
        Err(e) => eprintln!("{label} n={n}: failure detection: {e:#}"),
    }

    std::thread::sleep(LINGER);
    f.false_positives = cluster.false_positives(Some(victim));
    if f.false_positives > 0 {
        let pairs = cluster.false_positive_pairs(Some(victim));
        let shown: Vec<String> = pairs
            .iter()
            .take(10)
            .map(|(by, about)| format!("{by} said {about}"))
            .collect();
        eprintln!(
            "{label} n={n}: {} false failure report(s): {}{}",
            f.false_positives,
            shown.join(", "),
            if pairs.len() > 10 { ", …" } else { "" }
        );
    }
    Ok(f)
}

/// Join convergence, or `None` if the cluster did not converge in `JOIN_TIMEOUT`. A run slower
/// than `STRAGGLER_AFTER` prints who was missing whom at that point.
fn wait_join(cluster: &Cluster, label: &str, n: usize) -> Option<Duration> {
    let join = cluster.wait_converged(STRAGGLER_AFTER).or_else(|e| {
        eprintln!("{label} n={n}: straggling at {STRAGGLER_AFTER:?}: {e:#}");
        cluster.wait_converged(JOIN_TIMEOUT.saturating_sub(STRAGGLER_AFTER))
    });
    match join {
        Ok(t) => {
            eprintln!("{label} n={n}: converged in {:.2} s", t.as_secs_f64());
            Some(t)
        }
        Err(e) => {
            eprintln!("{label} n={n}: DNF: {e:#}");
            None
        }
    }
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer (`/proc/net/snmp`).
fn udp_rcvbuf_errors() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").context("read /proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("/proc/net/snmp has no Udp lines");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .context("/proc/net/snmp has no Udp RcvbufErrors")
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "DNF".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn print_table(rows: &[Figures]) {
    println!();
    println!(
        "{:>4}  {:<5} {:>8} {:>15} {:>13} {:>9} {:>10} {:>8} {:>12}",
        "N",
        "impl",
        "join_s",
        "detect_first_s",
        "detect_all_s",
        "rss_kib",
        "false_pos",
        "reap_ms",
        "rcvbuf_drops"
    );
    for f in rows {
        println!(
            "{:>4}  {:<5} {:>8} {:>15} {:>13} {:>9} {:>10} {:>8} {:>12}",
            f.n,
            f.kind,
            secs(f.join),
            secs(f.detect_first),
            secs(f.detect_all),
            f.rss_kib.map_or_else(|| "-".into(), |r| r.to_string()),
            f.false_positives,
            f.reap
                .map_or_else(|| "-".into(), |r| format!("{:.1}", r.as_secs_f64() * 1e3)),
            f.rcvbuf_drops
        );
    }
    println!();
    println!(
        "join_s: seed spawn until every node sees N alive (DNF: not within {} s); detect_*: SIGKILL \
         of node N/2 until the first / every remaining node reports it failed; rss_kib: mean VmRSS \
         per node {} s after convergence; false_pos: failure reports about nodes not killed; \
         reap_ms: SIGKILL to waitpid; rcvbuf_drops: UDP datagrams the kernel dropped for a full \
         receive buffer during the join (machine-wide).",
        JOIN_TIMEOUT.as_secs(),
        SETTLE.as_secs()
    );
}

/// One implementation's figures at one size, over all runs.
struct Summary {
    join_median: f64,
    join_max: f64,
    dnf: usize,
    detect_median: Option<f64>,
    rss_median: Option<u64>,
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("figures are finite"));
    v.get(v.len() / 2).copied()
}

fn summarize(rows: &[Figures], n: usize, kind: &str) -> Result<Summary> {
    let runs: Vec<&Figures> = rows.iter().filter(|f| f.n == n && f.kind == kind).collect();
    ensure!(!runs.is_empty(), "no {kind} figures for n={n}");
    // a cluster that did not converge counts as the timeout: a lower bound, named in `dnf`
    let joins: Vec<f64> = runs
        .iter()
        .map(|f| f.join.unwrap_or(JOIN_TIMEOUT).as_secs_f64())
        .collect();
    Ok(Summary {
        join_max: joins.iter().copied().fold(0.0, f64::max),
        join_median: median(joins).context("no runs")?,
        dnf: runs.iter().filter(|f| f.join.is_none()).count(),
        detect_median: median(
            runs.iter()
                .filter_map(|f| f.detect_all.map(|d| d.as_secs_f64()))
                .collect(),
        ),
        rss_median: median(runs.iter().filter_map(|f| f.rss_kib).collect()),
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "NA".into(), f)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let ours = if args.serf_only {
        None
    } else {
        Some(our_binary(args.ours.clone())?)
    };
    let mut rows = Vec::new();
    let mut range = 0usize;
    for &n in &args.sizes {
        for run in 0..args.runs {
            eprintln!("n={n}: run {}/{}", run + 1, args.runs);
            let mut base = || -> Result<u16> {
                range += 1;
                u16::try_from(usize::from(FIRST_PORT) + usize::from(PORT_STRIDE) * (range - 1))
                    .context("too many sizes and runs for the port plan; use fewer --runs")
            };
            if let Some(binary) = &ours {
                let kind = Kind::Ours {
                    binary: binary.clone(),
                };
                rows.push(measure(kind, n, base()?)?);
            }
            rows.push(measure(Kind::Serf, n, base()?)?);
        }
    }
    print_table(&rows);

    if ours.is_some() {
        let n = *args.sizes.iter().max().context("no sizes")?;
        let (o, s) = (summarize(&rows, n, "ours")?, summarize(&rows, n, "serf")?);
        let sec = |v: f64| format!("{v:.2}");
        println!(
            "gossip-bench n={n} runs={} ours_join_s={:.2} ours_join_max_s={:.2} serf_join_s={:.2} \
             serf_join_max_s={:.2} ours_detect_s={} serf_detect_s={} ours_rss_kib={} \
             serf_rss_kib={} ours_dnf={} serf_dnf={}",
            args.runs,
            o.join_median,
            o.join_max,
            s.join_median,
            s.join_max,
            opt(o.detect_median, sec),
            opt(s.detect_median, sec),
            opt(o.rss_median, |r| r.to_string()),
            opt(s.rss_median, |r| r.to_string()),
            o.dnf,
            s.dnf
        );
    }
    Ok(())
}
