//! The `fleet` profile declares no healthy node failed on the 20-region matrix with 1% loss and
//! CPU stalls (the scenario of `examples/fleet-detect-bench.rs`, where the profile was chosen on
//! seeds 1..=20). The seeds here were not used to choose it.

use vantage_gossip::{Config, Profile};

mod support {
    pub mod fleet_faults;
}
use support::fleet_faults::run;

#[test]
fn the_fleet_profile_declares_no_healthy_node_failed_under_loss_and_stalls() {
    let config = Config::profile(Profile::Fleet);
    for seed in 101..=108 {
        let o = run(&config, seed);
        println!(
            "seed {seed}: crash seen by all in {:.1} s, {} false failures, {} false suspicions, \
             stalling nodes declared failed {} times",
            o.detect.as_secs_f64(),
            o.false_failures,
            o.false_suspicions,
            o.stallers_failed
        );
        assert_eq!(
            o.false_failures, 0,
            "seed {seed}: the fleet profile declared healthy nodes failed"
        );
    }
}
