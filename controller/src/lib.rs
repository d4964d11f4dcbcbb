//! `vantage`: the user's binary as a library. `serve` is the controller (a mesh member with
//! role=controller: placement, job orchestration, the SQLite store and the HTTP API); `cli` is
//! what a user types (`load`, `members`, `rtt`, `reports`, `connect`) against a controller;
//! `demo` runs a whole fleet on this machine behind the WAN emulator; `report` turns reports
//! into HAR and HTML.

pub mod cli;
pub mod demo;
pub mod report;
pub mod serve;
