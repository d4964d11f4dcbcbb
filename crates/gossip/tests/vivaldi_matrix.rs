//! Vivaldi on the measured 20-region matrix, in the simulator with the `fleet` profile: one node
//! per region, then three per region. The figure is the median relative error of every node's
//! estimate against the matrix (same-region pairs, which the matrix does not measure, excluded).

use std::time::Duration;

use vantage_gossip::coordinate::estimate_rtt;
use vantage_gossip::sim::Sim;
use vantage_gossip::{Config, Profile};
use vantage_wan::Matrix;

fn median_error(per_region: usize, seed: u64) -> f64 {
    let m = Matrix::builtin();
    let regions = m.regions().len();
    let n = regions * per_region;
    let region = move |i: usize| i % regions;
    let lat = m.clone();
    let latency = Box::new(move |a: usize, b: usize| {
        let (ra, rb) = (region(a), region(b));
        if ra == rb {
            Duration::from_micros(500)
        } else {
            lat.rtt_at(ra, rb) / 2
        }
    });
    let mut sim = Sim::new(Config::profile(Profile::Fleet), n, latency, seed);
    sim.join_all(0);
    sim.run_until(Duration::from_secs(300));
    let mut errors = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if region(a) == region(b) {
                continue;
            }
            let ca = sim.node(a).expect("running").coordinate();
            let cb = sim.node(b).expect("running").coordinate();
            let est = estimate_rtt(&ca, &cb).as_secs_f64();
            let truth = m.rtt_at(region(a), region(b)).as_secs_f64();
            errors.push((est - truth).abs() / truth);
        }
    }
    errors.sort_by(f64::total_cmp);
    errors[errors.len() / 2]
}

#[test]
fn fleet_profile_embeds_the_real_matrix() {
    for (per_region, seed) in [(1, 5), (3, 6)] {
        let e = median_error(per_region, seed);
        println!(
            "seed {seed}: {per_region} node(s) per region, 300 s: median relative error {:.1}%",
            e * 100.0
        );
        assert!(
            e <= 0.10,
            "seed {seed}: median relative error {:.1}% > 10% with {per_region} per region",
            e * 100.0
        );
    }
}
