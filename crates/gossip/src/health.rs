//! Lifeguard: suspicion timeouts that shrink with independent confirmations, and local health
//! awareness that stretches this node's own probe timing when it is the slow one. The numbers
//! follow memberlist's `suspicion.go` and `awareness.go`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// `mult × max(1, log10 n) × interval`: memberlist's `suspicionTimeout`.
pub(crate) fn suspicion_min(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    interval.mul_f64(f64::from(mult) * scale)
}

/// A running suspicion of one member.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations that still shorten the timeout.
    k: u32,
    confirmers: HashSet<String>,
    pub(crate) incarnation: u32,
}

impl Suspicion {
    /// `from` is the first accuser; `k` the confirmations expected before the timeout reaches `min`.
    pub(crate) fn new(
        now: Instant,
        from: &str,
        incarnation: u32,
        k: u32,
        min: Duration,
        max: Duration,
    ) -> Self {
        let mut confirmers = HashSet::new();
        confirmers.insert(from.to_owned());
        Self {
            start: now,
            min,
            max,
            k,
            confirmers,
            incarnation,
        }
    }

    /// Counts an independent accuser; returns whether it was new.
    pub(crate) fn confirm(&mut self, from: &str) -> bool {
        if self.confirmations() >= self.k {
            return false;
        }
        self.confirmers.insert(from.to_owned())
    }

    fn confirmations(&self) -> u32 {
        (self.confirmers.len() as u32).saturating_sub(1)
    }

    /// `max − (max − min) × log(c + 1) / log(k + 1)`, never below `min`.
    pub(crate) fn timeout(&self) -> Duration {
        if self.k < 1 {
            return self.min;
        }
        let frac = (f64::from(self.confirmations()) + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let raw = self.max.as_secs_f64() - (self.max.as_secs_f64() - self.min.as_secs_f64()) * frac;
        Duration::from_secs_f64(raw.max(self.min.as_secs_f64()))
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.start + self.timeout()
    }
}

/// Local health: 0 is healthy; each missed nack or refutation adds one, each successful probe
/// takes one off. Timeouts scale by `score + 1`.
#[derive(Debug, Clone)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub(crate) fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    pub(crate) fn apply(&mut self, delta: i32) {
        let s = i64::from(self.score) + i64::from(delta);
        self.score = s.clamp(0, i64::from(self.max.saturating_sub(1))) as u32;
    }

    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_shrinks_from_max_to_min_with_confirmations() {
        let now = Instant::now();
        let min = suspicion_min(4, 100, Duration::from_secs(1));
        assert_eq!(min, Duration::from_secs(8), "4 × log10(100) × 1 s");
        let mut s = Suspicion::new(now, "a", 1, 2, min, min * 6);
        assert_eq!(s.timeout(), Duration::from_secs(48));
        assert!(s.confirm("b"));
        assert!(!s.confirm("b"), "the same accuser counts once");
        let one = s.timeout();
        assert!(one < Duration::from_secs(48) && one > min, "{one:?}");
        assert!(s.confirm("c"));
        assert_eq!(s.timeout(), min);
        assert!(!s.confirm("d"), "confirmations past k do not count");
        assert_eq!(
            suspicion_min(4, 5, Duration::from_secs(1)),
            Duration::from_secs(4),
            "log10 floor of 1"
        );
        let zero_k = Suspicion::new(now, "a", 1, 0, min, min * 6);
        assert_eq!(zero_k.timeout(), min);
    }

    #[test]
    fn awareness_is_bounded_and_scales() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_millis(500)), Duration::from_secs(4));
        a.apply(-3);
        assert_eq!(a.score(), 4);
    }
}
