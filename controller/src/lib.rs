//! `vantage`: the user's binary as a library. `serve` is the controller (a mesh member with
//! role=controller: placement, job orchestration, the SQLite store and the HTTP API); `cli` is
//! what a user types (`load`, `members`, `rtt`, `reports`, `connect`) against a controller;
//! `demo` runs a whole fleet on this machine behind the WAN emulator.

pub mod cli;
pub mod demo;
pub mod serve;
