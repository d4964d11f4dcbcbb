//! Who may use the job API and the CDP gateway. With controller keys configured, a connection is
//! a controller's when its overlay source address is one of theirs: overlay addresses are derived
//! from public keys, and the mesh drops inner packets whose source is not the sending peer's own
//! address, so the address proves the key. Without them, the agent falls back to the gossip tag
//! role=controller, which any member holding the fleet's PSK can claim.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use vantage_mesh::{OverlayPrefix, PublicKey};

use crate::gateway::Roles;

/// The services an [`Authority`] guards, for its refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Jobs,
    Gateway,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Jobs => "the job API",
            Service::Gateway => "the CDP gateway",
        }
    }
}

/// Who counts as a controller.
#[derive(Debug, Clone)]
pub enum Authority {
    /// Members at the overlay addresses of these keys.
    Keys(BTreeSet<Ipv6Addr>),
    /// Members whose gossip tag `role` is `controller`.
    Roles(Roles),
}

impl Authority {
    /// Controllers are the holders of `keys`, at their addresses in `prefix`.
    pub fn keys(prefix: OverlayPrefix, keys: &[PublicKey]) -> Self {
        Authority::Keys(keys.iter().map(|k| prefix.address_of(k)).collect())
    }

    /// Whether the member at `from` may use `service`; if not, why, for the client.
    pub fn check(&self, from: IpAddr, service: Service) -> Result<(), String> {
        match self {
            Authority::Keys(allowed) => {
                let ok = match from {
                    IpAddr::V6(a) => allowed.contains(&a),
                    IpAddr::V4(_) => false,
                };
                if ok {
                    return Ok(());
                }
                Err(format!(
                    "{from} is not a controller of this fleet: {} serves VANTAGE_CONTROLLER_KEYS only",
                    service.name()
                ))
            }
            Authority::Roles(roles) => {
                let role = roles
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&from)
                    .cloned();
                if role.as_deref() == Some(vantage_fleet::tags::Role::Controller.as_str()) {
                    return Ok(());
                }
                Err(format!(
                    "{} serves members with role=controller only; {from} has role {}",
                    service.name(),
                    role.as_deref().unwrap_or("unknown")
                ))
            }
        }
    }
}
