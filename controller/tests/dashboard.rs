//! The reports people read, end to end on a small real fleet (a controller and two agents with
//! real Chromium behind the WAN emulator, the test origin site): `vantage load --har --html
//! --json`, the HAR route validated by har-validator, and the dashboard driven by a real
//! headless Chromium — log in, the fleet page, run a load with live progress, the report page
//! (waterfall rows, region comparison, screenshots), history and compare, and the CSRF rules.
//! Screenshots of the fleet and report pages go to `target/artifacts/dashboard/` and `docs/`.

mod common;

use std::time::{Duration, Instant};

use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use common::reports::{artifacts, check_har_timings, chromium, validate_har, workspace};
use common::{schema, Fleet, TOKEN};
use vantage::cli::table::median_run;
use vantage_proto::api::LoadStatus;
use vantage_tests::origin::Origin;

const REGIONS: [&str; 2] = ["sin", "ams"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_dashboard_end_to_end() {
    let origin = Origin::start().await.unwrap();
    let page_url = origin.url("/index.html");
    let fleet = Fleet::start("dashboard", "iad", &REGIONS, &[]).await;
    let dir = artifacts("dashboard");

    cli_writes_har_html_and_json(&fleet, &page_url, &dir).await;
    dashboard_in_a_real_browser(&fleet, &page_url, &dir).await;
    cookie_requests_need_the_same_origin(&fleet).await;
}

async fn cli_writes_har_html_and_json(fleet: &Fleet, page_url: &str, dir: &std::path::Path) {
    let (har_path, html_path) = (dir.join("cli.har"), dir.join("cli.html"));
    let out = fleet.cli(&[
        "load",
        page_url,
        "--from",
        &REGIONS.join(","),
        "--screenshot",
        "--har",
        har_path.to_str().unwrap(),
        "--html",
        html_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "vantage load: {}; logs in {}",
        String::from_utf8_lossy(&out.stderr),
        fleet.log_dir().display()
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    schema::validate("load.schema.json", "vantage load --json", &printed);
    let status: LoadStatus = serde_json::from_value(printed).expect("--json is a LoadStatus");
    assert_eq!(status.reports.len(), REGIONS.len());
    api_answers_follow_the_schemas(fleet, &status).await;

    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&har_path).unwrap()).unwrap();
    let counts = check_har_timings(&har);
    let requests: usize = status
        .reports
        .iter()
        .flat_map(|r| &r.report.runs)
        .map(|r| r.requests.len())
        .sum();
    assert!(requests > 0, "the origin's page makes requests");
    assert_eq!(
        counts.values().sum::<usize>(),
        requests,
        "one entry per request"
    );
    let pages = har["log"]["pages"].as_array().unwrap();
    for p in pages {
        assert!(REGIONS.contains(&p["_region"].as_str().unwrap()), "{p}");
        assert!(p["_node"].as_str().is_some_and(|n| !n.is_empty()), "{p}");
    }

    // the API's HAR of the same load is the same document
    let api_har = fleet
        .http
        .get(fleet.url(&format!("/api/loads/{}/har", status.id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(api_har.status(), 200);
    let api_har: serde_json::Value = api_har.json().await.unwrap();
    assert_eq!(api_har, har, "--har and GET /api/loads/{{id}}/har agree");
    let doc: serde_json::Value = fleet
        .http
        .get(fleet.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"].get("/api/loads/{id}/har").is_some(),
        "the OpenAPI document lists the HAR route"
    );
    let api_path = dir.join("api.har");
    std::fs::write(&api_path, serde_json::to_vec(&api_har).unwrap()).unwrap();
    validate_har(&[har_path, api_path]);

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("id=\"comparison\"") && html.contains("class=\"req"));
}

/// `GET /api/loads/{id}`, `GET /api/reports/{id}` and the CLI's other `--json` outputs follow
/// the checked-in schemas too.
async fn api_answers_follow_the_schemas(fleet: &Fleet, status: &LoadStatus) {
    let load: serde_json::Value = fleet
        .get(&format!("/api/loads/{}", status.id))
        .await
        .unwrap();
    schema::validate("load.schema.json", "GET /api/loads/{id}", &load);
    for r in &status.reports {
        let report: serde_json::Value = fleet.get(&format!("/api/reports/{}", r.id)).await.unwrap();
        schema::validate("report.schema.json", "GET /api/reports/{id}", &report);
    }
    for (args, file) in [
        (
            ["reports", "list", "--json"].as_slice(),
            "report-list.schema.json",
        ),
        (
            &[
                "reports",
                "show",
                &status.reports[0].id.to_string(),
                "--json",
            ],
            "report.schema.json",
        ),
        (&["members", "--json"], "members.schema.json"),
        (&["regions", "--json"], "regions.schema.json"),
    ] {
        let out = fleet.cli(args);
        assert!(out.status.success(), "vantage {args:?}: {out:?}");
        let printed: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("--json is JSON");
        assert!(
            printed.as_array().is_none_or(|a| !a.is_empty()),
            "{args:?}: {printed}"
        );
        schema::validate(file, &format!("vantage {}", args.join(" ")), &printed);
    }
}

/// Evaluates `js` in the page.
async fn eval(page: &Page, js: &str) -> serde_json::Value {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
        .into_value()
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `js` until it is truthy.
async fn wait_for(page: &Page, js: &str, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Ok(r) = page.evaluate(js).await {
            let v: serde_json::Value = r.into_value().unwrap_or(serde_json::Value::Null);
            if !v.is_null() && v != false && v != 0 && v != "" {
                return v;
            }
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for `{js}`");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fills the login form with `token` and submits it.
async fn submit_login(page: &Page, token: &str) {
    eval(
        page,
        &format!(
            "document.querySelector('input[name=token]').value = {}; \
             document.getElementById('login').submit(); true",
            serde_json::to_string(token).unwrap()
        ),
    )
    .await;
}

async fn save_screenshot(page: &Page, dir: &std::path::Path, name: &str) {
    let png = page
        .screenshot(ScreenshotParams::builder().full_page(true).build())
        .await
        .unwrap();
    std::fs::write(dir.join(name), &png).unwrap();
    let docs = workspace().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join(name), &png).unwrap();
}

async fn dashboard_in_a_real_browser(fleet: &Fleet, page_url: &str, dir: &std::path::Path) {
    let (mut browser, pump) = chromium(&dir.join("profile")).await;
    let page = browser.new_page(fleet.url("/fleet")).await.unwrap();
    let long = Duration::from_secs(120);

    // not logged in: the login form
    wait_for(&page, "document.getElementById('login')", long).await;
    submit_login(&page, "wrong-token-wrong-token").await;
    wait_for(&page, "document.getElementById('login-error')", long).await;
    submit_login(&page, TOKEN).await;
    wait_for(&page, "location.pathname === '/fleet'", long).await;

    // the fleet: every member listed; coordinates plotted once they have settled
    let members = wait_for(
        &page,
        "document.querySelectorAll('#members tbody tr').length >= 3 && \
         document.querySelectorAll('#coords g.member').length >= 3 && \
         document.querySelectorAll('#members tbody tr').length",
        long,
    )
    .await;
    assert!(members.as_u64().unwrap() >= 3, "controller and two agents");
    let text = eval(&page, "document.body.innerText").await;
    for r in REGIONS {
        assert!(text.as_str().unwrap().contains(r), "fleet page names {r}");
    }
    assert!(
        eval(&page, "document.querySelectorAll('#rtt tbody tr').length")
            .await
            .as_u64()
            .unwrap()
            >= 3
    );
    save_screenshot(&page, dir, "dashboard-fleet.png").await;

    // run a load with live progress, then its report
    page.goto(fleet.url("/run")).await.unwrap();
    wait_for(&page, "document.getElementById('run-form')", long).await;
    eval(
        &page,
        &format!(
            "const f = document.getElementById('run-form'); f.url.value = {}; \
             f.from.value = '{}'; f.runs.value = '1'; f.screenshot.checked = true; \
             f.querySelector('button').click(); true",
            serde_json::to_string(page_url).unwrap(),
            REGIONS.join(",")
        ),
    )
    .await;
    wait_for(
        &page,
        "document.querySelectorAll('#progress li').length > 0",
        long,
    )
    .await;
    let path = wait_for(
        &page,
        "location.pathname.endsWith('/report') && document.readyState === 'complete' && location.pathname",
        long,
    )
    .await;
    let id = path
        .as_str()
        .unwrap()
        .trim_start_matches("/loads/")
        .trim_end_matches("/report")
        .to_owned();
    let status: LoadStatus = fleet.get(&format!("/api/loads/{id}")).await.unwrap();
    assert_eq!(status.reports.len(), REGIONS.len(), "{status:#?}");
    // one waterfall per region, of its median run
    let want_rows: usize = status
        .reports
        .iter()
        .map(|r| median_run(&r.report).map_or(0, |run| run.requests.len()))
        .sum();
    assert!(want_rows > 0);
    let rows = eval(&page, "document.querySelectorAll('svg.wf g.req').length").await;
    assert_eq!(rows, want_rows, "waterfall rows");
    let compared = eval(
        &page,
        "document.querySelectorAll('#comparison tbody tr').length",
    )
    .await;
    assert_eq!(compared, REGIONS.len(), "region comparison rows");
    let shots = eval(
        &page,
        "[...document.querySelectorAll('img.shot')].filter(i => i.complete && i.naturalWidth > 0).length",
    )
    .await;
    assert_eq!(shots, REGIONS.len(), "a decoded screenshot per region");
    save_screenshot(&page, dir, "dashboard-report.png").await;

    // history: a trend per metric, and compare two reports
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", page_url)
        .finish();
    page.goto(fleet.url(&format!("/history?{q}")))
        .await
        .unwrap();
    wait_for(&page, "document.getElementById('reports')", long).await;
    assert_eq!(
        eval(&page, "document.querySelectorAll('svg.trend').length").await,
        3
    );
    assert!(
        eval(
            &page,
            "document.querySelectorAll('#reports tbody tr').length"
        )
        .await
        .as_u64()
        .unwrap()
            >= 4,
        "two loads of two regions"
    );
    eval(
        &page,
        "document.querySelector('form[action=\"/compare\"]').submit(); true",
    )
    .await;
    wait_for(&page, "location.pathname === '/compare'", long).await;
    assert_eq!(
        wait_for(
            &page,
            "document.querySelectorAll('#comparison tbody tr').length",
            long
        )
        .await,
        2
    );
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    pump.abort();
}

/// The cookie authenticates reads from anywhere it is sent, but a change only with this
/// controller's own Origin; the bearer token needs no Origin.
async fn cookie_requests_need_the_same_origin(fleet: &Fleet) {
    let cookie = format!("vantage_token={TOKEN}");
    let post = |origin: Option<&str>| {
        let mut r = fleet
            .http
            .post(fleet.url("/api/loads"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body("{\"url\":\"http://127.0.0.1:1/\"}");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let r = post(origin).await.unwrap();
        assert_eq!(r.status(), 403, "origin {origin:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "cross_origin");
    }
    let read = fleet
        .http
        .get(fleet.url("/api/regions"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let login = fleet
        .http
        .post(fleet.url("/login"))
        .header("origin", "https://evil.example")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403, "cross-origin login");
    // the cookie is Secure when the person came over HTTPS (here: through a TLS proxy's header)
    let host = fleet.url("").replace("http://", "");
    // the redirect to the fleet page is not followed: its answer has no cookie to read
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (proto, secure) in [("https", true), ("http", false)] {
        let login = http
            .post(fleet.url("/login"))
            .header("origin", format!("http://{host}"))
            .header("x-forwarded-proto", proto)
            .body(format!("token={TOKEN}"))
            .send()
            .await
            .unwrap();
        let set = login.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.contains("HttpOnly"), "{set}");
        assert_eq!(set.contains("; Secure"), secure, "behind {proto}: {set}");
    }
    // a person who opens a report that is not there reads why, on a page
    for (path, status, says) in [
        ("/reports/999999", 404, "no report 999999"),
        ("/reports/latest", 400, "report id `latest` is not a number"),
        ("/loads/ld_nope/report", 404, "no load `ld_nope`"),
    ] {
        let r = fleet
            .http
            .get(fleet.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        let page = r.text().await.unwrap();
        assert!(page.contains(says), "{path}: {page}");
    }
}
