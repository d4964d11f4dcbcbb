//! Failure detection of the `fleet` profile on the measured 20-region matrix, in the simulator:
//! 40 nodes (two per region), 1% datagram loss and CPU stalls for five minutes; then one node
//! crashes. It reports how long until every other node declared the crash, and how often healthy
//! nodes were suspected (refuted, harmless) or declared failed (the figure that must stay zero),
//! summed over several seeds.
//!
//! Stalls are as in `tests/lifeguard.rs`: a tenth of the nodes stall again and again, each time
//! either starved (timers fire, input is read 1 to 3 s late, for 10 s) or frozen for 1 to 3 s,
//! with 2 to 22 s between stalls. Like there, a false failure is a declaration that a node which
//! never stalled (and did not crash) has failed: what Lifeguard exists to prevent is a slow node
//! taking healthy ones down. Stalling nodes declared failed are counted apart.
//!
//! `cargo run --release -p vantage-gossip --example fleet-detect-bench -- [--seeds 8] [--search]`
//!
//! `--search` first tries a grid of faster settings and prints each; the last line is always for
//! the `fleet` profile as shipped:
//! `fleet-detect-bench n=40 detect_s=<x> false_failures=<n> false_suspicions=<n>`
//! (`detect_s`: the median over the seeds of the time until all others declared the crash).

use std::time::Duration;

use vantage_gossip::{Config, Profile};
use vantage_wan::Matrix;

#[path = "../tests/support/fleet_faults.rs"]
mod fleet_faults;
use fleet_faults::{evaluate, PER_REGION};

/// Faster candidates around the shipped profile.
fn candidates() -> Vec<(String, Config)> {
    let mut out = Vec::new();
    for (interval_ms, timeout_ms) in [(1000, 600), (1200, 700), (1500, 800), (2000, 1000)] {
        for mult in [3, 4, 5] {
            for max_mult in [4, 6] {
                let cfg = Config {
                    probe_interval: Duration::from_millis(interval_ms),
                    probe_timeout: Duration::from_millis(timeout_ms),
                    suspicion_mult: mult,
                    suspicion_max_timeout_mult: max_mult,
                    ..Config::profile(Profile::Fleet)
                };
                let label = format!(
                    "interval={interval_ms}ms timeout={timeout_ms}ms suspicion_mult={mult} max_mult={max_mult}"
                );
                out.push((label, cfg));
            }
        }
    }
    out
}

fn main() -> Result<(), String> {
    let mut seeds = 8u64;
    let mut search = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => {
                let v = args.next().ok_or("--seeds needs a count")?;
                seeds = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=1000).contains(s))
                    .ok_or_else(|| format!("--seeds takes 1 to 1000, got `{v}`"))?;
            }
            "--search" => search = true,
            other => {
                return Err(format!(
                    "unknown argument `{other}`; accepted: --seeds N, --search"
                ))
            }
        }
    }
    if search {
        for (label, cfg) in candidates() {
            let (o, worst) = evaluate(&cfg, seeds);
            println!(
                "{label}: detect_s={:.1} detect_max_s={:.1} false_failures={} false_suspicions={} \
                 stallers_failed={}",
                o.detect.as_secs_f64(),
                worst.as_secs_f64(),
                o.false_failures,
                o.false_suspicions,
                o.stallers_failed
            );
        }
    }
    let n = Matrix::builtin().regions().len() * PER_REGION;
    let (o, worst) = evaluate(&Config::profile(Profile::Fleet), seeds);
    println!(
        "fleet profile over seeds 1..={seeds}: worst detection {:.1} s; stalling nodes declared \
         failed {} times",
        worst.as_secs_f64(),
        o.stallers_failed
    );
    println!(
        "fleet-detect-bench n={n} detect_s={:.1} false_failures={} false_suspicions={}",
        o.detect.as_secs_f64(),
        o.false_failures,
        o.false_suspicions
    );
    Ok(())
}
