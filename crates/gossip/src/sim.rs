//! An in-memory network for many gossip cores in virtual time: per-pair latency, loss,
//! partitions, crashes and restarts, and CPU starvation (a node that processes its inbox late).
//! Everything is driven by one seed, so a failing run reproduces from the seed it prints.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::{Config, Event, Gossip, Rng, Tags};

/// One-way latency between two nodes, by index.
pub type Latency = Box<dyn Fn(usize, usize) -> Duration>;

/// Something that happens to the cluster at a point in a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The process dies: no more timers, nothing delivered.
    Crash(usize),
    /// A crashed node starts again under the same name and joins through `via`.
    Restart {
        node: usize,
        via: usize,
    },
    /// The node stops processing for a while; what arrives meanwhile waits.
    Pause {
        node: usize,
        for_: Duration,
    },
    /// CPU starvation: for `for_`, everything the node receives is processed `delay` late, while
    /// its own timers keep firing (so it sends probes whose acks it reads too late).
    Slow {
        node: usize,
        delay: Duration,
        for_: Duration,
    },
    /// Cuts every link between the two groups.
    Partition(Vec<usize>, Vec<usize>),
    Heal,
    SetLoss(f64),
    Leave(usize),
    UserEvent {
        node: usize,
        name: String,
    },
    SetTags {
        node: usize,
        tags: Tags,
    },
}

/// A scenario written as data: a cluster joins through node 0 and settles for `warmup`, then
/// `steps` happen at their offsets and the run goes on until `run_for` after the warmup.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: usize,
    pub config: Config,
    pub loss: f64,
    pub warmup: Duration,
    pub steps: Vec<(Duration, Action)>,
    pub run_for: Duration,
}

impl Scenario {
    /// Runs the scenario; the returned simulator holds the event log.
    pub fn run(&self, latency: Latency) -> Sim {
        let mut sim = Sim::new(self.config.clone(), self.nodes, latency, self.seed);
        sim.join_all(0);
        sim.run_until(self.warmup);
        sim.loss = self.loss;
        sim.run_scenario(&self.steps, self.run_for);
        sim
    }
}

enum Delivery {
    Datagram {
        to: usize,
        from: SocketAddr,
        data: Vec<u8>,
        late: bool,
    },
    StreamRequest {
        to: usize,
        from: usize,
        data: Vec<u8>,
    },
    StreamReply {
        to: usize,
        from: usize,
        data: Vec<u8>,
    },
}

struct SimNode {
    gossip: Option<Gossip>,
    paused_until: Option<Instant>,
    slow: Option<(Instant, Duration)>,
    timer_gen: u64,
}

/// A recorded event: when, at which node.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub at: Duration,
    pub node: usize,
    pub event: Event,
}

pub struct Sim {
    config: Config,
    start: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    latency: Latency,
    loss: f64,
    cut: HashSet<(usize, usize)>,
    rng: Rng,
    seq: u64,
    deliveries: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Delivery>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    pub log: Vec<Logged>,
    /// Datagrams sent, for cost accounting.
    pub datagrams: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("at", &self.elapsed())
            .finish()
    }
}

pub fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8).into(),
        7946,
    )
}

pub fn name_of(i: usize) -> String {
    format!("n{i}")
}

impl Sim {
    /// `n` nodes that have not joined anyone yet.
    pub fn new(config: Config, n: usize, latency: Latency, seed: u64) -> Self {
        let start = Instant::now();
        let mut sim = Self {
            config,
            start,
            now: start,
            nodes: Vec::with_capacity(n),
            by_addr: HashMap::new(),
            latency,
            loss: 0.0,
            cut: HashSet::new(),
            rng: Rng::new(seed),
            seq: 0,
            deliveries: BinaryHeap::new(),
            pending: HashMap::new(),
            timers: BinaryHeap::new(),
            log: Vec::new(),
            datagrams: 0,
        };
        for i in 0..n {
            sim.by_addr.insert(addr_of(i), i);
            sim.nodes.push(SimNode {
                gossip: None,
                paused_until: None,
                slow: None,
                timer_gen: 0,
            });
            sim.boot(i);
        }
        sim
    }

    fn boot(&mut self, i: usize) {
        let seed = self.rng.next_u64();
        let g = Gossip::new(
            self.config.clone(),
            &name_of(i),
            addr_of(i),
            &Tags::new(),
            seed,
            self.now,
        )
        .expect("simulator config is valid");
        self.nodes[i].gossip = Some(g);
        self.after_touch(i);
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn node(&self, i: usize) -> Option<&Gossip> {
        self.nodes[i].gossip.as_ref()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Has every node except `except` join through node `via`.
    pub fn join_all(&mut self, via: usize) {
        for i in 0..self.nodes.len() {
            if i != via {
                self.with(i, |g| g.join(&[addr_of(via)]));
            }
        }
    }

    /// Runs `f` on a running node and routes what it produced.
    pub fn with<T>(&mut self, i: usize, f: impl FnOnce(&mut Gossip) -> T) -> Option<T> {
        let r = f(self.nodes[i].gossip.as_mut()?);
        self.after_touch(i);
        Some(r)
    }

    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Crash(i) => self.nodes[i].gossip = None,
            Action::Restart { node, via } => {
                self.boot(node);
                self.with(node, |g| g.join(&[addr_of(via)]));
            }
            Action::Pause { node, for_ } => self.nodes[node].paused_until = Some(self.now + for_),
            Action::Slow { node, delay, for_ } => {
                self.nodes[node].slow = Some((self.now + for_, delay))
            }
            Action::Partition(a, b) => {
                for &x in &a {
                    for &y in &b {
                        self.cut.insert((x.min(y), x.max(y)));
                    }
                }
            }
            Action::Heal => self.cut.clear(),
            Action::SetLoss(l) => self.loss = l,
            Action::Leave(i) => {
                let now = self.now;
                self.with(i, |g| g.leave(now));
            }
            Action::UserEvent { node, name } => {
                self.with(node, |g| g.user_event(&name, b"").map(|_| ()));
            }
            Action::SetTags { node, tags } => {
                let now = self.now;
                self.with(node, |g| g.set_tags(now, &tags));
            }
        }
    }

    /// Runs a whole scenario from the current state.
    pub fn run_scenario(&mut self, steps: &[(Duration, Action)], run_for: Duration) {
        let base = self.elapsed();
        let mut steps: Vec<_> = steps.to_vec();
        steps.sort_by_key(|(t, _)| *t);
        for (at, action) in steps {
            self.run_until(base + at);
            self.apply(action);
        }
        self.run_until(base + run_for);
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.pending.insert(self.seq, d);
        self.deliveries.push(Reverse((at, self.seq)));
    }

    /// Moves a node's outputs into the network and re-arms its timer.
    fn after_touch(&mut self, i: usize) {
        let now = self.now;
        let at = self.elapsed();
        let Some(g) = self.nodes[i].gossip.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(t) = g.poll_transmit() {
            sends.push(t);
        }
        let mut streams = Vec::new();
        while let Some(s) = g.poll_stream() {
            streams.push(s);
        }
        while let Some(e) = g.poll_event() {
            self.log.push(Logged {
                at,
                node: i,
                event: e,
            });
        }
        let deadline = g.poll_timeout();
        for t in sends {
            self.datagrams += 1;
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            if !self.linked(i, to) || (self.loss > 0.0 && self.rng.unit() < self.loss) {
                continue;
            }
            let when = now + (self.latency)(i, to);
            self.schedule(
                when,
                Delivery::Datagram {
                    to,
                    from: addr_of(i),
                    data: t.data,
                    late: false,
                },
            );
        }
        for s in streams {
            let Some(&to) = self.by_addr.get(&s.to) else {
                continue;
            };
            if !self.linked(i, to) {
                continue;
            }
            let when = now + (self.latency)(i, to);
            self.schedule(
                when,
                Delivery::StreamRequest {
                    to,
                    from: i,
                    data: s.data,
                },
            );
        }
        self.nodes[i].timer_gen += 1;
        let gen = self.nodes[i].timer_gen;
        self.timers.push(Reverse((deadline.max(now), i, gen)));
    }

    /// Advances virtual time to `elapsed` from the start, processing everything due on the way.
    pub fn run_until(&mut self, elapsed: Duration) {
        let end = self.start + elapsed;
        loop {
            let next_delivery = self.deliveries.peek().map(|r| r.0 .0);
            let next_timer = self.timers.peek().map(|r| r.0 .0);
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_delivery == Some(next) {
                let Reverse((_, id)) = self.deliveries.pop().expect("peeked");
                let d = self.pending.remove(&id).expect("scheduled");
                self.deliver(d);
            } else {
                let Reverse((_, i, gen)) = self.timers.pop().expect("peeked");
                if gen != self.nodes[i].timer_gen {
                    continue;
                }
                if let Some(until) = self.paused_until(i) {
                    self.nodes[i].timer_gen += 1;
                    let gen = self.nodes[i].timer_gen;
                    self.timers.push(Reverse((until, i, gen)));
                    continue;
                }
                let now = self.now;
                self.with(i, |g| g.handle_timeout(now));
            }
        }
        self.now = self.now.max(end);
    }

    fn paused_until(&mut self, i: usize) -> Option<Instant> {
        match self.nodes[i].paused_until {
            Some(t) if t > self.now => Some(t),
            Some(_) => {
                self.nodes[i].paused_until = None;
                None
            }
            None => None,
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let to = match &d {
            Delivery::Datagram { to, .. }
            | Delivery::StreamRequest { to, .. }
            | Delivery::StreamReply { to, .. } => *to,
        };
        if self.nodes[to].gossip.is_none() {
            return;
        }
        if let Some(until) = self.paused_until(to) {
            // a paused process reads its queue late, in order
            self.schedule(until, d);
            return;
        }
        let now = self.now;
        if let Delivery::Datagram {
            to,
            from,
            data,
            late: false,
        } = d
        {
            match self.nodes[to].slow {
                Some((until, delay)) if until > now => {
                    self.schedule(
                        now + delay,
                        Delivery::Datagram {
                            to,
                            from,
                            data,
                            late: true,
                        },
                    );
                    return;
                }
                _ => {
                    self.deliver(Delivery::Datagram {
                        to,
                        from,
                        data,
                        late: true,
                    });
                    return;
                }
            }
        }
        match d {
            Delivery::Datagram { to, from, data, .. } => {
                self.with(to, |g| {
                    if let Err(e) = g.handle_datagram(now, from, &data) {
                        tracing::debug!(error = %e, "sim: bad datagram");
                    }
                });
            }
            Delivery::StreamRequest { to, from, data } => {
                let reply = self
                    .with(to, |g| g.handle_stream(now, addr_of(from), &data).ok())
                    .flatten();
                if let Some(reply) = reply {
                    if self.linked(to, from) {
                        let when = now + (self.latency)(to, from);
                        self.schedule(
                            when,
                            Delivery::StreamReply {
                                to: from,
                                from: to,
                                data: reply,
                            },
                        );
                    }
                }
            }
            Delivery::StreamReply { to, from, data } => {
                self.with(to, |g| {
                    g.handle_stream_reply(now, addr_of(from), &data).ok()
                });
            }
        }
    }

    /// How many running nodes see exactly the running set as alive.
    pub fn converged(&self) -> bool {
        let running: HashSet<String> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].gossip.is_some())
            .map(name_of)
            .collect();
        self.nodes
            .iter()
            .filter_map(|n| n.gossip.as_ref())
            .all(|g| {
                let alive: HashSet<String> = g
                    .members()
                    .filter(|m| m.state == crate::State::Alive)
                    .map(|m| m.name.clone())
                    .collect();
                alive == running
            })
    }
}
