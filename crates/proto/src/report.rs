//! The report: one schema for JSON, the CLI table, HAR 1.2, HTML and the dashboard.
//!
//! Times are milliseconds, relative to the run's navigation start unless a field says otherwise.
//! A phase that did not happen is `None` (HAR's `-1`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, Viewport};

/// Bumped on any change a reader must know about, in the report or in what `--json` prints
/// around it (`LoadStatus`, `StoredReport`; their JSON Schemas in `docs/schema/` carry it).
/// 2: `NavTiming.ttfb_ms` became `wait_ms`, so that `ttfb_ms` means one thing everywhere
/// (navigation start to first byte).
pub const SCHEMA_VERSION: u32 = 2;

/// How the median run is chosen (WebPageTest's rule).
pub const MEDIAN_RULE: &str =
    "median by load time: the middle run of those that loaded, ordered by load event time; \
with an even count, the faster of the two middle runs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// One agent's report of a job: every run, and the summary across them. Times are milliseconds,
/// relative to the run's navigation start unless a field says otherwise.
pub struct Report {
    /// The report schema version this report was written in (2 now; 1 named `timing.wait_ms`
    /// `ttfb_ms`).
    pub schema: u32,
    /// The job as the agent ran it.
    pub job: JobSpec,
    /// Unix time in milliseconds when the job started.
    pub started_unix_ms: u64,
    /// The agent's region code, like `sin`.
    pub region: String,
    /// The agent's member name.
    pub node: String,
    /// The browser's `/json/version` `Browser` string, like `Chrome/131.0.6778.85`.
    pub browser_version: String,
    /// The User-Agent the browser sent.
    pub user_agent: String,
    /// The page loads, in the order they ran.
    pub runs: Vec<Run>,
    /// Statistics across the cold runs; null when no run loaded.
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// `cold`: a fresh browser context; `warm`: the previous run's context, caches kept.
pub enum RunView {
    Cold,
    Warm,
}

/// One page load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    /// 1-based run number; a cold/warm pair shares it.
    pub index: u8,
    /// Cold or warm; null in reports that did not record it.
    pub view: Option<RunView>,
    /// Unix time in milliseconds when the run started.
    pub started_unix_ms: u64,
    /// The URL loaded.
    pub url: String,
    /// The main document's URL after redirects.
    pub final_url: String,
    /// Main-document HTTP status (0 if none arrived).
    pub status: u16,
    /// The main document's redirect hops, in order.
    pub redirects: Vec<Redirect>,
    /// The viewport the run used, in CSS pixels.
    pub viewport: Option<Viewport>,
    /// The main document's Navigation Timing phases.
    pub timing: NavTiming,
    /// First Paint, ms from navigation start.
    pub first_paint_ms: Option<f64>,
    /// First Contentful Paint, ms from navigation start.
    pub first_contentful_paint_ms: Option<f64>,
    /// Largest Contentful Paint; null when the page painted no candidate.
    pub lcp: Option<Lcp>,
    /// Cumulative Layout Shift with session windows (max 5 s, 1 s gap), excluding shifts right
    /// after input.
    pub cls: f64,
    /// Total Blocking Time and the window it was measured over.
    pub tbt: TbtWindow,
    /// Main-thread tasks over 50 ms.
    pub long_tasks: Vec<LongTask>,
    /// The waterfall, in request start order.
    pub requests: Vec<Request>,
    /// `console.error` messages.
    pub console_errors: Vec<ConsoleEntry>,
    /// Uncaught exceptions.
    pub exceptions: Vec<ConsoleEntry>,
    /// A TLS failure of the main document (certificate errors are never ignored).
    pub certificate_error: Option<String>,
    /// `Performance.getMetrics` at the end of the run.
    pub metrics: BTreeMap<String, f64>,
    /// The viewport as PNG, base64, when the job asked for a screenshot.
    pub screenshot_png_base64: Option<String>,
    /// The deadline passed; what was captured until then is here.
    pub timed_out: bool,
    /// Why the run failed, if it did (DNS, refused, TLS, crash…).
    pub error: Option<String>,
    /// What was left out to keep the report bounded (entries past a cap, a screenshot that did
    /// not fit), each as a sentence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
/// One redirect hop of the main document.
pub struct Redirect {
    pub from: String,
    pub to: String,
    /// The redirect's HTTP status (301, 302, 307…).
    pub status: u16,
}

/// Navigation Timing Level 2 phases of the main document, in ms.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct NavTiming {
    /// Time spent in redirects.
    pub redirect_ms: f64,
    /// DNS lookup duration.
    pub dns_ms: f64,
    /// TCP connect duration, TLS included (as Navigation Timing counts it).
    pub connect_ms: f64,
    /// TLS handshake duration; null when no TLS handshake was made (http, a reused
    /// connection).
    pub tls_ms: Option<f64>,
    /// Request start to first response byte: the server's think time plus one RTT (HAR's
    /// `wait`). Not TTFB: that is `response_start_ms`. Duration in ms; schema 1 called it
    /// `ttfb_ms`.
    // schema 1 called this `ttfb_ms`; stored reports of that version still read
    #[serde(alias = "ttfb_ms")]
    pub wait_ms: f64,
    /// Navigation start to first response byte, redirects, DNS, connect and TLS included: the
    /// TTFB (WebPageTest's definition), and what the summary's `ttfb_ms` stat is made of.
    pub response_start_ms: f64,
    /// First to last byte of the main document.
    pub download_ms: f64,
    /// `DOMContentLoaded` event start, ms from navigation start.
    pub dom_content_loaded_ms: Option<f64>,
    /// `load` event start, ms from navigation start; null when the page never loaded.
    pub load_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// The Largest Contentful Paint entry the run ended with.
pub struct Lcp {
    /// ms from navigation start.
    pub time_ms: f64,
    /// Tag name and id/class, e.g. `img#hero`.
    pub element: String,
    /// The image's URL, for an image.
    pub url: Option<String>,
    /// Painted area in CSS pixels².
    pub size: f64,
}

/// Total Blocking Time and the window it was measured over (Lighthouse: FCP to TTI; here FCP to
/// the end of the run, stated explicitly).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TbtWindow {
    /// The sum over long tasks in the window of their time past 50 ms.
    pub ms: f64,
    /// Window start (FCP), ms from navigation start.
    pub from_ms: f64,
    /// Window end, ms from navigation start.
    pub to_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// A main-thread task over 50 ms.
pub struct LongTask {
    /// ms from navigation start.
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// A request of the waterfall, with HAR 1.2 timing phases.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Request {
    pub url: String,
    /// HTTP method, like `GET`.
    pub method: String,
    /// 0 when no response arrived.
    pub status: u16,
    /// The response's MIME type.
    pub mime: String,
    /// Chromium's resource type: `Document`, `Script`, `Image`, `Fetch`…
    pub resource_type: String,
    /// `http/1.1`, `h2`, `h3`…, as the browser reported it.
    pub protocol: Option<String>,
    /// The address the browser connected to (for a proxied request, the server the egress guard
    /// reached).
    pub remote_ip: Option<String>,
    /// What started the request: CDP's initiator type (`parser`, `script`, `other`…), then its
    /// URL when it has one.
    pub initiator: Option<String>,
    /// Chromium's priority: `VeryHigh`, `High`, `Medium`, `Low`, `VeryLow`.
    pub priority: Option<String>,
    /// Served from the browser's cache.
    pub from_cache: bool,
    /// Start, ms from navigation start.
    pub start_ms: f64,
    /// HAR 1.2 phases of the request.
    pub timings: HarTimings,
    /// Bytes on the wire (headers and encoded body).
    pub encoded_bytes: u64,
    /// Decoded body bytes.
    pub body_bytes: u64,
    /// Why the request failed (Chromium's `net::ERR_…` text, or the egress guard's refusal).
    pub failed: Option<String>,
    /// HTTP status text of the response (`OK`, `Not Found`); empty when none arrived or HTTP/2+.
    #[serde(default)]
    pub status_text: String,
    /// Request headers as the browser sent them (from `Network.requestWillBeSentExtraInfo` when
    /// Chromium reports it, which includes cookies; otherwise the headers it planned to send).
    /// Empty when not captured; capped per request, the cut said in the run's `omitted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers: Vec<Header>,
    /// Response headers as received (`Network.responseReceivedExtraInfo` when reported, which
    /// includes `set-cookie`; otherwise `Network.responseReceived`'s). Empty when not captured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<Header>,
    /// The request was never finished: no `loadingFinished` or `loadingFailed` arrived before the
    /// run ended, so its receive phase and sizes are what had been seen until then.
    #[serde(default)]
    pub unfinished: bool,
}

/// One HTTP header, name as the browser reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// HAR 1.2 phases in ms; null (HAR's -1) where a phase does not apply. `wait` is the
/// request's request-start-to-first-byte, like `NavTiming.wait_ms`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct HarTimings {
    pub blocked: Option<f64>,
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub ssl: Option<f64>,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
/// A console message or exception.
pub struct ConsoleEntry {
    pub text: String,
    /// The script it came from, when known.
    pub url: Option<String>,
}

/// min / p50 / p90 / max of one metric across runs (nearest-rank percentiles), in the metric's
/// unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// Statistics across the cold runs (all runs when none is cold).
pub struct Summary {
    /// Position in `runs` of the median run.
    pub median_run: usize,
    /// How the median run was chosen, in words (WebPageTest's rule).
    pub rule: String,
    /// By metric, over the runs without an error: `ttfb_ms` (TTFB: navigation start to first
    /// response byte, each run's `timing.response_start_ms`, not its `timing.wait_ms`),
    /// `dom_content_loaded_ms`, `load_ms`, `first_contentful_paint_ms`, `lcp_ms` (all ms from
    /// navigation start), `cls` (unitless), `tbt_ms` (ms) and `requests` (a count). A metric no
    /// run has is left out.
    pub stats: BTreeMap<String, Stats>,
}

impl Summary {
    /// Picks the median run of the cold runs (all runs if none is cold) and computes the stats.
    /// `None` when no run loaded.
    pub fn from_runs(runs: &[Run]) -> Option<Summary> {
        let cold: Vec<usize> = {
            let c: Vec<usize> = (0..runs.len())
                .filter(|&i| runs[i].view != Some(RunView::Warm))
                .collect();
            if c.is_empty() {
                (0..runs.len()).collect()
            } else {
                c
            }
        };
        let mut loaded: Vec<(f64, usize)> = cold
            .iter()
            .filter_map(|&i| runs[i].timing.load_ms.map(|l| (l, i)))
            .collect();
        if loaded.is_empty() {
            return None;
        }
        loaded.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let median_run = loaded[(loaded.len() - 1) / 2].1;
        let mut stats = BTreeMap::new();
        let metrics: [(&str, Metric); 8] = [
            // TTFB as WebPageTest defines it: navigation start to first byte
            ("ttfb_ms", |r| Some(r.timing.response_start_ms)),
            ("dom_content_loaded_ms", |r| r.timing.dom_content_loaded_ms),
            ("load_ms", |r| r.timing.load_ms),
            ("first_contentful_paint_ms", |r| r.first_contentful_paint_ms),
            ("lcp_ms", |r| r.lcp.as_ref().map(|l| l.time_ms)),
            ("cls", |r| Some(r.cls)),
            ("tbt_ms", |r| Some(r.tbt.ms)),
            ("requests", |r| Some(r.requests.len() as f64)),
        ];
        for (name, get) in metrics {
            let mut v: Vec<f64> = cold
                .iter()
                .filter(|&&i| runs[i].error.is_none())
                .filter_map(|&i| get(&runs[i]))
                .collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(f64::total_cmp);
            stats.insert(
                name.to_owned(),
                Stats {
                    min: v[0],
                    p50: nearest_rank(&v, 0.5),
                    p90: nearest_rank(&v, 0.9),
                    max: v[v.len() - 1],
                },
            );
        }
        Some(Summary {
            median_run,
            rule: MEDIAN_RULE.to_owned(),
            stats,
        })
    }
}

/// Reads one metric of a run, if the run has it.
type Metric = fn(&Run) -> Option<f64>;

/// The nearest-rank percentile of sorted values.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(load: Option<f64>, view: RunView) -> Run {
        Run {
            view: Some(view),
            timing: NavTiming {
                load_ms: load,
                ..NavTiming::default()
            },
            ..Run::default()
        }
    }

    #[test]
    fn median_run_follows_webpagetest() {
        let runs = vec![
            run(Some(900.0), RunView::Cold),
            run(Some(100.0), RunView::Warm),
            run(Some(500.0), RunView::Cold),
            run(Some(700.0), RunView::Cold),
            run(None, RunView::Cold),
        ];
        let s = Summary::from_runs(&runs).unwrap();
        assert_eq!(
            s.median_run, 3,
            "middle of 500/700/900 is 700; the warm run does not count"
        );
        let even = vec![
            run(Some(300.0), RunView::Cold),
            run(Some(200.0), RunView::Cold),
        ];
        assert_eq!(
            Summary::from_runs(&even).unwrap().median_run,
            1,
            "the faster of the two middle runs"
        );
        let st = s.stats["load_ms"];
        assert_eq!(
            (st.min, st.p50, st.p90, st.max),
            (500.0, 700.0, 900.0, 900.0)
        );
        assert!(Summary::from_runs(&[run(None, RunView::Cold)]).is_none());
    }

    #[test]
    fn schema_1_timing_reads_as_wait() {
        let mut v = serde_json::to_value(NavTiming::default()).unwrap();
        let o = v.as_object_mut().unwrap();
        assert!(o.contains_key("wait_ms") && !o.contains_key("ttfb_ms"));
        o.remove("wait_ms");
        o.insert("ttfb_ms".into(), 42.0.into());
        let t: NavTiming = serde_json::from_value(v).unwrap();
        assert_eq!(
            t.wait_ms, 42.0,
            "schema 1's run ttfb_ms is request start to first byte"
        );
    }
}
