//! The failure-detection scenario shared by `examples/fleet-detect-bench.rs` and
//! `tests/fleet_detect.rs`: the 20-region matrix, two nodes per region, 1% loss and CPU stalls
//! (see the bench's docs), then one crash.

use std::time::Duration;

use vantage_gossip::sim::{name_of, Action, Latency, Sim};
use vantage_gossip::{Config, Event, Rng};
use vantage_wan::Matrix;

pub const PER_REGION: usize = 2;
const LOSS: f64 = 0.01;
const WARMUP: Duration = Duration::from_secs(60);
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// Liveness limit for detection: a profile that needs longer is reported as this.
const DETECT_LIMIT: Duration = Duration::from_secs(120);
/// How long a starved node reads its input late.
const STARVED_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Outcome {
    pub detect: Duration,
    pub false_failures: usize,
    pub false_suspicions: usize,
    /// Stalling nodes declared failed (not false failures, but shown).
    pub stallers_failed: usize,
}

/// One-way latency between simulator nodes placed round-robin on the matrix's regions (node `i`
/// in region `i % regions`); two nodes of one region are 0.5 ms apart.
pub fn matrix_latency(m: &Matrix) -> Latency {
    let regions = m.regions().len();
    let m = m.clone();
    Box::new(move |a: usize, b: usize| {
        let (ra, rb) = (a % regions, b % regions);
        if ra == rb {
            Duration::from_micros(500)
        } else {
            m.rtt_at(ra, rb) / 2
        }
    })
}

/// One run: warm-up, five minutes of loss and stalls, a crash, detection.
pub fn run(config: &Config, seed: u64) -> Outcome {
    let m = Matrix::builtin();
    let n = m.regions().len() * PER_REGION;
    let mut sim = Sim::new(config.clone(), n, matrix_latency(&m), seed);
    sim.join_all(0);
    sim.run_until(WARMUP);
    let start = sim.elapsed();
    sim.apply(Action::SetLoss(LOSS));
    let victim = n - 1;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let (stallers, steps) = stalls(&mut rng, n, victim);
    sim.run_scenario(&steps, HEALTHY_RUN);
    let crash = sim.elapsed();
    sim.apply(Action::Crash(victim));
    sim.run_until(crash + DETECT_LIMIT);

    let victim_name = name_of(victim);
    let mut out = Outcome::default();
    let mut detected = 0;
    for l in sim.log.iter().filter(|l| l.at >= start) {
        let about_victim_after_crash = |name: &str| name == victim_name && l.at >= crash;
        match &l.event {
            Event::Failed { name } if about_victim_after_crash(name) => {
                detected += 1;
                out.detect = out.detect.max(l.at - crash);
            }
            Event::Failed { name } if stallers.contains(name) => out.stallers_failed += 1,
            Event::Failed { .. } => out.false_failures += 1,
            Event::Suspect { name } if !about_victim_after_crash(name) => out.false_suspicions += 1,
            _ => {}
        }
    }
    if detected < n - 1 {
        out.detect = DETECT_LIMIT;
    }
    out
}

/// The stalling nodes (by name) and their stalls as scenario steps; the victim never stalls, so
/// its crash is a clean one.
fn stalls(rng: &mut Rng, n: usize, victim: usize) -> (Vec<String>, Vec<(Duration, Action)>) {
    let mut nodes: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    rng.shuffle(&mut nodes);
    nodes.truncate(n / 10);
    let mut steps = Vec::new();
    for &node in &nodes {
        let mut at = Duration::from_millis(rng.below(10_000) as u64);
        while at < HEALTHY_RUN {
            let stall = Duration::from_millis(1000 + rng.below(2000) as u64);
            let action = if rng.below(3) == 0 {
                Action::Pause { node, for_: stall }
            } else {
                Action::Slow {
                    node,
                    delay: stall,
                    for_: STARVED_FOR,
                }
            };
            steps.push((at, action));
            at += stall + Duration::from_millis(2000 + rng.below(20_000) as u64);
        }
    }
    (nodes.into_iter().map(name_of).collect(), steps)
}

/// Sums over seeds 1..=`seeds`; `detect` is the median over the seeds, and the worst is
/// returned beside it. (The bench's summary; the test asserts per seed with `run`.)
#[allow(dead_code)]
pub fn evaluate(config: &Config, seeds: u64) -> (Outcome, Duration) {
    let mut total = Outcome::default();
    let mut detects = Vec::new();
    for seed in 1..=seeds {
        let o = run(config, seed);
        if o.false_failures > 0 {
            eprintln!("  seed {seed}: {} false failures", o.false_failures);
        }
        detects.push(o.detect);
        total.false_failures += o.false_failures;
        total.false_suspicions += o.false_suspicions;
        total.stallers_failed += o.stallers_failed;
    }
    detects.sort();
    total.detect = detects[detects.len() / 2];
    (total, detects[detects.len() - 1])
}
