//! Shared harness for Vantage's process-level tests and benchmarks: network namespaces with veth
//! links, stock `wireguard-go` peers, and the traffic patterns the benchmarks measure.

pub mod cluster;
pub mod live;
pub mod netns;
pub mod origin;
pub mod traffic;
pub mod wggo;
