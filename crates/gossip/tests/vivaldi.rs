//! Serf's Vivaldi performance tests (`coordinate/performance_test.go`), re-created.
//!
//! Each test builds a matrix of true RTTs, lets every node observe random peers for a number of
//! cycles, then compares every pairwise estimate with the truth. Run with `--nocapture` to see
//! the figures.
//!
//! Serf checks each scenario on one seed against fixed limits. Those limits are not properties
//! of the algorithm but of one trajectory: Serf's own Go code (v0.9.4, the same algorithm as
//! today's), driven by seeds 1..=1000 through this file's harness, meets them on only part of the
//! seeds (line 604, grid 562, split 717, height 156, random 924, drift 958 of 1000). So one seed
//! that passes or fails says little, and a seed picked because this code passes on it would only
//! repeat the code's own output. Every scenario is checked over [`SEEDS`] instead, twice:
//!
//! - **Serf's limits, as a pass rate.** The share of seeds meeting Serf's limits must not be
//!   clearly below the share Serf's Go code gets: at most three binomial standard deviations.
//! - **Serf's distribution.** The median over the seeds must not exceed the 75th percentile of
//!   what Serf's Go code gives over seeds 1..=1000 (the `serf p75` figures; for the random
//!   scenario, on this file's matrix). A real deviation from Serf's algorithm shifts the whole
//!   distribution, whatever trajectory a single seed happens to take.

use std::ops::RangeInclusive;
use std::time::Duration;

use vantage_gossip::coordinate::{Client, Coordinate, CoordinateConfig};

/// The seeds every scenario runs on: enough for a pass rate within a few percent.
const SEEDS: RangeInclusive<u64> = 1..=100;

const CYCLES: usize = 1000;

/// splitmix64: tiny, seedable and good enough to pick peers and directions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`; the modulo bias is far below anything these tests can see.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal, by Box–Muller.
    fn normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

type Truth = Vec<Vec<Duration>>;

#[derive(Debug, Clone, Copy)]
struct Stats {
    avg: f64,
    max: f64,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn config_2d() -> CoordinateConfig {
    CoordinateConfig {
        dimensionality: 2,
        ..CoordinateConfig::default()
    }
}

fn generate_clients(nodes: usize, config: &CoordinateConfig) -> Vec<Client> {
    (0..nodes)
        .map(|_| Client::new(config.clone()).expect("valid config"))
        .collect()
}

/// A symmetric truth matrix with a zero diagonal: `rtt(i, j)` for `i < j`, mirrored.
fn symmetric(nodes: usize, mut rtt: impl FnMut(usize, usize) -> Duration) -> Truth {
    let mut truth = vec![vec![Duration::ZERO; nodes]; nodes];
    let pairs = (0..nodes).flat_map(|i| (i + 1..nodes).map(move |j| (i, j)));
    for (i, j) in pairs {
        let d = rtt(i, j);
        truth[i][j] = d;
        truth[j][i] = d;
    }
    truth
}

/// Nodes on a straight line, `spacing` apart.
fn generate_line(nodes: usize, spacing: Duration) -> Truth {
    symmetric(nodes, |i, j| spacing * (j - i) as u32)
}

/// Nodes on a square grid (`nodes` should be a square), `spacing` apart.
fn generate_grid(nodes: usize, spacing: Duration) -> Truth {
    let n = (nodes as f64).sqrt() as usize;
    symmetric(nodes, |i, j| {
        let (x1, y1) = ((i % n) as f64, (i / n) as f64);
        let (x2, y2) = ((j % n) as f64, (j / n) as f64);
        spacing.mul_f64((x2 - x1).hypot(y2 - y1))
    })
}

/// Two sites: `lan` apart within a site, `lan + wan` across. As in Serf, nodes `0..=nodes/2`
/// form the first site.
fn generate_split(nodes: usize, lan: Duration, wan: Duration) -> Truth {
    let split = nodes / 2;
    symmetric(nodes, |i, j| {
        if (i <= split) != (j <= split) {
            lan + wan
        } else {
            lan
        }
    })
}

/// Nodes `1..nodes` on a circle of `radius` (at angles `2πi / nodes`, as Serf places them);
/// node 0 is `2 * radius` from everyone, so it belongs in the middle, raised by one radius of
/// height.
fn generate_circle(nodes: usize, radius: Duration) -> Truth {
    symmetric(nodes, |i, j| {
        if i == 0 {
            return radius * 2;
        }
        let angle = |k: usize| std::f64::consts::TAU * k as f64 / nodes as f64;
        let (t1, t2) = (angle(i), angle(j));
        let dist = (t2.cos() - t1.cos()).hypot(t2.sin() - t1.sin());
        radius.mul_f64(dist)
    })
}

/// Independent normally distributed RTTs, from their own seeded generator.
fn generate_random(nodes: usize, mean: Duration, deviation: Duration, seed: u64) -> Truth {
    let mut rng = Rng::new(seed);
    symmetric(nodes, |_, _| {
        let secs = rng.normal() * deviation.as_secs_f64() + mean.as_secs_f64();
        Duration::from_secs_f64(secs)
    })
}

/// The matrix of the random scenario; Serf's reference figures were measured on this one.
fn random_truth() -> Truth {
    generate_random(25, ms(100), ms(10), 7)
}

/// Serf's `Simulate`: each cycle, every node draws a node at random and, unless it drew itself,
/// observes the true RTT to it. One generator, seeded afresh per run, feeds both the draws and
/// the Vivaldi core.
fn simulate(clients: &mut [Client], truth: &Truth, cycles: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let nodes = clients.len();
    for _ in 0..cycles {
        for i in 0..nodes {
            let j = rng.below(nodes);
            if j == i {
                continue;
            }
            let other = clients[j].get_coordinate();
            clients[i]
                .update(&format!("node_{j}"), &other, truth[i][j], &mut || rng.f64())
                .expect("simulated observations are valid");
        }
    }
}

/// Relative error `|estimate - truth| / truth` over all pairs. Estimates are exactly symmetric,
/// so each unordered pair is counted once, as Serf does.
fn evaluate(clients: &[Client], truth: &Truth) -> Stats {
    let mut sum = 0.0;
    let mut max: f64 = 0.0;
    let mut count = 0;
    for i in 0..clients.len() {
        for j in i + 1..clients.len() {
            let est = clients[i]
                .distance_to(&clients[j].get_coordinate())
                .expect("compatible coordinates")
                .as_secs_f64();
            let actual = truth[i][j].as_secs_f64();
            let error = (est - actual).abs() / actual;
            sum += error;
            max = max.max(error);
            count += 1;
        }
    }
    Stats {
        avg: sum / count as f64,
        max,
    }
}

fn run(config: &CoordinateConfig, truth: &Truth, seed: u64) -> (Vec<Client>, Stats) {
    let mut clients = generate_clients(truth.len(), config);
    simulate(&mut clients, truth, CYCLES, seed);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.stats().resets, 0, "node {i} reset with seed {seed}");
    }
    let stats = evaluate(&clients, truth);
    (clients, stats)
}

/// One run per seed in [`SEEDS`].
fn runs(config: &CoordinateConfig, truth: &Truth) -> Vec<(Vec<Client>, Stats)> {
    SEEDS.map(|seed| run(config, truth, seed)).collect()
}

/// The share of seeds on which `passed` holds must not be clearly below Serf's, which met the
/// same limits on `serf_per_1000` of seeds 1..=1000.
fn check_pass_rate(name: &str, passes: impl Iterator<Item = bool>, serf_per_1000: u32) {
    let results: Vec<bool> = passes.collect();
    let n = results.len() as f64;
    let ours = results.iter().filter(|p| **p).count() as f64 / n;
    let serf = f64::from(serf_per_1000) / 1000.0;
    let floor = serf - 3.0 * (serf * (1.0 - serf) / n).sqrt();
    println!(
        "{name}: seeds {SEEDS:?} meet Serf's limits on {:.1}% (serf {:.1}%, floor {:.1}%)",
        ours * 100.0,
        serf * 100.0,
        floor * 100.0
    );
    assert!(
        ours >= floor,
        "{name}: Serf's limits met on {:.1}% of seeds {SEEDS:?}, clearly below Serf's own {:.1}% \
         (floor {:.1}%)",
        ours * 100.0,
        serf * 100.0,
        floor * 100.0
    );
}

/// Serf's error limits, as a pass rate over [`SEEDS`] (see [`check_pass_rate`]).
fn check_serf_limits(name: &str, runs: &[(Vec<Client>, Stats)], limits: (f64, f64), serf: u32) {
    let (avg_limit, max_limit) = limits;
    let passes = runs
        .iter()
        .map(|(_, s)| s.avg <= avg_limit && s.max <= max_limit);
    check_pass_rate(name, passes, serf);
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median error over [`SEEDS`] against Serf's 75th percentiles.
fn check_distribution(
    name: &str,
    runs: &[(Vec<Client>, Stats)],
    serf_p75_avg: f64,
    serf_p75_max: f64,
) {
    let avg = median(runs.iter().map(|(_, s)| s.avg).collect());
    let max = median(runs.iter().map(|(_, s)| s.max).collect());
    println!(
        "{name}: seeds {SEEDS:?} median error avg={avg:.6} max={max:.6} (serf p75 \
         {serf_p75_avg} / {serf_p75_max})"
    );
    assert!(
        avg <= serf_p75_avg && max <= serf_p75_max,
        "{name} off Serf's distribution over seeds {SEEDS:?}: median avg {avg:.6} \
         (serf p75 {serf_p75_avg}), median max {max:.6} (serf p75 {serf_p75_max})"
    );
}

#[test]
fn line() {
    let runs = runs(&CoordinateConfig::default(), &generate_line(10, ms(10)));
    check_serf_limits("line", &runs, (0.0031, 0.013), 604);
    check_distribution("line", &runs, 0.003035, 0.015727);
}

#[test]
fn grid() {
    let runs = runs(&CoordinateConfig::default(), &generate_grid(25, ms(10)));
    check_serf_limits("grid", &runs, (0.0016, 0.023), 562);
    check_distribution("grid", &runs, 0.001776, 0.016173);
}

#[test]
fn split() {
    let runs = runs(
        &CoordinateConfig::default(),
        &generate_split(25, ms(1), ms(10)),
    );
    check_serf_limits("split", &runs, (0.000060, 0.00048), 717);
    check_distribution("split", &runs, 0.000062, 0.000527);
}

#[test]
fn random() {
    let runs = runs(&CoordinateConfig::default(), &random_truth());
    check_serf_limits("random", &runs, (0.075, 0.33), 924);
    check_distribution("random", &runs, 0.054331, 0.283234);
}

/// Node 0's height and the largest height among the others, as fractions of the radius.
fn heights(clients: &[Client], radius: Duration) -> (f64, f64) {
    let r = radius.as_secs_f64();
    let h: Vec<f64> = clients
        .iter()
        .map(|c| c.get_coordinate().height() / r)
        .collect();
    (h[0], h[1..].iter().copied().fold(0.0, f64::max))
}

#[test]
fn height() {
    let radius = ms(100);
    // Two dimensions represent the circle exactly, so node 0 can only be fitted by height.
    let config = config_2d();
    let runs = runs(&config, &generate_circle(25, radius));
    // Serf's count covers its error limits; the heights are checked against its distribution
    check_serf_limits("height", &runs, (0.0028, 0.064), 156);
    check_distribution("height", &runs, 0.003623, 0.071941);
    let runs: Vec<(f64, f64)> = runs.iter().map(|(c, _)| heights(c, radius)).collect();
    let centre = median(runs.iter().map(|h| h.0).collect());
    let others = median(runs.iter().map(|h| h.1).collect());
    println!(
        "height: seeds {SEEDS:?} median node 0 height={centre:.4} r, others \
         max={others:.4} r (serf p25 1.0075 r, p75 0.0334 r)"
    );
    assert!(
        centre >= 1.0075 && others <= 0.0334,
        "heights off Serf's distribution over seeds {SEEDS:?}: median node 0 \
         {centre:.4} r (serf p25 1.0075 r), median max of others {others:.4} r (serf p75 0.0334 r)"
    );
}

/// Distance from the origin of the middle of the nodes' bounding box, in seconds (Serf's
/// "center error").
fn center_offset(clients: &[Client]) -> f64 {
    let coords: Vec<Coordinate> = clients.iter().map(Client::get_coordinate).collect();
    let dims = coords[0].vec().len();
    (0..dims)
        .map(|d| {
            let (lo, hi) = coords.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
                (lo.min(c.vec()[d]), hi.max(c.vec()[d]))
            });
            let mid = lo + (hi - lo) / 2.0;
            mid * mid
        })
        .sum::<f64>()
        .sqrt()
}

/// Serf's drift run; returns the centre offset after 1000 cycles and after 10,000 more.
fn drift_run(seed: u64) -> (f64, f64) {
    // Serf's side length. Gravity pulls by (d / 150 s)^2 per update, so on a 10 ms square it
    // moves the centre by well under 1 % in 10,000 cycles (Serf's own code: 0 of 200 seeds
    // pass); the test needs a system hundreds of milliseconds across.
    let side = ms(500);
    let mut clients = generate_clients(4, &config_2d());

    // Start as Serf does: a square up in the first quadrant, well off the origin. Serf puts
    // nodes 2 and 3 on the same corner; the algorithm soon pushes them apart.
    let s = side.as_secs_f64();
    let start = [[0.0, 0.0], [0.0, s], [s, s], [s, s]];
    for (client, xy) in clients.iter_mut().zip(start) {
        let c = client.get_coordinate();
        let moved = Coordinate::from_parts(xy.to_vec(), c.error(), c.adjustment(), c.height());
        client.set_coordinate(&moved).expect("valid coordinate");
    }

    // Serf's truth: every pair is one side apart except 0-2, a diagonal.
    let truth = symmetric(4, |i, j| {
        if i % 2 == 0 && j % 2 == 0 {
            side.mul_f64(std::f64::consts::SQRT_2)
        } else {
            side
        }
    });

    // Serf re-seeds each simulation run, so both runs draw the same sequence.
    simulate(&mut clients, &truth, 1000, seed);
    let baseline = center_offset(&clients);
    simulate(&mut clients, &truth, 10_000, seed);
    (baseline, center_offset(&clients))
}

#[test]
fn drift() {
    let ratios: Vec<f64> = SEEDS
        .map(|seed| {
            let (baseline, offset) = drift_run(seed);
            offset / baseline
        })
        .collect();
    check_pass_rate("drift", ratios.iter().map(|r| *r <= 0.8), 958);
    let ratio = median(ratios);
    println!("drift: seeds {SEEDS:?} median ratio={ratio:.4} (serf p75 0.7851)");
    assert!(
        ratio <= 0.7851,
        "drift off Serf's distribution over seeds {SEEDS:?}: median ratio \
         {ratio:.4} (serf p75 0.7851)"
    );
}
