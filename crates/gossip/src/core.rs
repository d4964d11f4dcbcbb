//! The sans-IO membership state machine: SWIM probing with Lifeguard, piggybacked dissemination,
//! push-pull state sync, Vivaldi on direct acks. Time and randomness come in; datagrams, stream
//! requests, events and the next deadline come out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::broadcast::{retransmit_limit, Broadcasts};
use crate::config::Config;
use crate::coordinate::{Client, Coordinate, CoordinateConfig};

/// A snapshot of the Vivaldi coordinates a node knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinates {
    /// This node's own coordinate.
    pub own: Coordinate,
    /// The last coordinate each other member sent, by name.
    pub members: std::collections::BTreeMap<String, Coordinate>,
}
use crate::health::{Awareness, Suspicion};
use crate::member::{encode_tags, Member, State, Tags};
use crate::rng::Rng;
use crate::wire::{self, Accuse, Alive, Msg, Packet};
use crate::GossipError;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// A full-state exchange the driver must carry out over a stream: send `data`, read the reply and
/// hand it to [`Gossip::handle_stream_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub to: SocketAddr,
    pub data: Vec<u8>,
    pub join: bool,
}

/// What happened to the membership.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Joined(Member),
    Updated(Member),
    Suspect {
        name: String,
    },
    /// Declared dead by this node or learned to be.
    Failed {
        name: String,
    },
    Left {
        name: String,
    },
    /// A dead or left member's tombstone was removed.
    Reaped {
        name: String,
    },
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
    /// Someone claimed the name of a live member from another address, and was refused
    /// (memberlist's name conflict): two processes share a name, or one restarted elsewhere
    /// before the cluster noticed the old one die.
    Conflict {
        name: String,
        /// Where the member lives, as this node knows it.
        addr: SocketAddr,
        /// The address the refused claim came with.
        claimed: SocketAddr,
    },
    /// This node's own coordinate moved after an RTT sample to `peer`.
    CoordinateUpdated {
        peer: String,
        rtt: Duration,
    },
}

pub(crate) struct Node {
    pub(crate) member: Member,
    pub(crate) tags_raw: Vec<u8>,
    pub(crate) changed: Instant,
    /// The last claim to this name from another address that was refused, and its incarnation:
    /// the same claim arriving again (it is gossiped and retransmitted) is not news.
    pub(crate) refused: Option<(SocketAddr, u32)>,
}

enum Probe {
    /// Our own probe of `target`, started at `sent`.
    Direct {
        target: String,
        sent: Instant,
        timeout_at: Instant,
        end_at: Instant,
        indirect_sent: bool,
        expected_nacks: u32,
        nacks: u32,
    },
    /// A ping we send for `origin`, who asked us with its `origin_seq`.
    Relay {
        origin: SocketAddr,
        origin_seq: u32,
        nack: bool,
        deadline: Instant,
    },
}

/// Largest user event (name plus payload), in bytes.
pub const MAX_USER_EVENT: usize = 512;
/// Recent user events remembered for de-duplication (Serf's event buffer).
pub(crate) const EVENT_BUFFER_LEN: u64 = 64;

/// One node's membership protocol.
pub struct Gossip {
    pub(crate) cfg: Config,
    pub(crate) me: String,
    pub(crate) addr: SocketAddr,
    pub(crate) incarnation: u32,
    // ordered maps: iteration order feeds the seeded RNG, so it must not depend on a hasher
    pub(crate) nodes: BTreeMap<String, Node>,
    probe_order: Vec<String>,
    probe_index: usize,
    seq: u32,
    pub(crate) awareness: Awareness,
    probes: BTreeMap<u32, Probe>,
    pub(crate) suspicions: BTreeMap<String, Suspicion>,
    pub(crate) broadcasts: Broadcasts,
    coord: Client,
    coords: HashMap<String, Coordinate>,
    pub(crate) event_clock: u64,
    /// Events older than this are not delivered: set on joining, so a new member does not replay
    /// the cluster's past (Serf's join without replay).
    pub(crate) event_min_time: u64,
    pub(crate) seen_events: VecDeque<(u64, String, Vec<u8>)>,
    pub(crate) rng: Rng,
    out: VecDeque<Transmit>,
    pub(crate) streams: VecDeque<StreamRequest>,
    pub(crate) events: VecDeque<Event>,
    next_probe: Instant,
    next_gossip: Instant,
    pub(crate) next_push_pull: Instant,
    /// Early push-pulls still due after joining (see [`JOIN_SYNCS`]).
    pub(crate) join_syncs_left: u32,
    next_reap: Instant,
    pub(crate) leaving: bool,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("me", &self.me)
            .field("members", &self.nodes.len())
            .finish()
    }
}

impl Gossip {
    /// A node named `name`, reachable at `addr`, with its first tags. `seed` feeds all randomness.
    pub fn new(
        cfg: Config,
        name: &str,
        addr: SocketAddr,
        tags: &Tags,
        seed: u64,
        now: Instant,
    ) -> Result<Self, GossipError> {
        cfg.validate().map_err(GossipError::Config)?;
        if name.is_empty() || name.len() > 255 {
            return Err(GossipError::Name(name.len()));
        }
        let tags_raw = encode_tags(tags)?;
        let mut rng = Rng::new(seed);
        let jitter = |rng: &mut Rng, d: Duration| d.mul_f64(rng.unit());
        let mut g = Self {
            next_probe: now + jitter(&mut rng, cfg.probe_interval),
            next_gossip: now + jitter(&mut rng, cfg.gossip_interval),
            next_push_pull: now + cfg.push_pull_interval + jitter(&mut rng, cfg.push_pull_interval),
            next_reap: now + Duration::from_secs(1),
            join_syncs_left: 0,
            cfg,
            me: name.to_owned(),
            addr,
            incarnation: 1,
            nodes: BTreeMap::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            seq: 0,
            awareness: Awareness::new(8),
            probes: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            broadcasts: Broadcasts::default(),
            coord: Client::new(CoordinateConfig::default())
                .expect("the default coordinate config is valid"),
            coords: HashMap::new(),
            event_clock: 0,
            event_min_time: 0,
            seen_events: VecDeque::new(),
            rng,
            out: VecDeque::new(),
            streams: VecDeque::new(),
            events: VecDeque::new(),
            leaving: false,
        };
        g.awareness = Awareness::new(g.cfg.awareness_max);
        let me = Member {
            name: name.to_owned(),
            addr,
            incarnation: 1,
            state: State::Alive,
            tags: tags.clone(),
        };
        g.nodes.insert(
            name.to_owned(),
            Node {
                member: me.clone(),
                tags_raw: tags_raw.clone(),
                changed: now,
                refused: None,
            },
        );
        g.events.push_back(Event::Joined(me));
        g.broadcast_alive_self();
        Ok(g)
    }

    pub fn name(&self) -> &str {
        &self.me
    }

    /// Starts full-state exchanges with `seeds`; the driver carries them out.
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        for &to in seeds {
            let data = self.push_pull_state(true).encode();
            self.streams.push_back(StreamRequest {
                to,
                data,
                join: true,
            });
        }
    }

    /// Leaves gracefully: tells the cluster, then keeps gossiping until the driver stops.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let a = Accuse {
            incarnation: self.incarnation,
            node: self.me.clone(),
            from: self.me.clone(),
        };
        self.broadcasts
            .push(&self.me.clone(), Msg::Dead(a).encode());
        if let Some(n) = self.nodes.get_mut(&self.me) {
            n.member.state = State::Left;
            n.changed = now;
        }
    }

    /// Broadcasts not yet sent their full number of times (a leaving driver waits for zero).
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Replaces this node's tags and tells the cluster.
    pub fn set_tags(&mut self, now: Instant, tags: &Tags) -> Result<(), GossipError> {
        let raw = encode_tags(tags)?;
        self.incarnation += 1;
        let n = self
            .nodes
            .get_mut(&self.me)
            .expect("self is always a member");
        n.member.tags = tags.clone();
        n.member.incarnation = self.incarnation;
        n.tags_raw = raw;
        n.changed = now;
        self.broadcast_alive_self();
        Ok(())
    }

    /// Sends a user event to the whole cluster (and to this node's own event stream).
    pub fn user_event(&mut self, name: &str, payload: &[u8]) -> Result<u64, GossipError> {
        if name.len() + payload.len() > MAX_USER_EVENT || name.len() > 255 {
            return Err(GossipError::EventTooLarge(name.len() + payload.len()));
        }
        self.event_clock += 1;
        let ltime = self.event_clock;
        self.record_event(ltime, name, payload);
        let e = wire::UserEvent {
            ltime,
            name: name.to_owned(),
            payload: payload.to_vec(),
        };
        self.broadcasts
            .push(&format!("\u{0}event:{ltime}:{name}"), Msg::User(e).encode());
        self.events.push_back(Event::User {
            ltime,
            name: name.to_owned(),
            payload: payload.to_vec(),
        });
        Ok(ltime)
    }

    /// Every known member, this node included, dead and left ones until they are reaped.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.nodes.values().map(|n| &n.member)
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.nodes.get(name).map(|n| &n.member)
    }

    /// Alive and suspect members, this node included.
    pub fn live_count(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.member.state.is_live())
            .count()
    }

    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    pub fn coordinate(&self) -> Coordinate {
        self.coord.get_coordinate()
    }

    /// This node's coordinate and the last coordinate each other member sent, by name.
    pub fn coordinates(&self) -> Coordinates {
        Coordinates {
            own: self.coordinate(),
            members: self
                .coords
                .iter()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
        }
    }

    /// The last coordinate `name` sent us, if any.
    pub fn coordinate_of(&self, name: &str) -> Option<&Coordinate> {
        if name == self.me {
            return None;
        }
        self.coords.get(name)
    }

    /// Estimated RTT between two members (either may be this node), from their coordinates.
    pub fn estimate_rtt(&self, a: &str, b: &str) -> Option<Duration> {
        let own = self.coordinate();
        let get = |n: &str| {
            if n == self.me {
                Some(&own)
            } else {
                self.coords.get(n)
            }
        };
        Some(crate::coordinate::estimate_rtt(get(a)?, get(b)?))
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_stream(&mut self) -> Option<StreamRequest> {
        self.streams.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Gossip::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self
            .next_probe
            .min(self.next_gossip)
            .min(self.next_push_pull)
            .min(self.next_reap);
        for p in self.probes.values() {
            t = t.min(match p {
                Probe::Direct {
                    timeout_at,
                    end_at,
                    indirect_sent,
                    ..
                } => {
                    if *indirect_sent {
                        *end_at
                    } else {
                        *timeout_at
                    }
                }
                Probe::Relay { deadline, .. } => *deadline,
            });
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline());
        }
        t
    }

    pub(crate) fn live_n(&self) -> usize {
        self.live_count().max(1)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msgs` to `to` in one datagram, topped up with piggybacked broadcasts.
    pub(crate) fn send(&mut self, to: SocketAddr, msgs: &[Vec<u8>]) {
        let mut p = Packet::new(&self.me, self.addr, self.cfg.max_packet);
        for m in msgs {
            if !p.push(m) {
                tracing::warn!(
                    len = m.len(),
                    "gossip message larger than max_packet dropped"
                );
            }
        }
        let limit = retransmit_limit(self.cfg.retransmit_mult, self.live_n());
        for b in self.broadcasts.take(p.room(), wire::PREFIX_LEN, limit) {
            p.push(&b);
        }
        if !p.is_empty() {
            self.out.push_back(Transmit {
                to,
                data: p.finish(),
            });
        }
    }

    pub(crate) fn broadcast_alive_self(&mut self) {
        let n = &self.nodes[&self.me];
        let a = Alive {
            incarnation: self.incarnation,
            node: self.me.clone(),
            addr: self.addr,
            tags: n.tags_raw.clone(),
        };
        self.broadcasts
            .push(&self.me.clone(), Msg::Alive(a).encode());
    }

    pub(crate) fn add_to_probe_order(&mut self, name: &str) {
        let at = self.rng.below(self.probe_order.len() + 1);
        self.probe_order.insert(at, name.to_owned());
    }

    /// Handles one datagram from `from`. Malformed input is dropped and reported.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), GossipError> {
        let (_sender, _sender_addr, msgs) = wire::decode_packet(data)?;
        for msg in msgs {
            self.handle_msg(now, from, msg);
        }
        Ok(())
    }

    fn handle_msg(&mut self, now: Instant, from: SocketAddr, msg: Msg) {
        match msg {
            Msg::Ping { seq, target } => {
                if target != self.me {
                    return; // a ping meant for a node that used to live at this address
                }
                let ack = Msg::Ack {
                    seq,
                    coord: Some(self.coordinate()),
                }
                .encode();
                self.send(from, &[ack]);
            }
            Msg::IndirectPing {
                seq,
                target,
                addr,
                nack,
            } => {
                let my_seq = self.next_seq();
                let deadline = now + self.awareness.scale(self.cfg.probe_timeout);
                self.probes.insert(
                    my_seq,
                    Probe::Relay {
                        origin: from,
                        origin_seq: seq,
                        nack,
                        deadline,
                    },
                );
                let ping = Msg::Ping {
                    seq: my_seq,
                    target,
                }
                .encode();
                self.send(addr, &[ping]);
            }
            Msg::Ack { seq, coord } => self.handle_ack(now, seq, coord),
            Msg::Nack { seq } => {
                if let Some(Probe::Direct { nacks, .. }) = self.probes.get_mut(&seq) {
                    *nacks += 1;
                }
            }
            Msg::Alive(a) => self.alive_node(now, a),
            Msg::Suspect(s) => self.suspect_node(now, s),
            Msg::Dead(d) => self.dead_node(now, d),
            Msg::User(e) => self.handle_user_event(e),
        }
    }

    fn handle_ack(&mut self, now: Instant, seq: u32, coord: Option<Coordinate>) {
        match self.probes.remove(&seq) {
            Some(Probe::Direct { target, sent, .. }) => {
                self.awareness.apply(-1);
                if let Some(c) = coord {
                    let rtt = now.saturating_duration_since(sent);
                    let mut rng = self.rng.clone();
                    let mut unit = || rng.unit();
                    match self.coord.update(&target, &c, rtt, &mut unit) {
                        Ok(_) => {
                            self.coords.insert(target.clone(), c);
                            self.events
                                .push_back(Event::CoordinateUpdated { peer: target, rtt });
                        }
                        Err(e) => {
                            tracing::debug!(peer = %target, error = %e, "coordinate sample rejected")
                        }
                    }
                    self.rng = rng;
                }
            }
            Some(Probe::Relay {
                origin, origin_seq, ..
            }) => {
                let ack = Msg::Ack {
                    seq: origin_seq,
                    coord: None,
                }
                .encode();
                self.send(origin, &[ack]);
            }
            None => {}
        }
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_probes(now);
        self.expire_suspicions(now);
        if now >= self.next_probe {
            self.next_probe = now + self.awareness.scale(self.cfg.probe_interval);
            self.probe(now);
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip(now);
        }
        if now >= self.next_push_pull {
            self.next_push_pull = now + self.next_push_pull_delay();
            self.push_pull_random();
        }
        if now >= self.next_reap {
            self.next_reap = now + Duration::from_secs(1);
            self.reap(now);
        }
    }

    fn probe(&mut self, now: Instant) {
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let (addr, suspect) = {
            let n = &self.nodes[&target].member;
            (n.addr, n.state == State::Suspect)
        };
        let seq = self.next_seq();
        let mut msgs = vec![Msg::Ping {
            seq,
            target: target.clone(),
        }
        .encode()];
        if suspect {
            // the buddy system: the suspect hears of its suspicion at once and can refute
            let inc = self.nodes[&target].member.incarnation;
            msgs.push(
                Msg::Suspect(Accuse {
                    incarnation: inc,
                    node: target.clone(),
                    from: self.me.clone(),
                })
                .encode(),
            );
        }
        let timeout = self.awareness.scale(self.cfg.probe_timeout);
        let interval = self.awareness.scale(self.cfg.probe_interval);
        self.probes.insert(
            seq,
            Probe::Direct {
                target,
                sent: now,
                timeout_at: now + timeout,
                end_at: now + interval,
                indirect_sent: false,
                expected_nacks: 0,
                nacks: 0,
            },
        );
        self.send(addr, &msgs);
    }

    fn next_probe_target(&mut self) -> Option<String> {
        for _ in 0..=self.probe_order.len() {
            if self.probe_index >= self.probe_order.len() {
                // a full round: drop reaped names and reshuffle, as memberlist does
                self.probe_order.retain(|n| self.nodes.contains_key(n));
                let mut order = std::mem::take(&mut self.probe_order);
                self.rng.shuffle(&mut order);
                self.probe_order = order;
                self.probe_index = 0;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let name = self.probe_order[self.probe_index].clone();
            self.probe_index += 1;
            if name != self.me
                && self
                    .nodes
                    .get(&name)
                    .is_some_and(|n| n.member.state.is_live())
            {
                return Some(name);
            }
        }
        None
    }

    fn expire_probes(&mut self, now: Instant) {
        let seqs: Vec<u32> = self.probes.keys().copied().collect();
        for seq in seqs {
            match self.probes.get_mut(&seq) {
                Some(Probe::Relay { deadline, .. }) if *deadline <= now => {
                    if let Some(Probe::Relay {
                        origin,
                        origin_seq,
                        nack: true,
                        ..
                    }) = self.probes.remove(&seq)
                    {
                        if self.cfg.lifeguard {
                            let nack = Msg::Nack { seq: origin_seq }.encode();
                            self.send(origin, &[nack]);
                        }
                    }
                }
                Some(Probe::Direct { end_at, .. }) if *end_at <= now => {
                    if let Some(Probe::Direct {
                        target,
                        expected_nacks,
                        nacks,
                        ..
                    }) = self.probes.remove(&seq)
                    {
                        self.probe_failed(now, &target, expected_nacks, nacks);
                    }
                }
                Some(Probe::Direct {
                    timeout_at,
                    indirect_sent,
                    target,
                    ..
                }) if !*indirect_sent && *timeout_at <= now => {
                    *indirect_sent = true;
                    let target = target.clone();
                    let sent = self.send_indirect(seq, &target);
                    if let Some(Probe::Direct { expected_nacks, .. }) = self.probes.get_mut(&seq) {
                        *expected_nacks = sent;
                    }
                }
                _ => {}
            }
        }
    }

    /// Asks up to `indirect_checks` live members to probe `target`; returns how many were asked.
    fn send_indirect(&mut self, seq: u32, target: &str) -> u32 {
        let Some(addr) = self.nodes.get(target).map(|n| n.member.addr) else {
            return 0;
        };
        let mut helpers: Vec<SocketAddr> = self
            .nodes
            .values()
            .filter(|n| {
                n.member.name != self.me
                    && n.member.name != target
                    && n.member.state == State::Alive
            })
            .map(|n| n.member.addr)
            .collect();
        self.rng.shuffle(&mut helpers);
        helpers.truncate(self.cfg.indirect_checks);
        let req = Msg::IndirectPing {
            seq,
            target: target.to_owned(),
            addr,
            nack: self.cfg.lifeguard,
        }
        .encode();
        for h in &helpers {
            self.send(*h, std::slice::from_ref(&req));
        }
        helpers.len() as u32
    }

    fn probe_failed(&mut self, now: Instant, target: &str, expected_nacks: u32, nacks: u32) {
        if self.cfg.lifeguard {
            // missing nacks mean our own links or CPU are the problem, not the target's
            let delta = if expected_nacks > 0 {
                expected_nacks.saturating_sub(nacks)
            } else {
                1
            };
            self.awareness.apply(delta as i32);
        }
        let Some(n) = self.nodes.get(target) else {
            return;
        };
        if !n.member.state.is_live() {
            return;
        }
        let s = Accuse {
            incarnation: n.member.incarnation,
            node: target.to_owned(),
            from: self.me.clone(),
        };
        self.suspect_node(now, s);
    }

    fn expire_suspicions(&mut self, now: Instant) {
        let due: Vec<(String, u32)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(n, s)| (n.clone(), s.incarnation))
            .collect();
        for (node, incarnation) in due {
            self.suspicions.remove(&node);
            tracing::debug!(%node, "suspicion timed out");
            self.dead_node(
                now,
                Accuse {
                    incarnation,
                    node,
                    from: self.me.clone(),
                },
            );
        }
    }

    fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            return;
        }
        let dead_window = self.cfg.gossip_to_the_dead;
        let mut targets: Vec<SocketAddr> = self
            .nodes
            .values()
            .filter(|n| n.member.name != self.me)
            .filter(|n| {
                n.member.state.is_live()
                    || (n.member.state == State::Dead
                        && now.saturating_duration_since(n.changed) < dead_window)
            })
            .map(|n| n.member.addr)
            .collect();
        self.rng.shuffle(&mut targets);
        targets.truncate(self.cfg.gossip_nodes);
        for t in targets {
            self.send(t, &[]);
        }
    }

    fn reap(&mut self, now: Instant) {
        let after = self.cfg.reap_after;
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !n.member.state.is_live() && n.member.name != self.me)
            .filter(|n| now.saturating_duration_since(n.changed) >= after)
            .map(|n| n.member.name.clone())
            .collect();
        for name in gone {
            self.nodes.remove(&name);
            self.coords.remove(&name);
            self.coord.forget_node(&name);
            self.events.push_back(Event::Reaped { name });
        }
    }
}
