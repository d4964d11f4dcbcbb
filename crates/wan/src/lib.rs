//! `vantage-wan`: a userspace WAN emulator for running a whole fleet on one machine.
//!
//! Every node keeps its real UDP socket and gets an *advertised endpoint* on the emulator. A
//! datagram that node Y sends to X's advertised endpoint is delivered to X's real socket, from Y's
//! advertised endpoint, after a one-way delay of RTT(Y, X) / 2 from a measured matrix (plus optional
//! jitter and loss, unless the link is cut). Because replies come from the sender's advertised
//! endpoint, WireGuard's endpoint roaming learns the right address.
//!
//! There is no `tc netem` on the machines this runs on, hence userspace.

mod emulator;
mod matrix;

pub use emulator::{LinkStats, Wan, WanConfig, WanError};
pub use matrix::{Matrix, MatrixError};
