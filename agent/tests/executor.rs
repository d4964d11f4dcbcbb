//! The executor against real Chromium: bad input of every kind, and cold/warm views with
//! screenshots and a median.

mod common;

use std::time::Duration;

use vantage_agent::chromium::BrowserState;
use vantage_proto::{JobSpec, Wait};
use vantage_tests::origin::Origin;

/// A TLS server with a self-signed certificate (`openssl s_server`), killed on drop.
struct SelfSigned {
    child: std::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl SelfSigned {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("vantage-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed");
        assert!(ok.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-www", "-accept", &port.to_string()])
            .arg("-key")
            .arg(&key)
            .arg("-cert")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_or_partial_reports_and_the_browser_survives() {
    for url in [
        "file:///etc/passwd",
        "chrome://settings",
        "javascript:alert(1)",
    ] {
        let err = JobSpec::new(url).validate().unwrap_err().to_string();
        assert!(
            err.contains("only http and https are accepted"),
            "{url}: {err}"
        );
    }
    let origin = Origin::start().await.unwrap();
    let tls = SelfSigned::start();
    let (sup, cdp, version) = common::browser().await;
    let quick = |url: &str| {
        let mut s = JobSpec::new(url);
        s.timeout_ms = 8_000;
        s.wait = Wait::Load;
        s
    };
    // a port nothing listens on (Chromium refuses "unsafe" low ports before connecting)
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://127.0.0.1:{closed}/");
    let cases = [
        ("http://no-such-host.invalid/", "ERR_NAME_NOT_RESOLVED"),
        (&*refused, "ERR_CONNECTION_REFUSED"),
        (&*format!("https://127.0.0.1:{}/", tls.port), "ERR_CERT"),
    ];
    for (url, want) in cases {
        let r = common::load(&cdp, &version, &quick(url)).await;
        let err = r.runs[0].error.clone().unwrap_or_default();
        println!("{url}: {err}");
        assert!(
            err.contains(want),
            "{url}: error `{err}` does not name {want}"
        );
        if want == "ERR_CERT" {
            assert!(
                r.runs[0].certificate_error.is_some(),
                "certificate errors are reported, never ignored"
            );
        }
    }
    // a 10 MB page: a complete report, or a partial one marked timed out; never a hang
    let mut big = quick(&origin.url(vantage_tests::origin::HUGE_PATH));
    big.timeout_ms = 30_000;
    let huge = common::load(&cdp, &version, &big).await;
    let run = &huge.runs[0];
    let doc = &run.requests[0];
    println!(
        "huge: status {} body {} bytes, load {:?}, timed out {}",
        doc.status, doc.body_bytes, run.timing.load_ms, run.timed_out
    );
    assert_eq!(run.error, None);
    assert_eq!(doc.status, 200);
    assert!(run.timed_out || run.timing.load_ms.is_some(), "{run:?}");
    // a page that never finishes: a partial report marked timed out, within the deadline
    let started = std::time::Instant::now();
    let never = common::load(
        &cdp,
        &version,
        &quick(&origin.url(vantage_tests::origin::NEVER_PATH)),
    )
    .await;
    println!(
        "never: timed_out {} after {:?}",
        never.runs[0].timed_out,
        started.elapsed()
    );
    assert!(never.runs[0].timed_out, "{:?}", never.runs[0]);
    assert!(
        !never.runs[0].requests.is_empty(),
        "the partial report keeps what was captured"
    );
    // and the browser is still healthy: a normal job succeeds
    assert!(
        matches!(sup.state(), BrowserState::Ready { .. }),
        "{:?}",
        sup.state()
    );
    let ok = common::load(&cdp, &version, &quick(&origin.url("/index.html"))).await;
    assert_eq!(ok.runs[0].error, None);
    assert_eq!(ok.runs[0].status, 200);
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_and_warm_views_with_screenshots_and_a_median() {
    let origin = Origin::start().await.unwrap();
    let (sup, cdp, version) = common::browser().await;
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.runs = 3;
    spec.view = vantage_proto::View::Both;
    spec.wait = Wait::Load;
    spec.screenshot = true;
    let report = common::load(&cdp, &version, &spec).await;
    let views: Vec<_> = report.runs.iter().map(|r| (r.index, r.view)).collect();
    use vantage_proto::RunView::{Cold, Warm};
    assert_eq!(
        views,
        vec![
            (1, Some(Cold)),
            (1, Some(Warm)),
            (2, Some(Cold)),
            (2, Some(Warm)),
            (3, Some(Cold)),
            (3, Some(Warm))
        ]
    );
    for r in &report.runs {
        assert_eq!(r.error, None);
        let png = r.screenshot_png_base64.as_deref().unwrap_or_default();
        assert!(
            png.starts_with("iVBORw0KGgo"),
            "run {} has no PNG screenshot",
            r.index
        );
    }
    let summary = report.summary.expect("summary");
    assert_eq!(
        report.runs[summary.median_run].view,
        Some(Cold),
        "the median is picked among cold runs"
    );
    let load = summary.stats["load_ms"];
    assert!(
        load.min <= load.p50 && load.p50 <= load.p90 && load.p90 <= load.max,
        "{load:?}"
    );
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_page_yields_a_bounded_report_that_says_what_it_left_out() {
    use vantage_tests::origin::{NOISY_ERRORS, NOISY_FETCHES, NOISY_PATH, NOISY_TEXT};
    let origin = Origin::start().await.unwrap();
    let (sup, cdp, version) = common::browser().await;
    let mut spec = JobSpec::new(&origin.url(NOISY_PATH));
    spec.wait = Wait::Load;
    spec.timeout_ms = 60_000;
    let report = common::load(&cdp, &version, &spec).await;
    let run = &report.runs[0];
    assert_eq!(run.error, None);
    println!(
        "noisy: {} requests, {} console errors, load {:?}, omitted {:?}",
        run.requests.len(),
        run.console_errors.len(),
        run.timing.load_ms,
        run.omitted
    );
    assert!(!run.timed_out, "the page's requests did not settle in time");
    let kept = run.console_errors.len();
    // the caps are the documented ones, exactly: 200 console errors, 2000 requests
    const { assert!(NOISY_ERRORS > 200) };
    assert_eq!(kept, 200);
    assert!(run
        .console_errors
        .iter()
        .all(|e| e.text.chars().count() < NOISY_TEXT));
    const { assert!(NOISY_FETCHES > 2000) };
    assert_eq!(run.requests.len(), 2000);
    let notes = run.omitted.join("; ");
    // the page's own errors plus the browser's one per missing image, past the cap
    assert!(
        notes.contains(&format!("more console errors past the first {kept}")),
        "{notes}"
    );
    assert!(notes.contains("more requests past the first"), "{notes}");
    // the agent's frame limit leaves the report whole, and it fits a tight one by giving up
    // its waterfall, saying so
    let full =
        vantage_agent::executor::report_frame(report.clone(), vantage_proto::wire::MAX_FRAME);
    let tight = vantage_agent::executor::report_frame(report.clone(), 1_000_000);
    assert!(
        tight.len() <= 1_000_004 && tight.len() < full.len(),
        "{}",
        tight.len()
    );
    let back: vantage_proto::wire::JobEvent = vantage_proto::wire::decode(&tight[4..]).unwrap();
    let vantage_proto::wire::JobEvent::Report { report: back } = back else {
        panic!("not a report")
    };
    assert!(back.runs[0].requests.is_empty());
    assert!(
        back.runs[0]
            .omitted
            .iter()
            .any(|n| n.contains("size limit")),
        "{:?}",
        back.runs[0].omitted
    );
    sup.stop().await;
}

/// A job on `url` that waits for load and then `quiet_ms` of network silence, within `timeout_ms`.
fn quiet_job(url: &str, quiet_ms: u32, timeout_ms: u32) -> JobSpec {
    let mut spec = JobSpec::new(url);
    spec.wait = Wait::LoadAndQuiet { quiet_ms };
    spec.timeout_ms = timeout_ms;
    spec
}

/// Loads `spec` and says how long it took; the run must have settled by itself, quiet within
/// the deadline.
async fn settles(
    cdp: &vantage_agent::cdp::Cdp,
    version: &str,
    spec: &JobSpec,
) -> vantage_proto::Run {
    let started = std::time::Instant::now();
    let report = common::load(cdp, version, spec).await;
    let run = report.runs[0].clone();
    println!(
        "{}: {} requests ({} unfinished), load {:?}, over after {:?}, omitted {:?}",
        spec.url,
        run.requests.len(),
        run.requests.iter().filter(|r| r.unfinished).count(),
        run.timing.load_ms,
        started.elapsed(),
        run.omitted
    );
    assert_eq!(run.error, None, "{}", spec.url);
    assert!(!run.timed_out, "{}", spec.url);
    assert!(
        !run.omitted.iter().any(|n| n.contains("never went quiet")),
        "{}: the quiet window never closed: {:?}",
        spec.url,
        run.omitted
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_means_no_network_activity_not_no_open_requests_or_sockets() {
    use vantage_tests::live::{
        Live, BLOB_PATH, EVENTS_PATH, SOCKET_PATH, UNREAD_FETCHES, UNREAD_PATH,
    };
    let origin = Origin::start().await.unwrap();
    let live = Live::start().await.unwrap();
    let (sup, cdp, version) = common::browser().await;
    // a live WebSocket and EventSource tick every 100 ms: neither is loading activity
    let run = settles(
        &cdp,
        &version,
        &quiet_job(&live.url(SOCKET_PATH), 1000, 30_000),
    )
    .await;
    let stream = run
        .requests
        .iter()
        .find(|r| r.url.ends_with(EVENTS_PATH))
        .expect("the EventSource request is in the waterfall");
    assert!(stream.unfinished, "{stream:?}");
    // fetches whose bodies the page never reads stay open for ever: marked, not zeroed
    let run = settles(
        &cdp,
        &version,
        &quiet_job(&live.url(UNREAD_PATH), 1000, 30_000),
    )
    .await;
    let blobs: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.url.contains(BLOB_PATH))
        .collect();
    assert_eq!(blobs.len(), UNREAD_FETCHES, "{:?}", run.requests);
    assert!(
        blobs.iter().any(|r| r.unfinished && r.status == 200),
        "an unread body leaves its request unfinished, with its response kept: {blobs:?}"
    );
    for r in &run.requests {
        assert!(
            r.unfinished || r.status != 0 || r.failed.is_some(),
            "a zeroed row: {r:?}"
        );
    }
    // the noisy page: thousands of requests, some never finishing, past every cap
    let noisy = quiet_job(&origin.url(vantage_tests::origin::NOISY_PATH), 1000, 60_000);
    settles(&cdp, &version, &noisy).await;
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_renderer_ends_the_run_with_a_clear_error_at_once() {
    let origin = Origin::start().await.unwrap();
    let (sup, cdp, version) = common::browser().await;
    // a page that never finishes loading: without crash detection the run waits out 30 s
    let mut spec = JobSpec::new(&origin.url(vantage_tests::origin::NEVER_PATH));
    spec.wait = Wait::Load;
    spec.timeout_ms = 30_000;
    let (c, v) = (cdp.clone(), version.clone());
    let job = tokio::spawn(async move { common::load(&c, &v, &spec).await });
    let target = loop {
        let targets = cdp
            .call(None, "Target.getTargets", serde_json::json!({}))
            .await
            .unwrap();
        let found = targets["targetInfos"].as_array().and_then(|all| {
            all.iter()
                .find(|t| {
                    t["type"] == "page"
                        && t["url"]
                            .as_str()
                            .is_some_and(|u| u.ends_with(vantage_tests::origin::NEVER_PATH))
                })
                .map(|t| t["targetId"].clone())
        });
        if let Some(t) = found {
            break t;
        }
        assert!(
            !job.is_finished(),
            "the job ended before its page committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target, "flatten": true }),
        )
        .await
        .unwrap();
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    // the target's URL changes when the navigation starts; crash the renderer that committed it
    loop {
        let at = cdp
            .call(
                Some(&session),
                "Runtime.evaluate",
                serde_json::json!({ "expression": "location.pathname", "returnByValue": true }),
            )
            .await
            .unwrap();
        if at["result"]["value"] == vantage_tests::origin::NEVER_PATH {
            break;
        }
        assert!(
            !job.is_finished(),
            "the job ended before its page committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let crashed_at = std::time::Instant::now();
    // the renderer dies before it can answer, so the call's own result is of no interest
    let c = cdp.clone();
    tokio::spawn(async move {
        let _ = c
            .call_within(
                Some(&session),
                "Page.crash",
                serde_json::json!({}),
                Duration::from_secs(2),
            )
            .await;
    });
    let report = tokio::time::timeout(Duration::from_secs(25), job)
        .await
        .expect("the run ended before its deadline")
        .unwrap();
    let took = crashed_at.elapsed();
    let run = &report.runs[0];
    println!(
        "crash: run over {took:?} after Page.crash, error {:?}",
        run.error
    );
    assert_eq!(
        run.error.as_deref(),
        Some("the renderer crashed"),
        "{run:?}"
    );
    assert!(!run.timed_out);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_captured_as_on_the_wire_with_cookies() {
    use vantage_tests::live::{Live, COOKIE, COOKIE_PATH, ECHO_PATH};
    let live = Live::start().await.unwrap();
    let (sup, cdp, version) = common::browser().await;
    let mut spec = quiet_job(&live.url(COOKIE_PATH), 500, 20_000);
    spec.runs = 1;
    let run = settles(&cdp, &version, &spec).await;
    let find = |path: &str| {
        run.requests
            .iter()
            .find(|r| r.url.ends_with(path))
            .unwrap_or_else(|| panic!("no {path} in {:?}", run.requests))
    };
    let header = |list: &[vantage_proto::Header], name: &str| -> Vec<String> {
        list.iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
            .collect()
    };
    let doc = find(COOKIE_PATH);
    println!(
        "document: {} {} {:?}",
        doc.status, doc.status_text, doc.response_headers
    );
    assert_eq!((doc.status, doc.status_text.as_str()), (200, "OK"));
    let set = header(&doc.response_headers, "set-cookie");
    assert_eq!(set, vec![format!("{COOKIE}; Path=/")], "{doc:?}");
    assert!(
        !header(&doc.request_headers, "user-agent").is_empty(),
        "{doc:?}"
    );
    let echo = find(ECHO_PATH);
    println!("echo: {:?}", echo.request_headers);
    // only the ExtraInfo event carries the cookie the browser sent
    assert_eq!(
        header(&echo.request_headers, "cookie"),
        vec![COOKIE.to_owned()]
    );
    assert!(
        !header(&echo.response_headers, "content-length").is_empty(),
        "{echo:?}"
    );
    assert!(run.omitted.is_empty(), "{:?}", run.omitted);
    sup.stop().await;
}
