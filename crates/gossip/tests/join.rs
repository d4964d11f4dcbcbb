//! Many nodes joining at once converge without waiting for a periodic push-pull (issue 12 item
//! 10). In `gossip-bench`, fifty processes start together on two cores; the kernel drops part of
//! the burst of alive broadcasts for full receive buffers, and a node that missed one used to
//! wait 30 to 60 s for the next periodic push-pull. Here the burst's loss is simulated.

use std::time::Duration;

use vantage_gossip::sim::{Action, Sim};
use vantage_gossip::{Config, Profile};

const NODES: usize = 50;
/// Datagram loss while the cluster forms, as in a burst that overflows receive buffers.
const BURST_LOSS: f64 = 0.5;
const BURST: Duration = Duration::from_secs(3);
/// Liveness limit: far above the early syncs (1, 3 and 7 s after joining), far below the
/// periodic push-pull (30 s or more).
const LIMIT: Duration = Duration::from_secs(15);

/// Virtual time until every node sees all others alive, or `None` within `limit`.
fn converge(seed: u64, limit: Duration) -> Option<Duration> {
    let mut sim = Sim::new(
        Config::profile(Profile::Lan),
        NODES,
        Box::new(|_, _| Duration::from_millis(1)),
        seed,
    );
    sim.apply(Action::SetLoss(BURST_LOSS));
    sim.join_all(0);
    let step = Duration::from_millis(100);
    while sim.elapsed() < limit {
        if sim.elapsed() >= BURST {
            sim.apply(Action::SetLoss(0.0));
        }
        if sim.converged() {
            return Some(sim.elapsed());
        }
        let next = sim.elapsed() + step;
        sim.run_until(next);
    }
    None
}

#[test]
fn a_cluster_joining_at_once_through_a_lossy_burst_converges_without_the_periodic_push_pull() {
    for seed in 1..=10 {
        let took = converge(seed, LIMIT);
        println!("seed {seed}: converged after {took:?}");
        assert!(
            took.is_some(),
            "seed {seed}: {NODES} nodes joining at once with {BURST_LOSS} loss for {BURST:?} did \
             not converge within {LIMIT:?}"
        );
    }
}
