//! Bookkeeping on a load's recorded status: its targets (one per region) and ids.

use vantage_proto::api::{LoadState, LoadStatus, TargetStatus};

/// A region's target, queued, with the placement's note if it runs elsewhere.
pub fn target(region: &str, note: Option<String>) -> TargetStatus {
    TargetStatus {
        region: region.into(),
        state: LoadState::Queued,
        attempts: Vec::new(),
        note,
        report_id: None,
        failure: None,
    }
}

/// The target of `region`.
pub fn target_of<'a>(s: &'a LoadStatus, region: &str) -> Option<&'a TargetStatus> {
    s.targets.iter().find(|t| t.region == region)
}

/// The target of `region`, added if the load had none; touching it makes it running.
pub fn target_mut<'a>(s: &'a mut LoadStatus, region: &str) -> &'a mut TargetStatus {
    if let Some(i) = s.targets.iter().position(|t| t.region == region) {
        let t = &mut s.targets[i];
        if t.state == LoadState::Queued {
            t.state = LoadState::Running;
        }
        return t;
    }
    s.targets.push(target(region, None));
    s.targets.last_mut().expect("just pushed")
}

/// A load id: `ld_` and 16 hex digits from the OS's random source.
pub fn new_id() -> String {
    let n = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    format!("ld_{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::api::LoadRequest;

    #[test]
    fn a_target_is_found_or_added_and_starts_running_when_touched() {
        let mut s = LoadStatus {
            id: new_id(),
            state: LoadState::Queued,
            created_unix_ms: 0,
            finished_unix_ms: None,
            request: LoadRequest::new("http://example.com/"),
            targets: vec![target("sin", None)],
            failure: None,
            reports: vec![],
        };
        assert!(s.id.starts_with("ld_") && s.id.len() == 19, "{}", s.id);
        assert_eq!(target_mut(&mut s, "sin").state, LoadState::Running);
        target_mut(&mut s, "ams");
        assert_eq!(s.targets.len(), 2);
        assert!(target_of(&s, "ams").is_some() && target_of(&s, "iad").is_none());
    }
}
