//! Membership behaviour in the simulator, against memberlist's published numbers. Every test
//! prints its seed and figures; a failing assertion names the seed to reproduce it.

use std::time::Duration;

use vantage_gossip::sim::{name_of, Action, Sim};
use vantage_gossip::{Config, Event, Profile, State, Tags};

fn uniform(ms: u64) -> vantage_gossip::sim::Latency {
    Box::new(move |_, _| Duration::from_millis(ms))
}

/// A cluster of `n` that has converged, or a panic naming the seed.
fn converged(cfg: Config, n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(cfg, n, uniform(1), seed);
    sim.join_all(0);
    for _ in 0..120 {
        let t = sim.elapsed() + Duration::from_millis(500);
        sim.run_until(t);
        if sim.converged() {
            return sim;
        }
    }
    panic!("seed {seed}: {n} nodes did not converge within 60 s");
}

#[test]
fn join_converges() {
    let seed = 1;
    let sim = converged(Config::profile(Profile::Lan), 20, seed);
    println!("seed {seed}: 20 nodes converged at {:?}", sim.elapsed());
    assert!(sim.converged());
}

/// Time from `from` until `fraction` of the other nodes logged an update of node 0's tags.
fn spread_time(n: usize, seed: u64) -> Duration {
    let mut sim = converged(Config::profile(Profile::Lan), n, seed);
    // let join chatter settle so the update competes with a quiet cluster
    let t = sim.elapsed() + Duration::from_secs(20);
    sim.run_until(t);
    let start = sim.elapsed();
    let mut tags = Tags::new();
    tags.insert("version".into(), "2".into());
    sim.apply(Action::SetTags {
        node: 0,
        tags: tags.clone(),
    });
    sim.run_until(start + Duration::from_secs(10));
    let mut first_seen = std::collections::HashMap::new();
    for l in sim.log.iter().filter(|l| l.at >= start && l.node != 0) {
        if matches!(&l.event, Event::Updated(m) if m.name == name_of(0) && m.tags == tags) {
            first_seen.entry(l.node).or_insert(l.at - start);
        }
    }
    let mut times: Vec<Duration> = first_seen.into_values().collect();
    times.sort();
    let need = ((n - 1) as f64 * 0.999).ceil() as usize;
    assert!(
        times.len() >= need,
        "seed {seed}: only {} of {} nodes saw the update",
        times.len(),
        n - 1
    );
    times[need - 1]
}

#[test]
fn dissemination_reaches_999_permille_in_time() {
    let seed = 7;
    let t100 = spread_time(100, seed);
    println!("seed {seed}: update reached 99.9% of 100 nodes in {t100:?}");
    assert!(
        t100 <= Duration::from_millis(1600),
        "seed {seed}: {t100:?} > 1.6 s at n=100"
    );
    let t1000 = spread_time(1000, seed);
    println!("seed {seed}: update reached 99.9% of 1000 nodes in {t1000:?}");
    assert!(
        t1000 <= Duration::from_millis(2000),
        "seed {seed}: {t1000:?} > 2.0 s at n=1000"
    );
}

/// (first, last) time at which the survivors declared `victim` failed after it crashed.
fn detection(n: usize, seed: u64) -> (Duration, Duration) {
    let mut sim = converged(Config::profile(Profile::Lan), n, seed);
    let victim = n - 1;
    let start = sim.elapsed();
    sim.apply(Action::Crash(victim));
    sim.run_until(start + Duration::from_secs(120));
    let mut seen: Vec<(usize, Duration)> = Vec::new();
    for l in &sim.log {
        if l.at >= start && l.node != victim {
            if let Event::Failed { name } = &l.event {
                if *name == name_of(victim) && !seen.iter().any(|(i, _)| *i == l.node) {
                    seen.push((l.node, l.at - start));
                }
            }
        }
    }
    assert_eq!(
        seen.len(),
        n - 1,
        "seed {seed}: only {} of {} survivors declared the crash",
        seen.len(),
        n - 1
    );
    let first = seen.iter().map(|s| s.1).min().expect("non-empty");
    let last = seen.iter().map(|s| s.1).max().expect("non-empty");
    (first, last)
}

#[test]
fn crash_detected_within_memberlist_window() {
    for (n, seed) in [(10, 3), (100, 4)] {
        let cfg = Config::profile(Profile::Lan);
        let probe = cfg.probe_interval.as_secs_f64();
        // memberlist: suspicion lasts min = mult × max(1, log10 n) × interval up to 6 × min; the
        // victim is probed within about one interval and the probe itself takes one interval
        let min = f64::from(cfg.suspicion_mult) * (n as f64).log10().max(1.0) * probe;
        let max = min * f64::from(cfg.suspicion_max_timeout_mult);
        let (first, last) = detection(n, seed);
        println!(
            "seed {seed}: n={n} crash detected first after {:.2} s, by all after {:.2} s (window {:.1}–{:.1} s)",
            first.as_secs_f64(),
            last.as_secs_f64(),
            min,
            max + 2.0 * probe
        );
        assert!(
            first.as_secs_f64() >= min,
            "seed {seed}: declared dead before the minimum suspicion"
        );
        assert!(
            last.as_secs_f64() <= max + 2.0 * probe,
            "seed {seed}: detection took {last:?}"
        );
    }
}

#[test]
fn partition_and_heal() {
    let seed = 11;
    let n = 20;
    let mut cfg = Config::profile(Profile::Lan);
    cfg.push_pull_interval = Duration::from_secs(30);
    let mut sim = converged(cfg.clone(), n, seed);
    let left: Vec<usize> = (0..n / 2).collect();
    let right: Vec<usize> = (n / 2..n).collect();
    let start = sim.elapsed();
    sim.apply(Action::Partition(left.clone(), right.clone()));
    sim.run_until(start + Duration::from_secs(60));
    for &i in &left {
        let g = sim.node(i).expect("running");
        for &j in &right {
            let state = g.member(&name_of(j)).map(|m| m.state);
            assert_eq!(
                state,
                Some(State::Dead),
                "seed {seed}: n{i} sees n{j} as {state:?} after 60 s of partition"
            );
        }
    }
    let healed = sim.elapsed();
    sim.apply(Action::Heal);
    let budget = cfg.push_pull_interval * 2 + Duration::from_secs(5);
    let mut whole_at = None;
    while sim.elapsed() < healed + budget + Duration::from_secs(60) {
        let t = sim.elapsed() + Duration::from_millis(250);
        sim.run_until(t);
        if sim.converged() {
            whole_at = Some(sim.elapsed() - healed);
            break;
        }
    }
    let whole_at = whole_at
        .unwrap_or_else(|| panic!("seed {seed}: membership never became whole after healing"));
    println!(
        "seed {seed}: partition healed, membership whole after {:.1} s",
        whole_at.as_secs_f64()
    );
    assert!(
        whole_at <= budget,
        "seed {seed}: took {whole_at:?}, budget {budget:?}"
    );
}
