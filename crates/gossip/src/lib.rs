//! `vantage-gossip`: cluster membership modelled on HashiCorp memberlist and Serf, sans-IO.
//!
//! The protocol cores take `now`, bytes and randomness as inputs and return datagrams, timers and
//! events; a thin tokio driver does the IO.

pub mod coordinate;
