//! Vivaldi network coordinates, as Serf computes them.
//!
//! This follows HashiCorp Serf's `coordinate` package: Vivaldi (Dabek et al., "Vivaldi: A
//! decentralized network coordinate system", SIGCOMM 2004) with a non-Euclidean height, gravity
//! towards the origin and a per-peer moving-median latency filter (Ledlie, Gardner and Seltzer,
//! "Network Coordinates in the Wild", NSDI 2007), and an adjustment term averaged over a window
//! of recent observations (Lee et al., "On suitability of Euclidean embedding for host-based
//! network coordinate systems", IEEE/ACM ToN 2010).
//!
//! All quantities are seconds as `f64` internally, like Serf, so the arithmetic matches it; the
//! public surface speaks [`Duration`] where a value is a time.
//!
//! The core is sans-IO: randomness (only needed when two coordinates coincide) is passed in as a
//! closure returning uniform values in `[0, 1)`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Below this, two positions count as the same point and an RTT counts as zero (seconds).
///
/// Serf uses the same threshold for both: it keeps `wrongness` finite for tiny RTTs and avoids
/// dividing by a vanishing distance when picking a direction.
const ZERO_THRESHOLD: f64 = 1.0e-6;

/// Observations longer than this are not RTTs but stalls, and would fling the coordinate away.
const MAX_RTT: Duration = Duration::from_secs(10);

/// Tuning parameters of the coordinate algorithm; `Default` gives Serf's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinateConfig {
    /// Number of Euclidean dimensions, plus the height which is always present. Serf picked 8
    /// after Ledlie et al.; accuracy stops improving beyond about 7. Must be at least 1.
    pub dimensionality: usize,
    /// Error (dimensionless, relative) of a node that has made no observation yet, and the
    /// ceiling the error is clamped to.
    pub vivaldi_error_max: f64,
    /// Dimensionless factor bounding how much one observation may change the error estimate.
    pub vivaldi_ce: f64,
    /// Dimensionless factor bounding how much one observation may move the coordinate.
    pub vivaldi_cc: f64,
    /// Number of observations averaged into the adjustment term; 0 disables the adjustment.
    pub adjustment_window_size: usize,
    /// Smallest height, in seconds. Heights must stay positive, so this adds a little error;
    /// keep it small next to real RTTs.
    pub height_min: f64,
    /// Number of RTT samples per peer whose median is used, to ride out blips. Must be at least 1.
    pub latency_filter_size: usize,
    /// Gravity strength, in seconds: a coordinate at distance `d` from the origin is pulled back
    /// by `(d / gravity_rho)^2` each update, which counters drift of the whole system.
    pub gravity_rho: f64,
}

impl Default for CoordinateConfig {
    fn default() -> Self {
        Self {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// Why a coordinate operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordinateError {
    /// The configuration cannot work (a zero dimensionality or latency filter size).
    #[error("invalid coordinate config: {0}")]
    InvalidConfig(&'static str),
    /// The RTT is zero or longer than 10 s.
    #[error("round trip time {rtt:?} is not in (0, 10s]")]
    RttOutOfRange {
        /// The rejected observation.
        rtt: Duration,
    },
    /// The other coordinate has a different number of dimensions than ours.
    #[error("coordinate dimensionality mismatch: ours is {ours}, theirs is {theirs}")]
    DimensionalityMismatch {
        /// Our dimensionality.
        ours: usize,
        /// The other coordinate's dimensionality.
        theirs: usize,
    },
    /// The coordinate has a NaN or infinite component.
    #[error("coordinate has a non-finite component")]
    InvalidCoordinate,
}

/// A position in the Vivaldi space. All fields except `error` are seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinate {
    /// Euclidean part (seconds).
    pub(crate) vec: Vec<f64>,
    /// Confidence in this coordinate: relative error, dimensionless.
    pub(crate) error: f64,
    /// Offset added to distances, learned from the window of recent observations (seconds).
    pub(crate) adjustment: f64,
    /// Non-Euclidean distance to the core, modelling the access link (seconds).
    pub(crate) height: f64,
}

impl Coordinate {
    /// A coordinate at the origin with maximal error and minimal height.
    pub fn new(config: &CoordinateConfig) -> Self {
        Self {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Builds a coordinate from its parts, as a decoder does. Nothing is checked here; `Client`
    /// checks validity and dimensionality wherever a coordinate enters it.
    pub fn from_parts(vec: Vec<f64>, error: f64, adjustment: f64, height: f64) -> Self {
        Self {
            vec,
            error,
            adjustment,
            height,
        }
    }

    /// The Euclidean part, in seconds.
    pub fn vec(&self) -> &[f64] {
        &self.vec
    }

    /// The relative error estimate (dimensionless).
    pub fn error(&self) -> f64 {
        self.error
    }

    /// The adjustment term, in seconds.
    pub fn adjustment(&self) -> f64 {
        self.adjustment
    }

    /// The height, in seconds.
    pub fn height(&self) -> f64 {
        self.height
    }

    /// Whether every component is finite.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Whether `other` has the same dimensionality, so the two can be combined.
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// Vivaldi distance in seconds (Euclidean distance plus both heights), without adjustments.
    ///
    /// # Panics
    ///
    /// If the dimensionalities differ, like Serf; check [`Self::is_compatible_with`] first.
    pub fn raw_distance_to(&self, other: &Coordinate) -> f64 {
        assert_compatible(self, other);
        // Heights are summed first so that a→b and b→a round identically.
        magnitude_of_difference(&self.vec, &other.vec) + (self.height + other.height)
    }

    /// Estimated RTT to `other`: the raw distance plus both adjustments, unless the adjustments
    /// would make it zero or negative, in which case the raw distance is used alone.
    ///
    /// # Panics
    ///
    /// If the dimensionalities differ, like Serf; check [`Self::is_compatible_with`] first.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        secs_to_duration(self.distance_secs(other))
    }

    pub(crate) fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance_to(other);
        // Adjustments are summed first so that a→b and b→a round identically.
        let adjusted = raw + (self.adjustment + other.adjustment);
        if adjusted > 0.0 {
            adjusted
        } else {
            raw
        }
    }

    /// The coordinate after pushing it by `force` seconds away from `other` (towards it when
    /// `force` is negative). The height moves in proportion, never below `height_min`.
    ///
    /// `random` must return uniform values in `[0, 1)`; it is only called when the two
    /// positions coincide and a direction has to be made up.
    ///
    /// # Panics
    ///
    /// If the dimensionalities differ, like Serf; check [`Self::is_compatible_with`] first.
    pub fn apply_force(
        &self,
        config: &CoordinateConfig,
        force: f64,
        other: &Coordinate,
        random: &mut impl FnMut() -> f64,
    ) -> Coordinate {
        assert_compatible(self, other);
        let mut ret = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, random);
        for (v, u) in ret.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        // A made-up direction says nothing about how the heights share the distance.
        if mag > ZERO_THRESHOLD {
            ret.height = (ret.height + other.height) * force / mag + ret.height;
            ret.height = ret.height.max(config.height_min);
        }
        ret
    }
}

/// Estimated RTT between two nodes from their coordinates alone.
///
/// # Panics
///
/// If the dimensionalities differ; check [`Coordinate::is_compatible_with`] first.
pub fn estimate_rtt(a: &Coordinate, b: &Coordinate) -> Duration {
    a.distance_to(b)
}

/// Counters of unusual events in a [`Client`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// How often the coordinate became NaN or infinite and was reset to the origin.
    pub resets: u64,
}

/// One node's view: its own coordinate, updated from RTT observations of peers.
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    /// A fresh coordinate at the origin, the anchor gravity pulls towards.
    origin: Coordinate,
    config: CoordinateConfig,
    /// Next slot of `adjustment_samples` to overwrite.
    adjustment_index: usize,
    /// Ring of `rtt - raw distance` over the last `adjustment_window_size` observations.
    adjustment_samples: Vec<f64>,
    /// The last `latency_filter_size` RTTs (seconds) per peer, oldest first.
    latency_filter_samples: HashMap<String, VecDeque<f64>>,
    stats: ClientStats,
}

impl Client {
    /// A client at the origin. Fails if the config has a zero dimensionality or filter size.
    pub fn new(config: CoordinateConfig) -> Result<Self, CoordinateError> {
        if config.dimensionality == 0 {
            return Err(CoordinateError::InvalidConfig(
                "dimensionality must be at least 1",
            ));
        }
        if config.latency_filter_size == 0 {
            return Err(CoordinateError::InvalidConfig(
                "latency filter size must be at least 1",
            ));
        }
        Ok(Self {
            coord: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_index: 0,
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            latency_filter_samples: HashMap::new(),
            stats: ClientStats::default(),
            config,
        })
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &CoordinateConfig {
        &self.config
    }

    /// A copy of the current coordinate.
    pub fn get_coordinate(&self) -> Coordinate {
        self.coord.clone()
    }

    /// Forces the coordinate to a known state, e.g. one persisted across restarts.
    pub fn set_coordinate(&mut self, coord: &Coordinate) -> Result<(), CoordinateError> {
        self.check_coordinate(coord)?;
        self.coord = coord.clone();
        Ok(())
    }

    /// Drops the latency samples kept for `node`, e.g. when it leaves.
    pub fn forget_node(&mut self, node: &str) {
        self.latency_filter_samples.remove(node);
    }

    /// A copy of the counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Estimated RTT from this node to the node at `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Result<Duration, CoordinateError> {
        self.check_coordinate(other)?;
        Ok(self.coord.distance_to(other))
    }

    /// Takes one RTT observation to `node`, whose coordinate is `other`, and returns our updated
    /// coordinate.
    ///
    /// `random` must return uniform values in `[0, 1)`; it is only called when positions
    /// coincide (always at first, when everyone sits at the origin).
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
        random: &mut impl FnMut() -> f64,
    ) -> Result<Coordinate, CoordinateError> {
        self.check_coordinate(other)?;
        if rtt.is_zero() || rtt > MAX_RTT {
            return Err(CoordinateError::RttOutOfRange { rtt });
        }

        let rtt_secs = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt_secs, random);
        self.update_adjustment(other, rtt_secs);
        self.update_gravity(random);
        // Serf's defence against a poisoned state: starting over beats spreading NaN to peers,
        // who would otherwise reject every coordinate we send.
        if !self.coord.is_valid() {
            self.stats.resets += 1;
            tracing::warn!(
                resets = self.stats.resets,
                "vivaldi coordinate became non-finite, reset to the origin"
            );
            self.coord = Coordinate::new(&self.config);
            // Unlike Serf, also drop the adjustment window: the poisoned sample would otherwise
            // make each of the next `adjustment_window_size` updates non-finite and reset again.
            self.adjustment_samples.iter_mut().for_each(|s| *s = 0.0);
            self.adjustment_index = 0;
        }
        Ok(self.coord.clone())
    }

    fn check_coordinate(&self, coord: &Coordinate) -> Result<(), CoordinateError> {
        if !self.coord.is_compatible_with(coord) {
            return Err(CoordinateError::DimensionalityMismatch {
                ours: self.coord.vec.len(),
                theirs: coord.vec.len(),
            });
        }
        if !coord.is_valid() {
            return Err(CoordinateError::InvalidCoordinate);
        }
        Ok(())
    }

    /// Moving median over the last few samples of `node`; returns the filtered RTT in seconds.
    fn latency_filter(&mut self, node: &str, rtt_secs: f64) -> f64 {
        let size = self.config.latency_filter_size;
        let samples = match self.latency_filter_samples.get_mut(node) {
            Some(samples) => samples,
            None => self
                .latency_filter_samples
                .entry(node.to_owned())
                .or_insert_with(|| VecDeque::with_capacity(size + 1)),
        };
        samples.push_back(rtt_secs);
        while samples.len() > size {
            samples.pop_front();
        }
        let mut sorted: Vec<f64> = samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        // The upper median for even sizes, as Serf takes it.
        sorted[sorted.len() / 2]
    }

    /// The Vivaldi step: move along the spring to `other` by an amount weighted by how much we
    /// trust ourselves relative to it, and update our error estimate.
    fn update_vivaldi(
        &mut self,
        other: &Coordinate,
        rtt_secs: f64,
        random: &mut impl FnMut() -> f64,
    ) {
        let dist = self.coord.distance_secs(other);
        let rtt_secs = rtt_secs.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt_secs).abs() / rtt_secs;

        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;

        let ce = self.config.vivaldi_ce;
        self.coord.error = ce * weight * wrongness + self.coord.error * (1.0 - ce * weight);
        if self.coord.error > self.config.vivaldi_error_max {
            self.coord.error = self.config.vivaldi_error_max;
        }

        let delta = self.config.vivaldi_cc * weight;
        let force = delta * (rtt_secs - dist);
        self.coord = self.coord.apply_force(&self.config, force, other, random);
    }

    /// Records how far off the raw distance is and sets the adjustment to half the window mean
    /// (half, because both ends of a distance add their own adjustment).
    fn update_adjustment(&mut self, other: &Coordinate, rtt_secs: f64) {
        let window = self.config.adjustment_window_size;
        if window == 0 {
            return;
        }
        // The raw distance, because the adjustment is what this sample is used to estimate.
        let dist = self.coord.raw_distance_to(other);
        self.adjustment_samples[self.adjustment_index] = rtt_secs - dist;
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    /// A weak pull towards the origin, so the system as a whole does not drift away over time.
    fn update_gravity(&mut self, random: &mut impl FnMut() -> f64) {
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        self.coord = self
            .coord
            .apply_force(&self.config, force, &self.origin, random);
    }
}

fn assert_compatible(a: &Coordinate, b: &Coordinate) {
    assert!(
        a.is_compatible_with(b),
        "coordinate dimensionality mismatch: {} vs {}",
        a.vec.len(),
        b.vec.len()
    );
}

fn magnitude_of_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Unit vector pointing from `from` to `at`, and the distance between them. When they coincide
/// the direction is random and the distance reported is 0.
fn unit_vector_at(at: &[f64], from: &[f64], random: &mut impl FnMut() -> f64) -> (Vec<f64>, f64) {
    let mut ret: Vec<f64> = at.iter().zip(from).map(|(a, f)| a - f).collect();
    let mag = norm(&ret);
    if mag > ZERO_THRESHOLD {
        scale(&mut ret, 1.0 / mag);
        return (ret, mag);
    }

    // Any direction will do to push apart two nodes that sit on the same spot.
    ret.iter_mut().for_each(|v| *v = random() - 0.5);
    let mag = norm(&ret);
    if mag > ZERO_THRESHOLD {
        scale(&mut ret, 1.0 / mag);
        return (ret, 0.0);
    }

    // Only reachable with a degenerate random source.
    ret.iter_mut().for_each(|v| *v = 0.0);
    ret[0] = 1.0;
    (ret, 0.0)
}

fn scale(v: &mut [f64], factor: f64) {
    v.iter_mut().for_each(|x| *x *= factor);
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Seconds to a `Duration`, saturating: non-positive or NaN gives zero, too large gives `MAX`.
fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_2d() -> CoordinateConfig {
        CoordinateConfig {
            dimensionality: 2,
            ..CoordinateConfig::default()
        }
    }

    /// A fixed sequence is enough here: these tests never depend on the direction chosen.
    fn not_random() -> impl FnMut() -> f64 {
        let mut x = 0.1;
        move || {
            x = (x + 0.37) % 1.0;
            x
        }
    }

    fn peer_at(vec: Vec<f64>) -> Coordinate {
        Coordinate::from_parts(vec, 1.5, 0.0, 10.0e-6)
    }

    #[test]
    fn default_config_is_serfs() {
        let serf = CoordinateConfig {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        };
        assert_eq!(CoordinateConfig::default(), serf);
    }

    #[test]
    fn new_coordinate_sits_at_the_origin() {
        let c = Coordinate::new(&CoordinateConfig::default());
        let mut client = Client::new(CoordinateConfig::default()).unwrap();
        assert_eq!(client.get_coordinate(), c);
        let elsewhere = Coordinate::from_parts(vec![0.1; 8], 0.5, 0.01, 0.02);
        client.set_coordinate(&elsewhere).unwrap();
        assert_eq!(client.get_coordinate(), elsewhere);
        let parts = (c.vec(), c.error(), c.adjustment(), c.height());
        assert_eq!(parts, (&[0.0; 8][..], 1.5, 0.0, 10.0e-6));
    }

    #[test]
    fn rejects_bad_config() {
        let zero_dims = CoordinateConfig {
            dimensionality: 0,
            ..CoordinateConfig::default()
        };
        assert!(matches!(
            Client::new(zero_dims),
            Err(CoordinateError::InvalidConfig(_))
        ));
        let zero_filter = CoordinateConfig {
            latency_filter_size: 0,
            ..CoordinateConfig::default()
        };
        assert!(matches!(
            Client::new(zero_filter),
            Err(CoordinateError::InvalidConfig(_))
        ));
    }

    #[test]
    fn rejects_rtt_out_of_range() {
        let mut client = Client::new(config_2d()).unwrap();
        let other = peer_at(vec![0.01, 0.0]);
        let before = client.get_coordinate();
        for rtt in [Duration::ZERO, MAX_RTT + Duration::from_nanos(1)] {
            let err = client
                .update("peer", &other, rtt, &mut not_random())
                .unwrap_err();
            assert_eq!(err, CoordinateError::RttOutOfRange { rtt });
        }
        // A refused observation must not feed the filter or move the coordinate.
        assert_eq!(client.get_coordinate(), before);
        assert!(client.latency_filter_samples.is_empty());
        assert!(client
            .update("peer", &other, MAX_RTT, &mut not_random())
            .is_ok());
        let err = CoordinateError::RttOutOfRange { rtt: MAX_RTT * 2 };
        assert_eq!(err.to_string(), "round trip time 20s is not in (0, 10s]");
    }

    #[test]
    fn rejects_dimensionality_mismatch() {
        let mut client = Client::new(config_2d()).unwrap();
        let other = Coordinate::new(&CoordinateConfig::default());
        let expected = CoordinateError::DimensionalityMismatch { ours: 2, theirs: 8 };
        let rtt = Duration::from_millis(10);
        assert_eq!(
            client.update("peer", &other, rtt, &mut not_random()),
            Err(expected.clone())
        );
        assert_eq!(client.set_coordinate(&other), Err(expected.clone()));
        assert_eq!(client.distance_to(&other), Err(expected));
        assert!(!client.get_coordinate().is_compatible_with(&other));
    }

    #[test]
    fn rejects_non_finite_coordinates() {
        let mut client = Client::new(config_2d()).unwrap();
        let rtt = Duration::from_millis(10);
        for bad in [
            peer_at(vec![f64::NAN, 0.0]),
            Coordinate::from_parts(vec![0.0, 0.0], f64::INFINITY, 0.0, 1e-5),
            Coordinate::from_parts(vec![0.0, 0.0], 1.5, f64::NAN, 1e-5),
            Coordinate::from_parts(vec![0.0, 0.0], 1.5, 0.0, f64::NEG_INFINITY),
        ] {
            assert!(!bad.is_valid());
            assert_eq!(
                client.update("peer", &bad, rtt, &mut not_random()),
                Err(CoordinateError::InvalidCoordinate)
            );
            assert_eq!(
                client.set_coordinate(&bad),
                Err(CoordinateError::InvalidCoordinate)
            );
        }
    }

    #[test]
    fn latency_filter_takes_the_median_of_the_last_three() {
        let mut client = Client::new(config_2d()).unwrap();
        assert_eq!(client.latency_filter("a", 0.010), 0.010);
        // Upper median of two.
        assert_eq!(client.latency_filter("a", 0.030), 0.030);
        assert_eq!(client.latency_filter("a", 0.020), 0.020);
        // A spike is ignored; the oldest sample (10 ms) falls out of the window.
        assert_eq!(client.latency_filter("a", 1.000), 0.030);
        assert_eq!(client.latency_filter("a", 0.025), 0.025);
        // While in the window, the spike is never the median.
        assert_eq!(client.latency_filter("a", 0.021), 0.025);
        assert_eq!(client.latency_filter("a", 0.022), 0.022);
        assert_eq!(client.latency_filter_samples["a"].len(), 3);

        // Peers are filtered independently.
        assert_eq!(client.latency_filter("b", 0.500), 0.500);

        client.forget_node("a");
        assert!(!client.latency_filter_samples.contains_key("a"));
        assert_eq!(client.latency_filter("a", 0.007), 0.007);
    }

    #[test]
    fn update_uses_the_filtered_rtt() {
        // Two clients, same history except for one spike: the filter must hide the spike.
        let other = peer_at(vec![0.0, 0.0]);
        let mut plain = Client::new(config_2d()).unwrap();
        let mut spiky = Client::new(config_2d()).unwrap();
        let ms = Duration::from_millis;
        for rtt in [ms(10), ms(10)] {
            plain.update("p", &other, rtt, &mut not_random()).unwrap();
            spiky.update("p", &other, rtt, &mut not_random()).unwrap();
        }
        let mut r = not_random();
        let a = plain.update("p", &other, ms(10), &mut r).unwrap();
        let b = spiky
            .update("p", &other, ms(900), &mut not_random())
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn resets_on_nan() {
        let mut client = Client::new(config_2d()).unwrap();
        client.coord.vec[0] = f64::NAN;
        assert_eq!(client.stats().resets, 0);
        let other = peer_at(vec![0.01, 0.0]);
        let coord = client
            .update("peer", &other, Duration::from_millis(10), &mut not_random())
            .unwrap();
        assert_eq!(client.stats(), ClientStats { resets: 1 });
        assert_eq!(coord, Coordinate::new(&config_2d()));
        assert_eq!(client.get_coordinate(), coord);

        // A healthy update afterwards does not count.
        client
            .update("peer", &other, Duration::from_millis(10), &mut not_random())
            .unwrap();
        assert_eq!(client.stats().resets, 1);
        assert!(client.get_coordinate().is_valid());
    }

    #[test]
    fn estimate_rtt_is_symmetric() {
        let a = Coordinate::from_parts(vec![0.013, -0.0021, 0.7], 0.3, 0.0017, 0.0042);
        let b = Coordinate::from_parts(vec![-0.05, 0.011, 0.0003], 0.9, -0.0009, 0.0131);
        assert_eq!(estimate_rtt(&a, &b), estimate_rtt(&b, &a));
        assert_eq!(
            a.raw_distance_to(&b).to_bits(),
            b.raw_distance_to(&a).to_bits()
        );
        let expected = ((0.063f64.powi(2) + 0.0131f64.powi(2) + 0.6997f64.powi(2)).sqrt()
            + 0.0042
            + 0.0131
            + 0.0017
            - 0.0009)
            * 1e9;
        let got = estimate_rtt(&a, &b).as_nanos() as f64;
        assert!(
            (got - expected).abs() < 2.0,
            "got {got} ns, expected {expected} ns"
        );
    }

    #[test]
    fn distance_ignores_adjustments_that_would_make_it_non_positive() {
        let a = Coordinate::from_parts(vec![0.0, 0.0], 1.0, -0.5, 0.001);
        let b = Coordinate::from_parts(vec![0.003, 0.004], 1.0, -0.5, 0.001);
        assert!((a.raw_distance_to(&b) - 0.007).abs() < 1e-12);
        let d = a.distance_to(&b).as_secs_f64();
        assert!((d - 0.007).abs() < 1e-9, "{d}");

        let c = Coordinate::from_parts(vec![0.0, 0.0], 1.0, 0.002, 0.001);
        let e = Coordinate::from_parts(vec![0.003, 0.004], 1.0, 0.0005, 0.001);
        let d = c.distance_to(&e).as_secs_f64();
        assert!((d - 0.0095).abs() < 1e-9, "{d}");
    }

    #[test]
    fn apply_force_moves_along_the_line_and_scales_height() {
        let config = config_2d();
        let origin = Coordinate::from_parts(vec![0.0, 0.0], 1.0, 0.0, 0.001);
        let at = Coordinate::from_parts(vec![0.003, 0.004], 1.0, 0.0, 0.001);
        let pushed = at.apply_force(&config, 0.005, &origin, &mut not_random());
        assert!((pushed.vec[0] - 0.006).abs() < 1e-12);
        assert!((pushed.vec[1] - 0.008).abs() < 1e-12);
        // Height grows by force * (h1 + h2) / distance.
        assert!((pushed.height - (0.001 + 0.005 * 0.002 / 0.005)).abs() < 1e-12);

        // Pulled hard towards the origin, the height is clamped at the minimum.
        let pulled = at.apply_force(&config, -0.004, &origin, &mut not_random());
        assert_eq!(pulled.height, config.height_min);
    }

    #[test]
    fn coincident_coordinates_are_pushed_apart_in_a_random_direction() {
        let config = config_2d();
        let here = Coordinate::new(&config);
        let mut draws = [0.9, 0.5].into_iter();
        let mut random = || draws.next().unwrap();
        let pushed = here.apply_force(&config, 0.01, &here, &mut random);
        // The direction (0.4, 0.0) normalised; the height is left alone.
        assert!((pushed.vec[0] - 0.01).abs() < 1e-15);
        assert_eq!(pushed.vec[1], 0.0);
        assert_eq!(pushed.height, here.height);

        // A degenerate random source falls back to the first axis.
        let pushed = here.apply_force(&config, 0.01, &here, &mut || 0.5);
        assert_eq!(pushed.vec, vec![0.01, 0.0]);
    }

    #[test]
    fn two_nodes_converge_to_their_rtt() {
        let mut a = Client::new(config_2d()).unwrap();
        let mut b = Client::new(config_2d()).unwrap();
        let rtt = Duration::from_millis(40);
        let mut random = not_random();
        for _ in 0..200 {
            let cb = b.get_coordinate();
            a.update("b", &cb, rtt, &mut random).unwrap();
            let ca = a.get_coordinate();
            b.update("a", &ca, rtt, &mut random).unwrap();
        }
        let est = a.distance_to(&b.get_coordinate()).unwrap().as_secs_f64();
        assert!((est - 0.040).abs() < 0.0004, "estimate {est} s");
        assert!(a.get_coordinate().error() < 0.05);
    }

    #[test]
    fn one_update_matches_serfs_arithmetic() {
        let config = config_2d();
        let mut client = Client::new(config.clone()).unwrap();
        let me = Coordinate::from_parts(vec![0.01, 0.0], 1.0, 0.0, 0.001);
        client.set_coordinate(&me).unwrap();
        let other = Coordinate::from_parts(vec![0.01, 0.03], 0.5, 0.002, 0.002);
        let rtt = Duration::from_millis(50);
        let c = client.update("o", &other, rtt, &mut not_random()).unwrap();

        // Vivaldi: the estimate 0.030 + 0.003 heights + 0.002 adjustment = 35 ms is short of
        // 50 ms, so we are pushed straight away from `other`, down the y axis.
        let (weight, wrongness) = (1.0 / 1.5, 0.015 / 0.05);
        let error = 0.25 * weight * wrongness + 1.0 * (1.0 - 0.25 * weight);
        let force = 0.25 * weight * 0.015;
        let (x, y) = (0.01, -force);
        let height = (0.001 + 0.002) * force / 0.03 + 0.001;
        // Adjustment: half the mean of a window holding one sample, rtt - raw distance.
        let adjustment = (0.05 - ((0.03 + force) + height + 0.002)) / 40.0;
        // Gravity: pulled towards the origin by (distance / rho)^2.
        let norm = f64::hypot(x, y);
        let pull = ((norm + height + config.height_min + adjustment) / 150.0).powi(2);
        let expected = [x - pull * x / norm, y - pull * y / norm];
        let height = height - (height + config.height_min) * pull / norm;

        let got = [c.error, c.vec[0], c.vec[1], c.height, c.adjustment];
        let want = [error, expected[0], expected[1], height, adjustment];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-13, "got {got:?}, expected {want:?}");
        }
    }
}
