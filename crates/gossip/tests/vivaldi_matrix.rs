//! Vivaldi on the measured 20-region matrix, in the simulator with the `fleet` profile: one node
//! per region, then three per region. The figure is the median relative error of every node's
//! estimate against the matrix (same-region pairs, which the matrix does not measure, excluded).

use std::time::Duration;

use vantage_gossip::coordinate::estimate_rtt;
use vantage_gossip::sim::Sim;
use vantage_gossip::{Config, Profile};
use vantage_wan::Matrix;

mod support {
    pub mod fleet_faults;
}
use support::fleet_faults::matrix_latency;

fn median_error(per_region: usize, seed: u64) -> f64 {
    let m = Matrix::builtin();
    let regions = m.regions().len();
    let n = regions * per_region;
    let region = move |i: usize| i % regions;
    let mut sim = Sim::new(Config::profile(Profile::Fleet), n, matrix_latency(&m), seed);
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

/// Why `fleet` and not `lan` across continents: on the real matrix with 1% loss, count suspicions
/// and failure declarations of nodes that never failed, and time a real crash.
fn false_alarms(profile: Profile, seed: u64) -> (usize, usize, Duration) {
    let m = Matrix::builtin();
    let n = m.regions().len() * 2;
    let mut sim = Sim::new(Config::profile(profile), n, matrix_latency(&m), seed);
    sim.join_all(0);
    sim.run_until(Duration::from_secs(60));
    let start = sim.elapsed();
    sim.apply(vantage_gossip::sim::Action::SetLoss(0.01));
    sim.run_until(start + Duration::from_secs(300));
    let victim = n - 1;
    let crash = sim.elapsed();
    sim.apply(vantage_gossip::sim::Action::Crash(victim));
    sim.run_until(crash + Duration::from_secs(120));
    let victim_name = vantage_gossip::sim::name_of(victim);
    let (mut suspects, mut failures) = (0, 0);
    let mut detected = Vec::new();
    for l in sim.log.iter().filter(|l| l.at >= start) {
        match &l.event {
            vantage_gossip::Event::Suspect { name } if l.at < crash || *name != victim_name => {
                suspects += 1
            }
            vantage_gossip::Event::Failed { name } if *name == victim_name && l.at >= crash => {
                detected.push(l.at - crash)
            }
            vantage_gossip::Event::Failed { .. } => failures += 1,
            _ => {}
        }
    }
    let all = detected.iter().max().copied().unwrap_or(Duration::MAX);
    assert_eq!(
        detected.len(),
        n - 1,
        "seed {seed}: {profile:?}: only {} of {} declared the crash",
        detected.len(),
        n - 1
    );
    (suspects, failures, all)
}

#[test]
fn fleet_profile_has_no_false_failures_on_the_real_matrix() {
    let seed = 8;
    let (ls, lf, ld) = false_alarms(Profile::Lan, seed);
    let (fs, ff, fd) = false_alarms(Profile::Fleet, seed);
    println!(
        "seed {seed}: 40 nodes on the real matrix, 1% loss, 5 min: lan {ls} false suspicions, {lf} false failures, crash seen by all in {:.1} s; fleet {fs} false suspicions, {ff} false failures, crash seen by all in {:.1} s",
        ld.as_secs_f64(),
        fd.as_secs_f64()
    );
    assert_eq!(
        ff, 0,
        "seed {seed}: the fleet profile declared healthy nodes failed"
    );
}
