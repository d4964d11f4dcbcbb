//! A live member's name cannot be taken over from another address (memberlist's name
//! conflict); a left member's can. Sans-IO cores exchanging push-pull state directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use vantage_gossip::{Config, Event, Gossip, Profile, State, Tags};

fn core(name: &str, addr: &str, seed: u64, now: Instant) -> Gossip {
    let addr: SocketAddr = addr.parse().unwrap();
    Gossip::new(
        Config::profile(Profile::Lan),
        name,
        addr,
        &Tags::new(),
        seed,
        now,
    )
    .unwrap()
}

/// `from` joins `to` by one full push-pull exchange, as the driver would carry it out.
fn push_pull(from: &mut Gossip, to: &mut Gossip, now: Instant) {
    let to_addr = to.member(to.name()).unwrap().addr;
    from.join(&[to_addr]);
    while let Some(req) = from.poll_stream() {
        let reply = to
            .handle_stream(now, from.member(from.name()).unwrap().addr, &req.data)
            .unwrap();
        from.handle_stream_reply(now, req.to, &reply).unwrap();
    }
}

fn drain(g: &mut Gossip) -> Vec<Event> {
    std::iter::from_fn(|| g.poll_event()).collect()
}

#[test]
fn a_live_members_address_is_not_taken_over_by_a_higher_incarnation() {
    let now = Instant::now();
    let mut a = core("a", "10.0.0.1:7946", 1, now);
    let mut b = core("b", "10.0.0.2:7946", 2, now);
    push_pull(&mut b, &mut a, now);
    assert_eq!(
        a.member("b").unwrap().addr,
        "10.0.0.2:7946".parse().unwrap()
    );
    drain(&mut a);

    // a second process calling itself b, elsewhere, with a higher incarnation
    let mut impostor = core("b", "10.0.0.66:7946", 3, now);
    for _ in 0..5 {
        impostor.set_tags(now, &Tags::new()).unwrap();
    }
    let later = now + Duration::from_secs(1);
    push_pull(&mut impostor, &mut a, later);
    let seen = a.member("b").unwrap();
    assert_eq!(
        (seen.addr, seen.state),
        ("10.0.0.2:7946".parse().unwrap(), State::Alive),
        "a live member was moved to the claimant's address"
    );
    let events = drain(&mut a);
    assert!(
        events.contains(&Event::Conflict {
            name: "b".into(),
            addr: "10.0.0.2:7946".parse().unwrap(),
            claimed: "10.0.0.66:7946".parse().unwrap(),
        }),
        "no conflict event: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Updated(_))),
        "{events:?}"
    );
    // the same claim again (gossip retransmits it) is not news
    push_pull(&mut impostor, &mut a, later);
    let again = drain(&mut a);
    assert!(
        !again.iter().any(|e| matches!(e, Event::Conflict { .. })),
        "a repeated claim was reported again: {again:?}"
    );
    // a newer claim is
    impostor.set_tags(later, &Tags::new()).unwrap();
    push_pull(&mut impostor, &mut a, later);
    let newer = drain(&mut a);
    assert!(
        newer.iter().any(|e| matches!(e, Event::Conflict { .. })),
        "a newer claim was not reported: {newer:?}"
    );

    // once the real b has left, the name is free to come back from another address
    b.leave(later);
    push_pull(&mut b, &mut a, later);
    assert_eq!(a.member("b").unwrap().state, State::Left);
    for _ in 0..5 {
        impostor.set_tags(later, &Tags::new()).unwrap();
    }
    push_pull(&mut impostor, &mut a, later + Duration::from_secs(1));
    let seen = a.member("b").unwrap();
    assert_eq!(
        (seen.addr, seen.state),
        ("10.0.0.66:7946".parse().unwrap(), State::Alive)
    );
}
