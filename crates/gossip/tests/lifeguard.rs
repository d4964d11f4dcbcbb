//! Lifeguard pays off: with 10% of the nodes stalling at random for 1–3 s over ten simulated
//! minutes, healthy nodes are falsely declared failed far less often with Lifeguard than without.
//!
//! A stall is CPU starvation as Lifeguard describes it: the node's timers keep firing (it keeps
//! probing), but what it receives is handled 1–3 s late. A full freeze (timers stopped too) is also
//! run and printed: it produces no false failures either way with memberlist's lan numbers, because
//! a frozen node neither accuses anyone nor stays silent past the minimum suspicion timeout.

use std::collections::HashSet;
use std::time::Duration;

use vantage_gossip::sim::{name_of, Action, Scenario};
use vantage_gossip::{Config, Event, Profile, Rng};

/// False "failed" declarations of nodes that never paused, over the whole run.
fn false_failures(lifeguard: bool, seed: u64, slow: bool) -> (usize, usize) {
    let n = 50;
    let mut cfg = Config::profile(Profile::Lan);
    cfg.lifeguard = lifeguard;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let pausers: Vec<usize> = {
        let mut all: Vec<usize> = (1..n).collect();
        rng.shuffle(&mut all);
        all.truncate(n / 10);
        all
    };
    let mut steps = Vec::new();
    for &p in &pausers {
        let mut t = Duration::from_millis(rng.below(10_000) as u64);
        while t < Duration::from_secs(600) {
            let pause = Duration::from_millis(1000 + rng.below(2000) as u64);
            if slow {
                steps.push((
                    t,
                    Action::Slow {
                        node: p,
                        delay: pause,
                        for_: Duration::from_secs(20),
                    },
                ));
            } else {
                steps.push((
                    t,
                    Action::Pause {
                        node: p,
                        for_: pause,
                    },
                ));
            }
            t += pause + Duration::from_millis(2_000 + rng.below(20_000) as u64);
        }
    }
    let pauses = steps.len();
    let warmup = Duration::from_secs(30);
    let scenario = Scenario {
        seed,
        nodes: n,
        config: cfg,
        loss: 0.0,
        warmup,
        steps,
        run_for: Duration::from_secs(600),
    };
    let sim = scenario.run(Box::new(|_, _| Duration::from_millis(1)));
    let start = warmup;
    let paused: HashSet<String> = pausers.iter().map(|&p| name_of(p)).collect();
    let count = sim
        .log
        .iter()
        .filter(|l| l.at >= start)
        .filter(|l| matches!(&l.event, Event::Failed { name } if !paused.contains(name)))
        .count();
    (count, pauses)
}

#[test]
fn lifeguard_cuts_false_failures_tenfold() {
    let seed = 21;
    let (frozen_with, _) = false_failures(true, seed, false);
    let (frozen_without, _) = false_failures(false, seed, false);
    println!("seed {seed}: full freezes: false failures {frozen_with} with Lifeguard, {frozen_without} without");
    let (with, pauses) = false_failures(true, seed, true);
    let (without, _) = false_failures(false, seed, true);
    println!("seed {seed}: {pauses} stalls; false failures of healthy nodes: {with} with Lifeguard, {without} without");
    assert!(
        without >= 10,
        "seed {seed}: the scenario is too mild to compare ({without} without Lifeguard)"
    );
    assert!(
        with * 10 <= without,
        "seed {seed}: {with} with Lifeguard vs {without} without: not 10× fewer"
    );
}
