//! The tag keys every member carries, and their well-known values. Gossip tags are the only
//! thing a member says about itself; this module is the one place their names are spelled.

/// What a member is: `agent` or `controller`. Informational: authority comes from keys.
pub const ROLE: &str = "role";
/// Region code (sin, ams, …).
pub const REGION: &str = "region";
/// Machine id (Fly machine id, or the member name).
pub const MACHINE: &str = "machine";
/// WireGuard public key, base64.
pub const WG: &str = "wg";
/// Underlay endpoint others should send to, `host:port`.
pub const EP: &str = "ep";
/// Software version.
pub const VERSION: &str = "version";
/// Browser state: `starting`, `ready`, `restarting`, `failed` or `none`.
pub const BROWSER: &str = "browser";
/// Jobs admitted over capacity, `active/capacity`.
pub const JOBS: &str = "jobs";
/// Jobs that may run at once.
pub const CAPACITY: &str = "capacity";
/// Chromium's version string.
pub const CHROMIUM: &str = "chromium";

/// The `role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Controller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Controller => "controller",
        }
    }

    pub fn of(tags: &vantage_gossip::Tags) -> Option<Role> {
        match tags.get(ROLE).map(String::as_str) {
            Some("agent") => Some(Role::Agent),
            Some("controller") => Some(Role::Controller),
            _ => None,
        }
    }
}

/// The `browser` value of a browser that takes jobs.
pub const BROWSER_READY: &str = "ready";

/// Parses a `jobs` tag (`active/capacity`).
pub fn parse_jobs(v: &str) -> Option<(usize, usize)> {
    let (a, c) = v.split_once('/')?;
    Some((a.parse().ok()?, c.parse().ok()?))
}

/// Overlay ports, the same on every member.
pub mod ports {
    /// Gossip, UDP and TCP.
    pub const GOSSIP: u16 = 7946;
    /// The agent's job API, TCP.
    pub const JOBS: u16 = 7947;
    /// The agent's CDP gateway, TCP.
    pub const CDP: u16 = 9222;
    /// The controller's HTTP API on the overlay, TCP (for stock WireGuard clients of the mesh).
    pub const API: u16 = 8080;
    /// Underlay WireGuard UDP.
    pub const UNDERLAY: u16 = 51820;
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_tag_round_trips() {
        assert_eq!(super::parse_jobs("1/2"), Some((1, 2)));
        assert_eq!(super::parse_jobs("x/2"), None);
        assert_eq!(super::parse_jobs("3"), None);
    }
}
