//! Counters for `/metrics`, in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vantage_proto::api::{AttemptOutcome, LoadState};

/// Upper bounds of the dispatch latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default)]
pub struct Metrics {
    submitted: AtomicU64,
    finished: Mutex<BTreeMap<&'static str, u64>>,
    attempts: Mutex<BTreeMap<String, u64>>,
    retries: AtomicU64,
    /// Counts per bucket (not cumulative), then the sum in microseconds and the count.
    dispatch: Mutex<([u64; BUCKETS.len()], u64, u64)>,
}

impl Metrics {
    pub fn load_submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn load_finished(&self, state: LoadState) {
        *self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(state.as_str())
            .or_default() += 1;
    }

    pub fn attempt(&self, outcome: AttemptOutcome) {
        let name = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default() += 1;
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Time from dispatch to the agent's first frame.
    pub fn dispatched(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut h = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            h.0[i] += 1;
        }
        h.1 += d.as_micros() as u64;
        h.2 += 1;
    }

    /// The exposition, with the gauges the caller measured now.
    pub fn render(
        &self,
        loads_by_state: &[(String, u64)],
        members_by_state: &BTreeMap<String, u64>,
    ) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP vantage_loads Loads in the store by state.\n# TYPE vantage_loads gauge"
        );
        for (state, n) in loads_by_state {
            let _ = writeln!(o, "vantage_loads{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP vantage_loads_submitted_total Loads accepted since start.\n# TYPE vantage_loads_submitted_total counter");
        let _ = writeln!(
            o,
            "vantage_loads_submitted_total {}",
            self.submitted.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP vantage_loads_finished_total Loads finished since start, by final state.\n# TYPE vantage_loads_finished_total counter");
        for (state, n) in self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(o, "vantage_loads_finished_total{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP vantage_attempts_total Dispatches to agents since start, by outcome.\n# TYPE vantage_attempts_total counter");
        for (outcome, n) in self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(o, "vantage_attempts_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP vantage_retries_total Attempts retried on another agent.\n# TYPE vantage_retries_total counter");
        let _ = writeln!(
            o,
            "vantage_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP vantage_dispatch_seconds Time from dispatch to the agent's first answer.\n# TYPE vantage_dispatch_seconds histogram");
        let h = *self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(h.0) {
            cumulative += n;
            let _ = writeln!(
                o,
                "vantage_dispatch_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(o, "vantage_dispatch_seconds_bucket{{le=\"+Inf\"}} {}", h.2);
        let _ = writeln!(o, "vantage_dispatch_seconds_sum {}", h.1 as f64 / 1e6);
        let _ = writeln!(o, "vantage_dispatch_seconds_count {}", h.2);
        let _ = writeln!(
            o,
            "# HELP vantage_members Cluster members by state.\n# TYPE vantage_members gauge"
        );
        for (state, n) in members_by_state {
            let _ = writeln!(o, "vantage_members{{state=\"{state}\"}} {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::default();
        m.dispatched(Duration::from_millis(3));
        m.dispatched(Duration::from_millis(200));
        m.dispatched(Duration::from_secs(9));
        m.attempt(AttemptOutcome::AgentLost);
        let text = m.render(&[("done".into(), 2)], &BTreeMap::new());
        assert!(
            text.contains("vantage_dispatch_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vantage_dispatch_seconds_bucket{le=\"0.25\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vantage_dispatch_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("vantage_attempts_total{outcome=\"agent_lost\"} 1"),
            "{text}"
        );
        assert!(text.contains("vantage_loads{state=\"done\"} 2"), "{text}");
    }
}
