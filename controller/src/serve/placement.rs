//! Placement: which agents run a load, in which order to try them. Pure: it sees a snapshot of
//! the fleet and returns an ordered plan; no clock, no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vantage_gossip::coordinate::{estimate_rtt, Coordinate};
use vantage_proto::api::Placement;

/// An agent as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub region: String,
    /// Alive in gossip, browser ready, not leaving: may take a job now.
    pub healthy: bool,
    /// Jobs running or queued on it (the larger of its tag and the controller's own count).
    pub active: usize,
    pub capacity: usize,
    pub coord: Option<Coordinate>,
}

impl Candidate {
    fn load(&self) -> f64 {
        self.active as f64 / self.capacity.max(1) as f64
    }
}

/// What placement knows of the fleet.
#[derive(Debug, Clone, Default)]
pub struct FleetSnapshot {
    pub agents: Vec<Candidate>,
    /// The controller's own coordinate.
    pub me: Option<Coordinate>,
    /// Where each region's agents were last seen, in coordinates (kept after they fail).
    pub region_coords: BTreeMap<String, Coordinate>,
}

impl FleetSnapshot {
    /// Every region the controller has seen an agent in.
    pub fn known_regions(&self) -> BTreeSet<String> {
        self.agents
            .iter()
            .map(|a| a.region.clone())
            .chain(self.region_coords.keys().cloned())
            .collect()
    }

    fn position_of(&self, region: &str) -> Option<&Coordinate> {
        self.region_coords.get(region).or_else(|| {
            self.agents
                .iter()
                .find(|a| a.region == region)
                .and_then(|a| a.coord.as_ref())
        })
    }
}

/// One region's plan: the agents to try, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The region asked for (for `nearest`, the region of the agent chosen).
    pub region: String,
    /// Names of the agents to try, first choice first.
    pub agents: Vec<String>,
    /// Set when the first choice is outside `region`: why.
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("unknown region `{region}`; known regions: {}", list(.known))]
    UnknownRegion {
        region: String,
        known: BTreeSet<String>,
    },
    #[error("no healthy agent in {region}, and strict placement allows no other region")]
    NoAgentStrict { region: String },
    #[error("no healthy agent in the fleet")]
    NoAgent,
}

fn list(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "none yet (no agent has joined)".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Plans a load. `exclude` names agents that must not be tried again (they died on this load).
pub fn place(
    fleet: &FleetSnapshot,
    from: &Placement,
    strict: bool,
    exclude: &BTreeSet<String>,
) -> Result<Vec<Plan>, PlaceError> {
    let known = fleet.known_regions();
    match from {
        Placement::Regions(regions) => {
            if let Some(r) = regions.iter().find(|r| !known.contains(*r)) {
                return Err(PlaceError::UnknownRegion {
                    region: r.clone(),
                    known,
                });
            }
            regions
                .iter()
                .map(|r| plan_region(fleet, r, strict, exclude))
                .collect()
        }
        Placement::All => {
            let regions: BTreeSet<&str> =
                healthy(fleet, exclude).map(|a| a.region.as_str()).collect();
            if regions.is_empty() {
                return Err(PlaceError::NoAgent);
            }
            regions
                .into_iter()
                .map(|r| plan_region(fleet, r, strict, exclude))
                .collect()
        }
        Placement::Nearest => {
            let me = fleet.me.as_ref();
            let best = healthy(fleet, exclude)
                .min_by(|a, b| {
                    rtt_from(me, a)
                        .cmp(&rtt_from(me, b))
                        .then(a.load().total_cmp(&b.load()))
                        .then(a.name.cmp(&b.name))
                })
                .ok_or(PlaceError::NoAgent)?;
            Ok(vec![plan_region(fleet, &best.region, strict, exclude)?])
        }
    }
}

fn healthy<'a>(
    fleet: &'a FleetSnapshot,
    exclude: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a Candidate> {
    fleet
        .agents
        .iter()
        .filter(|a| a.healthy && !exclude.contains(&a.name))
}

/// Unknown distances sort last.
fn rtt_from(me: Option<&Coordinate>, a: &Candidate) -> Duration {
    match (me, &a.coord) {
        (Some(m), Some(c)) => estimate_rtt(m, c),
        _ => Duration::MAX,
    }
}

/// The agents of `region`, least loaded first; then, unless `strict`, every other healthy agent
/// by estimated distance to where the region's agents were last seen.
fn plan_region(
    fleet: &FleetSnapshot,
    region: &str,
    strict: bool,
    exclude: &BTreeSet<String>,
) -> Result<Plan, PlaceError> {
    let mut local: Vec<&Candidate> = healthy(fleet, exclude)
        .filter(|a| a.region == region)
        .collect();
    local.sort_by(|a, b| a.load().total_cmp(&b.load()).then(a.name.cmp(&b.name)));
    let mut agents: Vec<String> = local.iter().map(|a| a.name.clone()).collect();
    if strict {
        if agents.is_empty() {
            return Err(PlaceError::NoAgentStrict {
                region: region.into(),
            });
        }
        return Ok(Plan {
            region: region.into(),
            agents,
            note: None,
        });
    }
    let pos = fleet.position_of(region);
    let mut others: Vec<(&Candidate, Duration)> = healthy(fleet, exclude)
        .filter(|a| a.region != region)
        .map(|a| {
            let d = match (pos, &a.coord) {
                (Some(p), Some(c)) => estimate_rtt(p, c),
                _ => Duration::MAX,
            };
            (a, d)
        })
        .collect();
    // nearest region first (by its nearest agent), then least loaded within it: a
    // millisecond between two agents of one region must not outweigh their load
    let mut region_dist: BTreeMap<&str, Duration> = BTreeMap::new();
    for (a, d) in &others {
        let e = region_dist.entry(a.region.as_str()).or_insert(*d);
        *e = (*e).min(*d);
    }
    others.sort_by(|(a, _), (b, _)| {
        region_dist[a.region.as_str()]
            .cmp(&region_dist[b.region.as_str()])
            .then(a.region.cmp(&b.region))
            .then(a.load().total_cmp(&b.load()))
            .then(a.name.cmp(&b.name))
    });
    let note = match (agents.is_empty(), others.first()) {
        (true, Some((a, _))) => Some(fallback_note(region, a, region_dist[a.region.as_str()])),
        (true, None) => return Err(PlaceError::NoAgent),
        _ => None,
    };
    agents.extend(others.iter().map(|(a, _)| a.name.clone()));
    Ok(Plan {
        region: region.into(),
        agents,
        note,
    })
}

/// Why a region's job runs elsewhere, in words.
pub fn fallback_note(region: &str, agent: &Candidate, distance: Duration) -> String {
    let how_far = if distance == Duration::MAX {
        "distance unknown".to_owned()
    } else {
        format!(
            "estimated {:.0} ms from {region}",
            distance.as_secs_f64() * 1e3
        )
    };
    format!(
        "no healthy agent in {region}; ran in {} on {}, the nearest healthy agent by network coordinates ({how_far})",
        agent.region, agent.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinate `ms` milliseconds out along the first axis (Vivaldi units are seconds).
    fn at(ms: f64) -> Coordinate {
        let mut v = vec![0.0; 8];
        v[0] = ms / 1e3;
        Coordinate::from_parts(v, 0.1, 0.0, 1e-5)
    }

    fn agent(name: &str, region: &str, pos_ms: f64, active: usize) -> Candidate {
        Candidate {
            name: name.into(),
            region: region.into(),
            healthy: true,
            active,
            capacity: 2,
            coord: Some(at(pos_ms)),
        }
    }

    /// Controller at 0 ms; iad near, ams farther, sin farthest.
    fn fleet() -> FleetSnapshot {
        FleetSnapshot {
            agents: vec![
                agent("sin-1", "sin", 230.0, 0),
                agent("ams-1", "ams", 80.0, 0),
                agent("ams-2", "ams", 81.0, 1),
                agent("iad-1", "iad", 5.0, 0),
            ],
            me: Some(at(0.0)),
            region_coords: BTreeMap::new(),
        }
    }

    fn regions(r: &[&str]) -> Placement {
        Placement::Regions(r.iter().map(|s| s.to_string()).collect())
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_region_runs_on_its_least_loaded_agent_then_the_nearest_others() {
        let mut f = fleet();
        let plan = place(&f, &regions(&["ams"]), false, &none()).unwrap();
        assert_eq!(plan[0].agents, ["ams-1", "ams-2", "iad-1", "sin-1"]);
        assert_eq!(plan[0].note, None);
        f.agents[1].active = 2;
        let plan = place(&f, &regions(&["ams"]), false, &none()).unwrap();
        assert_eq!(plan[0].agents[..2], ["ams-2", "ams-1"], "load-aware");
    }

    #[test]
    fn nearest_is_the_smallest_rtt_from_the_controller_and_all_is_one_plan_per_region() {
        let f = fleet();
        let plan = place(&f, &Placement::Nearest, false, &none()).unwrap();
        assert_eq!((plan.len(), plan[0].agents[0].as_str()), (1, "iad-1"));
        let plan = place(&f, &Placement::All, false, &none()).unwrap();
        let firsts: Vec<_> = plan.iter().map(|p| p.agents[0].as_str()).collect();
        assert_eq!(firsts, ["ams-1", "iad-1", "sin-1"]);
    }

    #[test]
    fn unhealthy_and_excluded_agents_are_never_picked() {
        let mut f = fleet();
        f.agents[3].healthy = false;
        let plan = place(&f, &Placement::Nearest, false, &none()).unwrap();
        assert_eq!(plan[0].agents[0], "ams-1", "iad-1 is not healthy");
        assert!(plan.iter().all(|p| !p.agents.contains(&"iad-1".into())));
        let ex: BTreeSet<String> = ["ams-1".to_string()].into();
        let plan = place(&f, &regions(&["ams"]), false, &ex).unwrap();
        assert_eq!(plan[0].agents, ["ams-2", "sin-1"]);
    }

    #[test]
    fn a_region_without_a_healthy_agent_falls_back_to_the_nearest_to_where_it_was() {
        let mut f = fleet();
        f.agents[0].healthy = false;
        f.region_coords.insert("sin".into(), at(230.0));
        let plan = place(&f, &regions(&["sin"]), false, &none()).unwrap();
        assert_eq!(
            plan[0].agents[0], "ams-1",
            "ams (80) is nearer sin (230) than iad (5)"
        );
        let note = plan[0].note.as_deref().unwrap();
        assert!(
            note.contains("no healthy agent in sin") && note.contains("ams-1"),
            "{note}"
        );
        let e = place(&f, &regions(&["sin"]), true, &none()).unwrap_err();
        assert_eq!(
            e,
            PlaceError::NoAgentStrict {
                region: "sin".into()
            }
        );
        assert!(e.to_string().contains("strict"), "{e}");
    }

    #[test]
    fn an_unknown_region_lists_the_known_ones() {
        let e = place(&fleet(), &regions(&["xyz"]), false, &none()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown region `xyz`; known regions: ams, iad, sin"
        );
        let empty = FleetSnapshot::default();
        assert_eq!(
            place(&empty, &Placement::All, false, &none()).unwrap_err(),
            PlaceError::NoAgent
        );
    }

    #[test]
    fn strict_keeps_retries_in_the_region() {
        let plan = place(&fleet(), &regions(&["ams"]), true, &none()).unwrap();
        assert_eq!(plan[0].agents, ["ams-1", "ams-2"]);
    }
}
