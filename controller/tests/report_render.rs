//! Reports made of bad data (failed and blocked requests, a timed-out run, no LCP, a refused
//! navigation, hostile strings, 2000 requests) become valid HAR and HTML that a real headless
//! Chromium opens from a file without a single network request (watched through CDP's Network
//! events) and without running or creating anything the data tried to inject.

mod common;

use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::network::{EnableParams, EventRequestWillBeSent};
use futures_util::StreamExt;
use vantage::report::{har, html};
use vantage_proto::api::{
    Attempt, AttemptOutcome, LoadRequest, LoadState, LoadStatus, StoredReport, TargetStatus,
};
use vantage_proto::{
    HarTimings, Header, JobSpec, Lcp, LongTask, NavTiming, Report, Request, Run, RunView, Summary,
    SCHEMA_VERSION,
};

use common::reports::{artifacts, check_har_timings, chromium, validate_har};

/// What hostile data tries: closing the markup it sits in and running script.
const HOSTILE: &str =
    r#""'><script>window.pwned=1</script><img src=x onerror="window.pwned=2"></title></svg>"#;
/// A 1×1 PNG, the screenshot.
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn request(i: usize, start: f64, failed: Option<&str>) -> Request {
    Request {
        url: format!(
            "https://cdn{}.example.test/asset/{i}.js?v={i}&q=a%20b",
            i % 3
        ),
        method: "GET".into(),
        status: if failed.is_some() { 0 } else { 200 },
        mime: "application/javascript".into(),
        resource_type: ["Script", "Image", "Stylesheet", "Fetch"][i % 4].into(),
        protocol: Some(
            if i.is_multiple_of(2) {
                "h2"
            } else {
                "http/1.1"
            }
            .into(),
        ),
        remote_ip: Some("192.0.2.7".into()),
        initiator: Some("parser".into()),
        priority: Some("High".into()),
        from_cache: false,
        start_ms: start,
        timings: HarTimings {
            blocked: Some(1.5),
            dns: i.is_multiple_of(5).then_some(4.0),
            connect: i.is_multiple_of(5).then_some(20.0),
            ssl: i.is_multiple_of(5).then_some(12.0),
            send: 0.2,
            wait: 30.0 + (i % 7) as f64,
            receive: if failed.is_some() { 0.0 } else { 5.0 },
        },
        encoded_bytes: 1000 + i as u64,
        body_bytes: 3000 + i as u64,
        failed: failed.map(str::to_owned),
        status_text: if failed.is_some() { "" } else { "OK" }.into(),
        request_headers: vec![
            Header {
                name: "cookie".into(),
                value: "sid=abc; theme=dark".into(),
            },
            Header {
                name: "x-hostile".into(),
                value: HOSTILE.into(),
            },
        ],
        response_headers: if failed.is_some() {
            vec![]
        } else {
            vec![Header {
                name: "set-cookie".into(),
                value: "sid=abc; Path=/; HttpOnly\nlang=en; Secure".into(),
            }]
        },
        unfinished: i % 11 == 10,
    }
}

fn run(index: u8, requests: Vec<Request>) -> Run {
    Run {
        index,
        view: Some(RunView::Cold),
        started_unix_ms: 1_796_000_000_000,
        url: "https://example.test/".into(),
        final_url: "https://example.test/".into(),
        status: 200,
        timing: NavTiming {
            dns_ms: 4.0,
            connect_ms: 20.0,
            tls_ms: Some(12.0),
            wait_ms: 40.0,
            response_start_ms: 70.0,
            download_ms: 3.0,
            dom_content_loaded_ms: Some(300.0),
            load_ms: Some(900.0),
            ..NavTiming::default()
        },
        first_paint_ms: Some(250.0),
        first_contentful_paint_ms: Some(260.0),
        lcp: Some(Lcp {
            time_ms: 480.0,
            element: format!("img#hero{HOSTILE}"),
            url: Some(format!("https://example.test/hero.png?{HOSTILE}")),
            size: 120_000.0,
        }),
        cls: 0.12,
        long_tasks: vec![LongTask {
            start_ms: 500.0,
            duration_ms: 120.0,
        }],
        requests,
        screenshot_png_base64: Some(PNG_1X1.into()),
        ..Run::default()
    }
}

fn stored(id: i64, region: &str, runs: Vec<Run>) -> StoredReport {
    let summary = Summary::from_runs(&runs);
    StoredReport {
        id,
        load_id: "l-bad".into(),
        region: region.into(),
        agent: format!("{region}-1"),
        agent_region: region.into(),
        attempts: vec![
            Attempt {
                number: 1,
                agent: format!("{region}-0"),
                region: region.into(),
                dispatched_unix_ms: 1_796_000_000_000,
                ended_unix_ms: Some(1_796_000_001_000),
                outcome: Some(AttemptOutcome::AgentLost),
                detail: Some(format!("the job stream was silent for 3 s {HOSTILE}")),
            },
            Attempt {
                number: 2,
                agent: format!("{region}-1"),
                region: region.into(),
                dispatched_unix_ms: 1_796_000_001_000,
                ended_unix_ms: Some(1_796_000_002_000),
                outcome: Some(AttemptOutcome::Report),
                detail: None,
            },
        ],
        note: Some(format!(
            "no healthy agent in {region}; ran nearby {HOSTILE}"
        )),
        estimated_rtt_ms: Some(80.0),
        report: Report {
            schema: SCHEMA_VERSION,
            job: JobSpec::new("https://example.test/"),
            started_unix_ms: 1_796_000_000_000,
            region: region.into(),
            node: format!("{region}-1"),
            browser_version: "Chromium/131.0".into(),
            user_agent: "Mozilla/5.0".into(),
            runs,
            summary,
        },
    }
}

fn load(name: &str, reports: Vec<StoredReport>) -> LoadStatus {
    LoadStatus {
        id: format!("l-{name}"),
        state: LoadState::Done,
        created_unix_ms: 1_796_000_000_000,
        finished_unix_ms: Some(1_796_000_010_000),
        request: LoadRequest::new(&format!("https://example.test/?case={name}&{HOSTILE}")),
        targets: reports
            .iter()
            .map(|r| TargetStatus {
                region: r.region.clone(),
                state: LoadState::Done,
                attempts: r.attempts.clone(),
                note: r.note.clone(),
                report_id: Some(r.id),
                failure: None,
            })
            .collect(),
        failure: None,
        reports,
    }
}

/// Requests that start in a shuffled order (a seeded LCG), as the browser may report them.
fn requests(n: usize, seed: u64) -> Vec<Request> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let failed = match i % 13 {
                3 => Some("net::ERR_CONNECTION_REFUSED"),
                7 => Some("net::ERR_BLOCKED_BY_CLIENT: refused by the egress guard"),
                _ => None,
            };
            request(i, (x >> 33) as f64 % 2000.0, failed)
        })
        .collect()
}

/// Every bad case, by name, with the requests its waterfall must show.
fn cases(seed: u64) -> Vec<(&'static str, LoadStatus, usize)> {
    let mut out = Vec::new();
    let failing = requests(40, seed);
    out.push((
        "failed-requests",
        load("failed", vec![stored(1, "sin", vec![run(1, failing)])]),
        40,
    ));
    let mut timed_out = run(1, requests(12, seed + 1));
    timed_out.timed_out = true;
    timed_out.timing.load_ms = None;
    timed_out.omitted = vec![format!("3 requests past the cap of 12 {HOSTILE}")];
    out.push((
        "timed-out",
        load("timed-out", vec![stored(2, "ams", vec![timed_out])]),
        12,
    ));
    let mut no_lcp = run(1, requests(5, seed + 2));
    no_lcp.lcp = None;
    no_lcp.first_contentful_paint_ms = None;
    no_lcp.screenshot_png_base64 = None;
    out.push((
        "no-lcp",
        load("no-lcp", vec![stored(3, "iad", vec![no_lcp])]),
        5,
    ));
    let refused = Run {
        index: 1,
        view: Some(RunView::Cold),
        url: "https://example.test/".into(),
        error: Some(format!("net::ERR_CONNECTION_REFUSED {HOSTILE}")),
        ..Run::default()
    };
    let fine = run(1, requests(8, seed + 3));
    out.push((
        "refused-navigation",
        load(
            "refused",
            vec![
                stored(4, "syd", vec![refused]),
                stored(5, "sin", vec![fine]),
            ],
        ),
        8,
    ));
    out.push((
        "2000-requests",
        load(
            "2000",
            vec![stored(6, "sin", vec![run(1, requests(2000, seed + 4))])],
        ),
        2000,
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_render_offline_and_export_valid_har() {
    let seed = 0x5eed_u64;
    println!("seed {seed}");
    let dir = artifacts("report-render");
    let cases = cases(seed);

    // HAR: har-validator and the timing rules, every case
    let mut hars = Vec::new();
    for (name, status, _) in &cases {
        let bytes = har::load_har(status);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let counts = check_har_timings(&v);
        let total: usize = status
            .reports
            .iter()
            .flat_map(|r| &r.report.runs)
            .map(|r| r.requests.len())
            .sum();
        assert_eq!(counts.values().sum::<usize>(), total, "{name}: entries");
        let path = dir.join(format!("{name}.har"));
        std::fs::write(&path, &bytes).unwrap();
        hars.push(path);
    }
    validate_har(&hars);

    // HTML: from a file, in a real browser, with the network watched
    let (mut browser, pump) = chromium(&dir.join("profile")).await;
    for (name, status, rows) in &cases {
        let path = dir.join(format!("{name}.html"));
        std::fs::write(&path, html::load_html(status)).unwrap();
        let page = browser.new_page("about:blank").await.unwrap();
        page.execute(EnableParams::default()).await.unwrap();
        let mut requests = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .unwrap();
        let url = format!("file://{}", path.display());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), page.goto(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("{name}: the report did not load within 60 s"))
            .unwrap();
        let render = started.elapsed();
        let eval = |js: &'static str| {
            let page = page.clone();
            async move {
                page.evaluate(js)
                    .await
                    .unwrap()
                    .into_value::<serde_json::Value>()
                    .unwrap()
            }
        };
        let got_rows = eval("document.querySelectorAll('svg.wf g.req').length").await;
        assert_eq!(got_rows, *rows, "{name}: waterfall rows");
        let injected = eval(
            "[typeof window.pwned, document.querySelectorAll('script').length, \
              document.querySelectorAll('img:not(.shot)').length]",
        )
        .await;
        assert_eq!(
            injected,
            serde_json::json!(["undefined", 0, 0]),
            "{name}: hostile data became markup"
        );
        assert_eq!(
            eval("document.querySelectorAll('#comparison tbody tr').length").await,
            status.reports.len(),
            "{name}: one comparison row per region"
        );
        if *name == "2000-requests" {
            println!(
                "report-render requests=2000 html_bytes={} load_ms={}",
                std::fs::metadata(&path).unwrap().len(),
                render.as_millis()
            );
        }
        page.close().await.unwrap();
        // every event has arrived once the page is closed
        let mut fetched = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), requests.next()).await
        {
            fetched.push(e.request.url.clone());
        }
        let network: Vec<&String> = fetched
            .iter()
            .filter(|u| !u.starts_with("file://") && !u.starts_with("data:"))
            .collect();
        assert!(
            network.is_empty(),
            "{name}: the report made network requests: {network:?}"
        );
        assert!(
            fetched.iter().any(|u| u.starts_with("file://")),
            "{name}: no request events seen at all, so the watch proves nothing: {fetched:?}"
        );
    }
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    pump.abort();
}
