//! Ground truth: the agent's report of the test origin site, loaded in real Chromium, against what
//! the site is known to do.

use std::time::Duration;

use tokio::sync::mpsc;
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::{BrowserState, ChromiumConfig, Supervisor};
use vantage_agent::executor::{run_job, RunContext};
use vantage_proto::{JobSpec, Report, Viewport, Wait};
use vantage_tests::origin::{Origin, Side};

async fn browser() -> (Supervisor, Cdp, String) {
    let sup = Supervisor::spawn(ChromiumConfig {
        path: std::env::var_os("CHROME")
            .map(Into::into)
            .unwrap_or_else(|| "chromium".into()),
        ..ChromiumConfig::default()
    });
    sup.ready(Duration::from_secs(60)).await.unwrap();
    let BrowserState::Ready {
        ws_url, version, ..
    } = sup.state()
    else {
        panic!("not ready")
    };
    let cdp = Cdp::connect(&ws_url).await.unwrap();
    (sup, cdp, version)
}

async fn load(cdp: &Cdp, version: &str, spec: &JobSpec) -> Report {
    let (tx, _rx) = mpsc::unbounded_channel();
    let ctx = RunContext {
        region: "local".into(),
        node: "test".into(),
        browser_version: version.into(),
    };
    run_job(cdp, spec, &ctx, &tx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_matches_the_origin_ground_truth() {
    let origin = Origin::start().await.unwrap();
    let truth = origin.truth().clone();
    let (sup, cdp, version) = browser().await;
    let mut spec = JobSpec::new(&origin.url(&truth.document_path));
    spec.viewport = Viewport {
        width: truth.viewport.0,
        height: truth.viewport.1,
    };
    spec.wait = Wait::LoadAndQuiet { quiet_ms: 1500 };
    let report = load(&cdp, &version, &spec).await;
    let run = &report.runs[0];
    assert_eq!(run.error, None, "{run:#?}");
    assert!(!run.timed_out);
    assert_eq!(run.status, 200);

    // request count and statuses, exactly (a redirect is one entry per hop)
    let mut got: Vec<(String, u16)> = run
        .requests
        .iter()
        .map(|r| (url_path(&r.url), r.status))
        .collect();
    let mut want: Vec<(String, u16)> = truth
        .requests
        .iter()
        .map(|e| (e.path.clone(), e.status))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "waterfall differs from the site's requests");

    // TTFB: at least the server's delay, and within 50 ms of it on loopback
    let delay = truth.document_delay.as_secs_f64() * 1000.0;
    let ttfb = run.timing.response_start_ms;
    println!(
        "ttfb {ttfb:.1} ms (server delay {delay:.0} ms), load {:?}",
        run.timing.load_ms
    );
    assert!(
        ttfb >= delay && ttfb <= delay + 50.0,
        "ttfb {ttfb} vs delay {delay}"
    );

    let lcp = run.lcp.as_ref().expect("an LCP entry");
    println!("lcp {lcp:?}");
    assert!(
        lcp.url
            .as_deref()
            .unwrap_or_default()
            .ends_with(&truth.lcp_url_path),
        "{lcp:?}"
    );
    assert!(lcp.element.starts_with("img"), "{lcp:?}");

    println!("cls {:.4} (designed {:.4})", run.cls, truth.layout_shift);
    assert!((run.cls - truth.layout_shift).abs() <= 0.02);

    let long = truth.long_task.as_secs_f64() * 1000.0;
    println!("tbt {:?}, long tasks {:?}", run.tbt, run.long_tasks);
    assert!(
        run.tbt.ms >= long - 50.0,
        "tbt {} < long task {long} - 50",
        run.tbt.ms
    );

    // bytes on the wire: the body plus headers, nothing more
    for (r, e) in run.requests.iter().filter_map(|r| {
        let p = url_path(&r.url);
        truth
            .requests
            .iter()
            .find(|e| e.path == p && e.status == r.status)
            .map(|e| (r, e))
    }) {
        if e.origin == Side::Main && r.status == 200 {
            let overhead = r.encoded_bytes as i64 - e.body_bytes as i64;
            assert!(
                (0..=1024).contains(&overhead),
                "{}: {} on the wire for a {}-byte body",
                r.url,
                r.encoded_bytes,
                e.body_bytes
            );
        }
    }
    assert!(report.summary.is_some());
    sup.stop().await;
}

fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("/").to_owned()
}

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
    let (sup, cdp, version) = browser().await;
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
        let r = load(&cdp, &version, &quick(url)).await;
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
    let huge = load(&cdp, &version, &big).await;
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
    let never = load(
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
    let ok = load(&cdp, &version, &quick(&origin.url("/index.html"))).await;
    assert_eq!(ok.runs[0].error, None);
    assert_eq!(ok.runs[0].status, 200);
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_and_warm_views_with_screenshots_and_a_median() {
    let origin = Origin::start().await.unwrap();
    let (sup, cdp, version) = browser().await;
    let mut spec = JobSpec::new(&origin.url("/index.html"));
    spec.runs = 3;
    spec.view = vantage_proto::View::Both;
    spec.wait = Wait::Load;
    spec.screenshot = true;
    let report = load(&cdp, &version, &spec).await;
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
