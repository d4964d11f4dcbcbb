//! Protocol timing and sizes, with named profiles.

use std::time::Duration;

/// Named settings. `lan` and `wan` carry memberlist's numbers (`DefaultLANConfig`,
/// `DefaultWANConfig`); `fleet` is tuned for a cross-continent mesh (see ARCHITECTURE.md for the
/// simulator runs behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Lan,
    Wan,
    Fleet,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lan" => Ok(Self::Lan),
            "wan" => Ok(Self::Wan),
            "fleet" => Ok(Self::Fleet),
            other => Err(format!(
                "unknown gossip profile `{other}`; accepted: lan, wan, fleet"
            )),
        }
    }
}

/// Everything the core's timing depends on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between failure probes (scaled up by local health awareness).
    pub probe_interval: Duration,
    /// How long a direct probe waits for an ack before asking others (scaled likewise).
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly when a direct probe fails.
    pub indirect_checks: usize,
    /// Suspicion lasts at least `suspicion_mult × max(1, log10 N) × probe_interval`.
    pub suspicion_mult: u32,
    /// ...and at most this many times that minimum (Lifeguard).
    pub suspicion_max_timeout_mult: u32,
    /// A broadcast is sent `retransmit_mult × ceil(log10(N + 1))` times.
    pub retransmit_mult: u32,
    /// Time between gossip rounds, and members gossiped to per round.
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    /// How long dead members still get gossip (helps partitions heal).
    pub gossip_to_the_dead: Duration,
    /// Time between full state syncs with one random member (scaled up past 32 members).
    pub push_pull_interval: Duration,
    /// Upper bound of the local health score (0 = healthy).
    pub awareness_max: u32,
    /// How long dead and left members stay as tombstones before they are reaped.
    pub reap_after: Duration,
    /// Largest datagram the core emits, in bytes (1232 fits the overlay's IPv6 MTU of 1280).
    pub max_packet: usize,
    /// Turns Lifeguard off (fixed suspicion timeout, no awareness, no nacks): for comparisons.
    pub lifeguard: bool,
}

impl Config {
    pub fn profile(p: Profile) -> Self {
        match p {
            Profile::Lan => Self {
                probe_interval: Duration::from_secs(1),
                probe_timeout: Duration::from_millis(500),
                indirect_checks: 3,
                suspicion_mult: 4,
                suspicion_max_timeout_mult: 6,
                retransmit_mult: 4,
                gossip_interval: Duration::from_millis(200),
                gossip_nodes: 3,
                gossip_to_the_dead: Duration::from_secs(30),
                push_pull_interval: Duration::from_secs(30),
                awareness_max: 8,
                reap_after: Duration::from_secs(3600),
                max_packet: 1232,
                lifeguard: true,
            },
            Profile::Wan => Self {
                probe_interval: Duration::from_secs(5),
                probe_timeout: Duration::from_secs(3),
                suspicion_mult: 6,
                gossip_interval: Duration::from_millis(500),
                gossip_nodes: 4,
                gossip_to_the_dead: Duration::from_secs(60),
                push_pull_interval: Duration::from_secs(60),
                ..Self::profile(Profile::Lan)
            },
            // chosen with examples/fleet-detect-bench.rs (20-region matrix, 1% loss, CPU stalls,
            // seeds 1..=20): the fastest of the grid with no healthy node declared failed; the
            // old 2 s / 1 s / 4 took 17.6 s to detect a crash there, this 10.3 s. 800 ms covers
            // the worst measured RTT (~410 ms) twice; a late indirect ack only costs a refuted
            // suspicion
            Profile::Fleet => Self {
                probe_interval: Duration::from_millis(1500),
                probe_timeout: Duration::from_millis(800),
                suspicion_mult: 3,
                gossip_interval: Duration::from_millis(250),
                gossip_nodes: 4,
                gossip_to_the_dead: Duration::from_secs(60),
                push_pull_interval: Duration::from_secs(30),
                ..Self::profile(Profile::Lan)
            },
        }
    }

    /// Checks the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.probe_timeout >= self.probe_interval {
            return Err(format!(
                "probe_timeout ({:?}) must be shorter than probe_interval ({:?}) to leave time for indirect probes",
                self.probe_timeout, self.probe_interval
            ));
        }
        if self.max_packet < 512 || self.max_packet > 65_000 {
            return Err(format!(
                "max_packet is {} bytes; accepted is 512 to 65000",
                self.max_packet
            ));
        }
        if self.gossip_nodes == 0 || self.suspicion_mult == 0 || self.retransmit_mult == 0 {
            return Err(
                "gossip_nodes, suspicion_mult and retransmit_mult must be at least 1".into(),
            );
        }
        Ok(())
    }
}
