//! The controller's view of the fleet: one task follows gossip (making every member a mesh
//! peer), polls members and coordinates, and publishes a snapshot that placement and the API
//! read without waiting on gossip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vantage_fleet::tags::{self, Role};
use vantage_fleet::Membership;
use vantage_gossip::coordinate::Coordinate;
use vantage_gossip::{Coordinates, Event, Member, State};

use super::placement::{Candidate, FleetSnapshot};
use super::store::Store;

/// How often the snapshot is refreshed without a membership event (coordinates move).
const REFRESH: Duration = Duration::from_secs(1);
/// How often (in refreshes) the regions' last known positions and the members' endpoints are
/// written to the store.
const PERSIST_EVERY: u32 = 10;

/// What the controller knows of the fleet at one moment.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    pub me: String,
    pub members: Vec<Member>,
    pub coords: Option<Coordinates>,
    /// Placement's input (loads from tags; the orchestrator adds its own in-flight counts).
    pub placement: FleetSnapshot,
}

impl FleetView {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// A member's coordinate (this controller's own included).
    pub fn coordinate(&self, name: &str) -> Option<&Coordinate> {
        let c = self.coords.as_ref()?;
        if name == self.me {
            Some(&c.own)
        } else {
            c.members.get(name)
        }
    }

    /// The estimated RTT between two members, from the coordinates this controller holds.
    /// (Vivaldi's error is no gate here: a same-region peer at 0.5 ms keeps the relative error
    /// high however good the estimates are.)
    pub fn estimated_rtt(&self, a: &str, b: &str) -> Option<Duration> {
        let (ca, cb) = (self.coordinate(a)?, self.coordinate(b)?);
        Some(vantage_gossip::coordinate::estimate_rtt(ca, cb))
    }

    /// Agents alive with a ready browser.
    pub fn healthy_agents(&self) -> impl Iterator<Item = &Candidate> {
        self.placement.agents.iter().filter(|a| a.healthy)
    }
}

/// Whether an agent may take a job now: alive (not suspect, failed or leaving) and its browser
/// ready.
pub fn is_healthy(m: &Member) -> bool {
    m.state == State::Alive
        && m.tags.get(tags::BROWSER).map(String::as_str) == Some(tags::BROWSER_READY)
}

/// Starts the task; it ends when gossip stops.
pub async fn spawn(
    member: Membership,
    mut events: mpsc::UnboundedReceiver<Event>,
    store: Store,
) -> watch::Receiver<Arc<FleetView>> {
    let mut region_coords: BTreeMap<String, Coordinate> = BTreeMap::new();
    match store.region_coords().await {
        Ok(rows) => {
            for (region, text) in rows {
                if let Some(c) = decode_coord(&text) {
                    region_coords.insert(region, c);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the regions' last known positions"),
    }
    let (tx, rx) = watch::channel(Arc::new(FleetView {
        me: member.name.clone(),
        ..FleetView::default()
    }));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => member.follow(&e).await,
                    None => return,
                },
                _ = tick.tick() => ticks += 1,
            }
            let (Ok(members), Ok(coords)) = (
                member.gossip.members().await,
                member.gossip.coordinates().await,
            ) else {
                return;
            };
            let view = build(&member.name, members, coords, &mut region_coords);
            if ticks % PERSIST_EVERY == 1 {
                let peers = view
                    .members
                    .iter()
                    .filter(|m| m.state.is_live() && m.name != view.me)
                    .filter_map(|m| Some((m.name.clone(), m.tags.get(tags::EP)?.clone())))
                    .collect();
                if let Err(e) = store.put_known_peers(peers, super::unix_ms()).await {
                    tracing::warn!(error = %e, "cannot store the members' endpoints");
                }
                let rows = region_coords
                    .iter()
                    .map(|(r, c)| (r.clone(), encode_coord(c)))
                    .collect();
                if let Err(e) = store.put_region_coords(rows, super::unix_ms()).await {
                    tracing::warn!(error = %e, "cannot store the regions' last known positions");
                }
            }
            if tx.send(Arc::new(view)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Builds a snapshot, and remembers where each region's healthy agents are.
fn build(
    me: &str,
    members: Vec<Member>,
    coords: Coordinates,
    region_coords: &mut BTreeMap<String, Coordinate>,
) -> FleetView {
    let mut agents = Vec::new();
    for m in members
        .iter()
        .filter(|m| Role::of(&m.tags) == Some(Role::Agent))
    {
        let Some(region) = m.tags.get(tags::REGION) else {
            continue;
        };
        let (active, capacity) = m
            .tags
            .get(tags::JOBS)
            .and_then(|j| tags::parse_jobs(j))
            .unwrap_or((0, 1));
        let coord = coords.members.get(&m.name).cloned();
        let healthy = is_healthy(m);
        if let (true, Some(c)) = (healthy, &coord) {
            region_coords.insert(region.clone(), c.clone());
        }
        agents.push(Candidate {
            name: m.name.clone(),
            region: region.clone(),
            healthy,
            active,
            capacity,
            coord,
        });
    }
    FleetView {
        me: me.to_owned(),
        placement: FleetSnapshot {
            agents,
            me: Some(coords.own.clone()),
            region_coords: region_coords.clone(),
        },
        members,
        coords: Some(coords),
    }
}

/// `vec…;error;adjustment;height`, the form the store keeps.
fn encode_coord(c: &Coordinate) -> String {
    let v: Vec<String> = c.vec().iter().map(f64::to_string).collect();
    format!(
        "{};{};{};{}",
        v.join(","),
        c.error(),
        c.adjustment(),
        c.height()
    )
}

fn decode_coord(s: &str) -> Option<Coordinate> {
    let mut parts = s.split(';');
    let vec = parts
        .next()?
        .split(',')
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    let mut num = || parts.next()?.parse::<f64>().ok();
    let (error, adjustment, height) = (num()?, num()?, num()?);
    let c = Coordinate::from_parts(vec, error, adjustment, height);
    c.is_valid().then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinate_survives_the_store_encoding() {
        let c = Coordinate::from_parts(
            vec![0.1, -0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-9],
            0.3,
            -0.001,
            1e-5,
        );
        assert_eq!(decode_coord(&encode_coord(&c)), Some(c));
        assert_eq!(decode_coord("x;1;2;3"), None);
    }
}
