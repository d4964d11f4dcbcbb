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
    assert!(kept < NOISY_ERRORS, "{kept} console errors kept");
    assert!(run
        .console_errors
        .iter()
        .all(|e| e.text.chars().count() < NOISY_TEXT));
    assert!(run.requests.len() < NOISY_FETCHES, "{}", run.requests.len());
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
