//! Member lifecycle in the simulator: leave, reap, restart under the same name, user events, and
//! scale. Seeds are printed; a failing assertion names its seed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vantage_gossip::sim::{name_of, Action, Sim};
use vantage_gossip::{Config, Event, Profile, State, MAX_USER_EVENT};

fn cluster(n: usize, seed: u64, cfg: Config) -> Sim {
    let mut sim = Sim::new(cfg, n, Box::new(|_, _| Duration::from_millis(2)), seed);
    sim.join_all(0);
    sim.run_until(Duration::from_secs(10));
    assert!(
        sim.converged(),
        "seed {seed}: {n} nodes did not converge in 10 s"
    );
    sim
}

#[test]
fn graceful_leave_is_left_not_failed_and_tombstones_are_reaped() {
    let seed = 31;
    let mut cfg = Config::profile(Profile::Lan);
    cfg.reap_after = Duration::from_secs(30);
    let mut sim = cluster(10, seed, cfg);
    let start = sim.elapsed();
    sim.apply(Action::Leave(9));
    sim.run_until(start + Duration::from_secs(5));
    sim.apply(Action::Crash(9)); // the process exits after announcing its departure
    sim.run_until(start + Duration::from_secs(20));
    for i in 0..9 {
        let state = sim.node(i).unwrap().member(&name_of(9)).map(|m| m.state);
        assert_eq!(
            state,
            Some(State::Left),
            "seed {seed}: n{i} sees the leaver as {state:?}"
        );
    }
    let failed = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Failed { name } if *name == name_of(9)))
        .count();
    assert_eq!(
        failed, 0,
        "seed {seed}: a graceful leave was reported as a failure"
    );
    sim.run_until(start + Duration::from_secs(60));
    for i in 0..9 {
        assert!(
            sim.node(i).unwrap().member(&name_of(9)).is_none(),
            "seed {seed}: n{i} never reaped the leaver"
        );
    }
    let reaped = sim
        .log
        .iter()
        .filter(|l| matches!(&l.event, Event::Reaped { name } if *name == name_of(9)))
        .count();
    assert_eq!(reaped, 9, "seed {seed}");
}

#[test]
fn restarted_node_rejoins_under_its_name() {
    let seed = 32;
    let mut sim = cluster(10, seed, Config::profile(Profile::Lan));
    let start = sim.elapsed();
    sim.apply(Action::Crash(5));
    sim.run_until(start + Duration::from_secs(30));
    for i in (0..10).filter(|&i| i != 5) {
        assert_eq!(
            sim.node(i).unwrap().member(&name_of(5)).map(|m| m.state),
            Some(State::Dead),
            "seed {seed}: n{i}"
        );
    }
    // a fresh process: incarnation 1 again, lower than the tombstone's; it must refute its death
    sim.apply(Action::Restart { node: 5, via: 0 });
    sim.run_until(start + Duration::from_secs(40));
    assert!(
        sim.converged(),
        "seed {seed}: the restarted node was not taken back"
    );
    let inc = sim
        .node(0)
        .unwrap()
        .member(&name_of(5))
        .unwrap()
        .incarnation;
    assert!(
        inc > 1,
        "seed {seed}: rejoin must out-bid the old incarnation, got {inc}"
    );
}

#[test]
fn user_events_reach_everyone_once_in_lamport_order() {
    let seed = 33;
    let mut sim = cluster(30, seed, Config::profile(Profile::Lan));
    let start = sim.elapsed();
    for k in 0..5 {
        sim.apply(Action::UserEvent {
            node: k * 3,
            name: format!("deploy-{k}"),
        });
        // far enough apart that each issuer has seen the previous event (causal order)
        sim.run_until(start + Duration::from_secs(2 * (k as u64 + 1)));
    }
    sim.run_until(start + Duration::from_secs(15));
    let mut seen: HashMap<(usize, String), Vec<u64>> = HashMap::new();
    for l in sim.log.iter().filter(|l| l.at >= start) {
        if let Event::User { ltime, name, .. } = &l.event {
            seen.entry((l.node, name.clone())).or_default().push(*ltime);
        }
    }
    for node in 0..30 {
        for k in 0..5 {
            let got = seen.get(&(node, format!("deploy-{k}"))).map_or(0, Vec::len);
            assert_eq!(got, 1, "seed {seed}: n{node} saw deploy-{k} {got} times");
        }
    }
    // causally later events carry later Lamport times
    let t = |k: usize| seen[&(0, format!("deploy-{k}"))][0];
    assert!(
        (1..5).all(|k| t(k) > t(k - 1)),
        "seed {seed}: lamport times not increasing"
    );
    let err = sim
        .with(0, |g| g.user_event("big", &vec![0; MAX_USER_EVENT]))
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("limit is 512"), "{err}");
}

#[test]
fn five_hundred_nodes_simulate_quickly() {
    let seed = 34;
    let wall = Instant::now();
    let mut sim = Sim::new(
        Config::profile(Profile::Lan),
        500,
        Box::new(|_, _| Duration::from_millis(5)),
        seed,
    );
    sim.join_all(0);
    sim.run_until(Duration::from_secs(60));
    assert!(
        sim.converged(),
        "seed {seed}: 500 nodes did not converge in 60 simulated seconds"
    );
    println!(
        "seed {seed}: 500 nodes, 60 simulated seconds, {} datagrams, in {:.1} s of wall time",
        sim.datagrams,
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn a_user_event_sent_while_a_node_is_cut_off_reaches_it_after_the_heal() {
    for seed in 40..44 {
        let mut sim = cluster(10, seed, Config::profile(Profile::Lan));
        let start = sim.elapsed();
        let rest: Vec<usize> = (0..9).collect();
        sim.apply(Action::Partition(vec![9], rest));
        sim.run_until(start + Duration::from_secs(1));
        sim.apply(Action::UserEvent {
            node: 0,
            name: "during-cut".into(),
        });
        sim.run_until(start + Duration::from_secs(20));
        let got = |sim: &Sim, node: usize| {
            sim.log
                .iter()
                .filter(|l| l.node == node)
                .filter(|l| matches!(&l.event, Event::User { name, .. } if name == "during-cut"))
                .count()
        };
        assert_eq!(got(&sim, 9), 0, "seed {seed}: the cut reached n9");
        assert_eq!(got(&sim, 1), 1, "seed {seed}: n1 missed the event");
        sim.apply(Action::Heal);
        // long enough for the periodic push-pull (30 s) and its reconnect attempt
        sim.run_until(start + Duration::from_secs(140));
        assert_eq!(
            got(&sim, 9),
            1,
            "seed {seed}: n9 did not receive the event after the heal"
        );
    }
}

#[test]
fn a_restarted_node_does_not_replay_the_clusters_past_events() {
    let seed = 45;
    let mut sim = cluster(10, seed, Config::profile(Profile::Lan));
    let start = sim.elapsed();
    sim.apply(Action::UserEvent {
        node: 0,
        name: "before".into(),
    });
    sim.run_until(start + Duration::from_secs(5));
    sim.apply(Action::Crash(5));
    sim.run_until(start + Duration::from_secs(30));
    let restart = sim.elapsed();
    sim.apply(Action::Restart { node: 5, via: 0 });
    sim.run_until(start + Duration::from_secs(100));
    let replayed = sim
        .log
        .iter()
        .filter(|l| l.node == 5 && l.at >= restart)
        .filter(|l| matches!(&l.event, Event::User { .. }))
        .count();
    assert_eq!(replayed, 0, "seed {seed}: a joiner replayed past events");
}
