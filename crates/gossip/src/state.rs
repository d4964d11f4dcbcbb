//! How news changes the member table: alive, suspect and dead messages, refutation, push-pull
//! merges and user events (memberlist's `state.go`: aliveNode, suspectNode, deadNode,
//! mergeState; Serf's Lamport-ordered user events).

use std::net::SocketAddr;
use std::time::Instant;

use crate::core::{Event, Gossip, Node};
use crate::health::{suspicion_min, Suspicion};
use crate::member::{decode_tags, Member, State};
use crate::wire::{self, Accuse, Alive, Msg, PushPull};
use crate::GossipError;

impl Gossip {
    pub(crate) fn alive_node(&mut self, now: Instant, a: Alive) {
        if a.node == self.me {
            self.alive_about_me(a);
            return;
        }
        let Some(tags) = decode_tags(&a.tags) else {
            tracing::debug!(node = %a.node, "alive message with malformed tags dropped");
            return;
        };
        let (was, fresh, changed_meta, since) = match self.nodes.get_mut(&a.node) {
            None => (State::Dead, true, false, now),
            // a member only moves with a strictly newer incarnation
            Some(n) if a.incarnation <= n.member.incarnation => return,
            // memberlist's name conflict: a live member keeps its address; only a dead or left
            // one may come back somewhere else. Said once per claim, not per retransmission.
            Some(n) if n.member.addr != a.addr && n.member.state.is_live() => {
                let repeated = n
                    .refused
                    .is_some_and(|(addr, inc)| addr == a.addr && a.incarnation <= inc);
                if !repeated {
                    n.refused = Some((a.addr, a.incarnation));
                    self.events.push_back(Event::Conflict {
                        name: a.node,
                        addr: n.member.addr,
                        claimed: a.addr,
                    });
                }
                return;
            }
            Some(n) => (
                n.member.state,
                false,
                n.tags_raw != a.tags || n.member.addr != a.addr,
                n.changed,
            ),
        };
        self.suspicions.remove(&a.node);
        if fresh {
            self.add_to_probe_order(&a.node);
        }
        let member = Member {
            name: a.node.clone(),
            addr: a.addr,
            incarnation: a.incarnation,
            state: State::Alive,
            tags,
        };
        let changed = if was == State::Alive { since } else { now };
        self.nodes.insert(
            a.node.clone(),
            Node {
                member: member.clone(),
                tags_raw: a.tags.clone(),
                changed,
                refused: None,
            },
        );
        let node = a.node.clone();
        self.broadcasts.push(&node, Msg::Alive(a).encode());
        if fresh || matches!(was, State::Dead | State::Left) {
            self.events.push_back(Event::Joined(member));
        } else if changed_meta {
            self.events.push_back(Event::Updated(member));
        }
    }

    /// Someone spread news of us that is not ours: out-bid it.
    fn alive_about_me(&mut self, a: Alive) {
        let mine = &self.nodes[&self.me];
        let differs = a.addr != self.addr || a.tags != mine.tags_raw;
        if a.incarnation > self.incarnation || (a.incarnation == self.incarnation && differs) {
            self.refute(a.incarnation);
        }
    }

    pub(crate) fn refute(&mut self, accused: u32) {
        if self.leaving {
            return;
        }
        self.incarnation = self.incarnation.max(accused) + 1;
        if self.cfg.lifeguard {
            // being suspected is a sign that we are the slow one
            self.awareness.apply(1);
        }
        let inc = self.incarnation;
        if let Some(n) = self.nodes.get_mut(&self.me) {
            n.member.incarnation = inc;
            n.member.state = State::Alive;
        }
        self.broadcast_alive_self();
    }

    pub(crate) fn suspect_node(&mut self, now: Instant, s: Accuse) {
        let Some(n) = self.nodes.get(&s.node) else {
            return;
        };
        if s.incarnation < n.member.incarnation {
            return;
        }
        if let Some(susp) = self.suspicions.get_mut(&s.node) {
            if susp.confirm(&s.from) {
                let node = s.node.clone();
                self.broadcasts.push(&node, Msg::Suspect(s).encode());
            }
            return;
        }
        if n.member.state != State::Alive {
            return;
        }
        if s.node == self.me {
            self.refute(s.incarnation);
            return;
        }
        let n_live = self.live_n();
        let (k, min, max) = if self.cfg.lifeguard {
            let k = self.cfg.suspicion_mult.saturating_sub(2);
            let k = if (n_live as u32).saturating_sub(2) < k {
                0
            } else {
                k
            };
            let min = suspicion_min(self.cfg.suspicion_mult, n_live, self.cfg.probe_interval);
            (k, min, min * self.cfg.suspicion_max_timeout_mult)
        } else {
            let min = suspicion_min(self.cfg.suspicion_mult, n_live, self.cfg.probe_interval);
            (0, min, min)
        };
        let node = s.node.clone();
        if let Some(n) = self.nodes.get_mut(&node) {
            n.member.incarnation = s.incarnation;
            n.member.state = State::Suspect;
            n.changed = now;
        }
        self.suspicions.insert(
            node.clone(),
            Suspicion::new(now, &s.from, s.incarnation, k, min, max),
        );
        self.broadcasts.push(&node, Msg::Suspect(s).encode());
        self.events.push_back(Event::Suspect { name: node });
    }

    pub(crate) fn dead_node(&mut self, now: Instant, d: Accuse) {
        let Some(n) = self.nodes.get(&d.node) else {
            return;
        };
        if d.incarnation < n.member.incarnation {
            return;
        }
        self.suspicions.remove(&d.node);
        if !n.member.state.is_live() {
            return;
        }
        if d.node == self.me {
            if !self.leaving {
                self.refute(d.incarnation);
            }
            return;
        }
        let left = d.from == d.node;
        let node = d.node.clone();
        if let Some(n) = self.nodes.get_mut(&node) {
            n.member.incarnation = d.incarnation;
            n.member.state = if left { State::Left } else { State::Dead };
            n.changed = now;
        }
        self.broadcasts.push(&node, Msg::Dead(d).encode());
        self.events.push_back(if left {
            Event::Left { name: node }
        } else {
            Event::Failed { name: node }
        });
    }

    /// Answers an incoming full-state exchange with our own state, then merges theirs.
    pub fn handle_stream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<Vec<u8>, GossipError> {
        let remote = PushPull::decode(data)?;
        tracing::trace!(%from, members = remote.members.len(), join = remote.join, "push-pull in");
        let join = remote.join;
        // merge first, so a refutation it provokes is already in the reply
        self.merge(now, remote);
        // the reply to a join says so, which tells the joiner where the cluster's past ends
        Ok(self.push_pull_state(join).encode())
    }

    /// Merges the reply to a [`crate::StreamRequest`] this node made to `from`.
    pub fn handle_stream_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), GossipError> {
        let remote = PushPull::decode(data)?;
        if remote.join {
            self.event_min_time = self.event_min_time.max(remote.event_ltime + 1);
            // the first of the early syncs after joining (see `JOIN_SYNCS`)
            self.join_syncs_left = crate::sync::JOIN_SYNCS;
            self.next_push_pull = now + self.cfg.probe_interval;
        }
        let before = self.incarnation;
        self.merge(now, remote);
        if self.incarnation != before {
            // they think we are dead (a healed partition): tell them at once that we are not,
            // since our gossip will not reach members we still count as dead
            let data = self.push_pull_state(false).encode();
            self.streams.push_back(crate::StreamRequest {
                to: from,
                data,
                join: false,
            });
        }
        Ok(())
    }

    fn merge(&mut self, now: Instant, remote: PushPull) {
        self.witness(remote.event_ltime);
        for e in remote.events {
            self.handle_user_event(e);
        }
        for m in remote.members {
            match m.state {
                State::Alive => {
                    let a = Alive {
                        incarnation: m.incarnation,
                        node: m.name,
                        addr: m.addr,
                        tags: m.tags,
                    };
                    self.alive_node(now, a);
                }
                State::Left => {
                    let d = Accuse {
                        incarnation: m.incarnation,
                        node: m.name.clone(),
                        from: m.name,
                    };
                    self.dead_node(now, d);
                }
                // a remote verdict of death is only a suspicion here until we time it out ourselves
                State::Dead | State::Suspect => {
                    if !self.nodes.contains_key(&m.name) && m.name != self.me {
                        continue;
                    }
                    let s = Accuse {
                        incarnation: m.incarnation,
                        node: m.name,
                        from: self.me.clone(),
                    };
                    self.suspect_node(now, s);
                }
            }
        }
    }

    fn witness(&mut self, ltime: u64) {
        if ltime >= self.event_clock {
            self.event_clock = ltime + 1;
        }
    }

    pub(crate) fn record_event(&mut self, ltime: u64, name: &str, payload: &[u8]) {
        self.seen_events
            .push_back((ltime, name.to_owned(), payload.to_vec()));
        while self.seen_events.len() as u64 > crate::core::EVENT_BUFFER_LEN {
            self.seen_events.pop_front();
        }
    }

    pub(crate) fn handle_user_event(&mut self, e: wire::UserEvent) {
        self.witness(e.ltime);
        let oldest = self
            .event_clock
            .saturating_sub(crate::core::EVENT_BUFFER_LEN);
        if e.ltime < oldest || e.ltime < self.event_min_time {
            return;
        }
        if self
            .seen_events
            .iter()
            .any(|(t, n, p)| *t == e.ltime && *n == e.name && *p == e.payload)
        {
            return;
        }
        self.record_event(e.ltime, &e.name, &e.payload);
        self.events.push_back(Event::User {
            ltime: e.ltime,
            name: e.name.clone(),
            payload: e.payload.clone(),
        });
        let subject = format!("\u{0}event:{}:{}", e.ltime, e.name);
        self.broadcasts.push(&subject, Msg::User(e).encode());
    }
}
