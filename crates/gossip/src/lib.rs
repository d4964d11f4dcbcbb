//! `vantage-gossip`: cluster membership modelled on HashiCorp memberlist and Serf, sans-IO.
//!
//! [`Gossip`] is the protocol core: it takes `now`, bytes and a seed, and returns datagrams,
//! stream requests, events and its next deadline. It never reads a clock, a socket or a random
//! source of its own. A thin tokio driver does the IO; the simulator drives many cores in
//! virtual time.

mod broadcast;
mod config;
pub mod coordinate;
mod core;
mod driver;
mod health;
mod member;
mod rng;
pub mod sim;
mod state;
mod sync;
pub mod transport;
mod wire;

pub use crate::config::{Config, Profile};
pub use crate::core::{Coordinates, Event, Gossip, StreamRequest, Transmit, MAX_USER_EVENT};
pub use crate::driver::{spawn, DriverError, GossipHandle};
pub use crate::member::{encode_tags, Member, State, Tags, MAX_TAGS};
pub use crate::rng::Rng;
pub use crate::wire::DecodeError;

/// Errors from the gossip core.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("invalid gossip config: {0}")]
    Config(String),
    #[error("node name must be 1 to 255 bytes, got {0}")]
    Name(usize),
    #[error("tags take {0} bytes encoded; the limit is {MAX_TAGS} (and 255 per key or value)")]
    TagsTooLarge(usize),
    #[error(
        "user event takes {0} bytes; the limit is {MAX_USER_EVENT} for name and payload together"
    )]
    EventTooLarge(usize),
    #[error("malformed gossip message: {0}")]
    Decode(#[from] DecodeError),
}
