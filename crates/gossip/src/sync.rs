//! Push-pull: the full-state exchange a node makes when it joins, soon after joining, and
//! periodically (memberlist's pushPull with Serf's reconnect to a failed member).

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{Gossip, StreamRequest};
use crate::member::State;
use crate::wire::{self, PushPull};

impl Gossip {
    /// Syncs with one random alive member, and (like Serf's reconnect) tries one random failed
    /// member, which is how a healed partition finds its other half.
    pub(crate) fn push_pull_random(&mut self) {
        for state in [State::Alive, State::Dead] {
            let peers: Vec<SocketAddr> = self
                .nodes
                .values()
                .filter(|n| n.member.name != self.me && n.member.state == state)
                .map(|n| n.member.addr)
                .collect();
            if peers.is_empty() {
                continue;
            }
            let to = peers[self.rng.below(peers.len())];
            let data = self.push_pull_state(false).encode();
            self.streams.push_back(StreamRequest {
                to,
                data,
                join: false,
            });
        }
    }

    /// Time to the next push-pull: the early syncs after a join first, then the periodic interval.
    pub(crate) fn next_push_pull_delay(&mut self) -> Duration {
        if self.join_syncs_left > 0 {
            let done = JOIN_SYNCS - self.join_syncs_left;
            self.join_syncs_left -= 1;
            if self.join_syncs_left > 0 {
                return self.cfg.probe_interval * (2 << done);
            }
        }
        push_pull_scale(self.cfg.push_pull_interval, self.live_n())
    }

    pub(crate) fn push_pull_state(&self, join: bool) -> PushPull {
        PushPull {
            join,
            event_ltime: self.event_clock,
            events: self
                .seen_events
                .iter()
                .map(|(ltime, name, payload)| wire::UserEvent {
                    ltime: *ltime,
                    name: name.clone(),
                    payload: payload.clone(),
                })
                .collect(),
            members: self
                .nodes
                .values()
                .map(|n| wire::PushMember {
                    name: n.member.name.clone(),
                    addr: n.member.addr,
                    incarnation: n.member.incarnation,
                    state: n.member.state,
                    tags: n.tags_raw.clone(),
                })
                .collect(),
        }
    }
}

/// Push-pulls a node makes soon after it joined, `probe_interval` × 1, 2, 4 apart, before the
/// periodic ones. When many nodes join at once, a member whose alive broadcast some node missed
/// (lost, or dropped from a full receive buffer) would otherwise stay unknown there until the
/// next periodic push-pull, 30 to 60 s later; each early sync copies a random member's table,
/// which by then holds nearly everyone, and re-broadcasts what it adds.
pub(crate) const JOIN_SYNCS: u32 = 3;

/// memberlist's `pushPullScale`: past 32 members, sync less often as the cluster grows.
fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: usize = 32;
    if n <= THRESHOLD {
        return interval;
    }
    let mult = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() + 1.0;
    interval.mul_f64(mult)
}
