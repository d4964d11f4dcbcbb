//! The report: one schema for JSON, the CLI table, HAR 1.2, HTML and the dashboard.
//!
//! Times are milliseconds, relative to the run's navigation start unless a field says otherwise.
//! A phase that did not happen is `None` (HAR's `-1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, Viewport};

/// Bumped on any change a reader must know about. 2: `NavTiming.ttfb_ms` became `wait_ms`, so
/// that `ttfb_ms` means one thing everywhere (navigation start to first byte).
pub const SCHEMA_VERSION: u32 = 2;

/// How the median run is chosen (WebPageTest's rule).
pub const MEDIAN_RULE: &str =
    "median by load time: the middle run of those that loaded, ordered by load event time; \
with an even count, the faster of the two middle runs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub job: JobSpec,
    /// Unix time in milliseconds when the job started.
    pub started_unix_ms: u64,
    pub region: String,
    pub node: String,
    pub browser_version: String,
    pub user_agent: String,
    pub runs: Vec<Run>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunView {
    Cold,
    Warm,
}

/// One page load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Run {
    /// 1-based run number; a cold/warm pair shares it.
    pub index: u8,
    pub view: Option<RunView>,
    pub started_unix_ms: u64,
    pub url: String,
    pub final_url: String,
    /// Main-document HTTP status (0 if none arrived).
    pub status: u16,
    pub redirects: Vec<Redirect>,
    pub viewport: Option<Viewport>,
    pub timing: NavTiming,
    pub first_paint_ms: Option<f64>,
    pub first_contentful_paint_ms: Option<f64>,
    pub lcp: Option<Lcp>,
    /// Cumulative Layout Shift with session windows (max 5 s, 1 s gap), excluding shifts right
    /// after input.
    pub cls: f64,
    pub tbt: TbtWindow,
    pub long_tasks: Vec<LongTask>,
    /// The waterfall, in request start order.
    pub requests: Vec<Request>,
    pub console_errors: Vec<ConsoleEntry>,
    pub exceptions: Vec<ConsoleEntry>,
    /// A TLS failure of the main document (certificate errors are never ignored).
    pub certificate_error: Option<String>,
    /// `Performance.getMetrics` at the end of the run.
    pub metrics: BTreeMap<String, f64>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub from: String,
    pub to: String,
    pub status: u16,
}

/// Navigation Timing Level 2 phases of the main document, in ms.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NavTiming {
    pub redirect_ms: f64,
    pub dns_ms: f64,
    pub connect_ms: f64,
    pub tls_ms: Option<f64>,
    /// Request start to first response byte: the server's think time plus one RTT (HAR's
    /// `wait`). Not TTFB: that is `response_start_ms`.
    // schema 1 called this `ttfb_ms`; stored reports of that version still read
    #[serde(alias = "ttfb_ms")]
    pub wait_ms: f64,
    /// Navigation start to first response byte, redirects, DNS, connect and TLS included: the
    /// TTFB (WebPageTest's definition), and what the summary's `ttfb_ms` stat is made of.
    pub response_start_ms: f64,
    pub download_ms: f64,
    pub dom_content_loaded_ms: Option<f64>,
    pub load_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lcp {
    pub time_ms: f64,
    /// Tag name and id/class, e.g. `img#hero`.
    pub element: String,
    pub url: Option<String>,
    pub size: f64,
}

/// Total Blocking Time and the window it was measured over (Lighthouse: FCP to TTI; here FCP to
/// the end of the run, stated explicitly).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TbtWindow {
    pub ms: f64,
    pub from_ms: f64,
    pub to_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongTask {
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// A request of the waterfall, with HAR 1.2 timing phases.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    pub url: String,
    pub method: String,
    /// 0 when no response arrived.
    pub status: u16,
    pub mime: String,
    pub resource_type: String,
    pub protocol: Option<String>,
    pub remote_ip: Option<String>,
    pub initiator: Option<String>,
    pub priority: Option<String>,
    pub from_cache: bool,
    /// Start relative to navigation start.
    pub start_ms: f64,
    pub timings: HarTimings,
    /// Bytes on the wire (headers and encoded body).
    pub encoded_bytes: u64,
    /// Decoded body bytes.
    pub body_bytes: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// HAR 1.2 phases in ms; `None` where a phase does not apply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HarTimings {
    pub blocked: Option<f64>,
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub ssl: Option<f64>,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleEntry {
    pub text: String,
    pub url: Option<String>,
}

/// min / p50 / p90 / max of one metric across runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Position in `runs` of the median run.
    pub median_run: usize,
    pub rule: String,
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
