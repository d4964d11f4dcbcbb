//! Runs a page-load job against the local browser: a fresh browser context per cold run (taken
//! from the [`PagePool`] when one was opened ahead), the same context again for a warm run, everything captured from CDP events and the page's own
//! performance entries, and a deadline on every phase so a page that never settles still yields a
//! partial report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vantage_proto::{
    ConsoleEntry, JobSpec, Report, Run, RunView, Summary, View, Wait, SCHEMA_VERSION,
};

use crate::capture::{self, COLLECT_JS};
use crate::cdp::Cdp;
use crate::page::{self, PageCtx, PagePool};
use crate::waterfall::Waterfall;

/// Who ran the job, for the report.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub region: String,
    pub node: String,
    pub browser_version: String,
    /// The egress guard the browser goes through, if it is on.
    pub guard: Option<crate::egress::Guard>,
}

/// Progress events are the wire's own, so the job server streams them as they are.
pub use vantage_proto::wire::JobEvent as Progress;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs every run of `spec` and summarises them. Never fails as a whole: a failed run carries its
/// error in the report.
pub async fn run_job(
    cdp: &Cdp,
    spec: &JobSpec,
    ctx: &RunContext,
    pool: &PagePool,
    progress: &mpsc::UnboundedSender<Progress>,
) -> Report {
    run_job_at(cdp, spec, ctx, pool, progress, None).await
}

/// [`run_job`], with the first navigation held until the wall-clock time `start_at_unix_ms` (a
/// synchronized start across agents). The first browser context is opened and configured
/// before the wait, so what starts at that time is the page load itself; the report's
/// `started_unix_ms` is then when it did start.
pub async fn run_job_at(
    cdp: &Cdp,
    spec: &JobSpec,
    ctx: &RunContext,
    pool: &PagePool,
    progress: &mpsc::UnboundedSender<Progress>,
    start_at_unix_ms: Option<u64>,
) -> Report {
    let mut started_unix_ms = unix_ms();
    let mut start_at = start_at_unix_ms;
    let mut runs = Vec::new();
    let mut user_agent = String::new();
    for index in 1..=spec.runs {
        let views: &[RunView] = match spec.view {
            View::Cold => &[RunView::Cold],
            View::Warm | View::Both => &[RunView::Cold, RunView::Warm],
        };
        let mut page: Option<PageCtx> = None;
        let mut page_since = Instant::now();
        for &view in views {
            let _ = progress.send(Progress::RunStarted { index, view });
            // a warm run reuses the cold run's connections, which the guard saw then
            if view == RunView::Cold {
                page_since = Instant::now();
            }
            let mut begin = Begin {
                at: start_at.take(),
                unix_ms: unix_ms(),
            };
            let synchronized = begin.at.is_some();
            let result = run_once(cdp, spec, pool, &mut page, index, view, &mut begin).await;
            if synchronized {
                started_unix_ms = begin.unix_ms;
            }
            let mut run = match result {
                Ok((run, ua)) => {
                    if user_agent.is_empty() {
                        user_agent = ua;
                    }
                    run
                }
                Err(e) => Run {
                    index,
                    view: Some(view),
                    url: spec.url.clone(),
                    started_unix_ms: begin.unix_ms,
                    error: Some(format!("{e:#}")),
                    ..Run::default()
                },
            };
            if let Some(g) = &ctx.guard {
                crate::egress::annotate(&mut run, &g.outcomes_since(page_since));
            }
            let _ = progress.send(Progress::RunFinished {
                index,
                view,
                load_ms: run.timing.load_ms,
            });
            // a warm-only job reports just the repeat view
            if !(spec.view == View::Warm && view == RunView::Cold) {
                runs.push(run);
            }
        }
        if let Some(p) = page.take() {
            // the report is complete: tear the context down off the job's critical path
            tokio::spawn(p.close());
        }
    }
    let summary = Summary::from_runs(&runs);
    Report {
        schema: SCHEMA_VERSION,
        job: spec.clone(),
        started_unix_ms,
        region: ctx.region.clone(),
        node: ctx.node.clone(),
        browser_version: ctx.browser_version.clone(),
        user_agent,
        runs,
        summary,
    }
}

/// When a run begins: held until `at` if given, and the wall-clock time it did begin.
struct Begin {
    at: Option<u64>,
    unix_ms: u64,
}

/// Sleeps until the wall clock reads `at_unix_ms` (at once if it already has).
async fn wait_until(at_unix_ms: u64) {
    loop {
        let now = unix_ms();
        if now >= at_unix_ms {
            return;
        }
        // the timer can wake a little early against the wall clock, so check again
        tokio::time::sleep(Duration::from_millis(at_unix_ms - now)).await;
    }
}

async fn run_once(
    cdp: &Cdp,
    spec: &JobSpec,
    pool: &PagePool,
    page: &mut Option<PageCtx>,
    index: u8,
    view: RunView,
    begin: &mut Begin,
) -> Result<(Run, String)> {
    let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
    let mut deadline = Instant::now() + timeout;
    if view == RunView::Cold {
        if let Some(old) = page.take() {
            old.close().await;
        }
        let opened = tokio::time::timeout_at(deadline.into(), async {
            // a spare that failed to open (its browser went away) is not worth a failed run
            let p = match pool.take(cdp).await {
                Ok(Ok(p)) => p,
                _ => page::open(cdp)
                    .await
                    .map_err(|e| anyhow!("opening a browser context failed: {e}"))??,
            };
            p.configure(spec).await?;
            Ok::<_, anyhow::Error>(p)
        })
        .await
        .map_err(|_| anyhow!("timed out opening a browser context"))??;
        *page = Some(opened);
    }
    let p = page
        .as_mut()
        .ok_or_else(|| anyhow!("no page for a warm run"))?;
    if let Some(at) = begin.at {
        wait_until(at).await;
        // the wait is not the page's time: the load gets its whole timeout from the start
        deadline = Instant::now() + timeout;
    }
    while p.events.try_recv().is_ok() {}
    let s = Some(p.session.as_str());
    begin.unix_ms = unix_ms();
    let mut run = Run {
        index,
        view: Some(view),
        url: spec.url.clone(),
        started_unix_ms: begin.unix_ms,
        viewport: Some(spec.viewport),
        ..Run::default()
    };
    let mut fall = Waterfall::default();
    // console errors and exceptions past the cap: (console, exceptions)
    let mut dropped = (0u64, 0u64);
    let nav = tokio::time::timeout_at(
        deadline.into(),
        cdp.call(s, "Page.navigate", json!({ "url": spec.url })),
    )
    .await;
    match nav {
        Err(_) => run.timed_out = true,
        Ok(Err(e)) => return Err(e),
        Ok(Ok(v)) => {
            if let Some(err) = v
                .get("errorText")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
            {
                if err.contains("CERT") || err.contains("SSL") {
                    run.certificate_error = Some(err.to_owned());
                }
                run.error = Some(format!("navigation failed: {err}"));
            }
        }
    }
    // wait for load, then (optionally) a quiet network window
    let quiet = match spec.wait {
        Wait::Load => None,
        Wait::LoadAndQuiet { quiet_ms } => Some(Duration::from_millis(u64::from(quiet_ms))),
    };
    let mut loaded = run.error.is_some();
    let mut quiet_since = Instant::now();
    while !run.timed_out {
        let now = Instant::now();
        if loaded {
            match quiet {
                None => break,
                Some(q) if fall.inflight.is_empty() && now.duration_since(quiet_since) >= q => {
                    break
                }
                _ => {}
            }
        }
        if now >= deadline {
            run.timed_out = true;
            break;
        }
        let tick = (now + Duration::from_millis(50)).min(deadline);
        match tokio::time::timeout_at(tick.into(), p.events.recv()).await {
            Ok(Some(e)) => match e.method.as_str() {
                "Page.loadEventFired" => loaded = true,
                "Runtime.consoleAPICalled" if e.params["type"] == "error" => keep(
                    &mut run.console_errors,
                    &mut dropped.0,
                    console_entry(&e.params),
                ),
                "Runtime.exceptionThrown" => keep(
                    &mut run.exceptions,
                    &mut dropped.1,
                    exception_entry(&e.params),
                ),
                "Log.entryAdded" if e.params["entry"]["level"] == "error" => keep(
                    &mut run.console_errors,
                    &mut dropped.0,
                    ConsoleEntry {
                        text: e.params["entry"]["text"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        url: e.params["entry"]["url"].as_str().map(str::to_owned),
                    },
                ),
                m if m.starts_with("Network.") => {
                    fall.on_event(m, &e.params);
                    quiet_since = Instant::now();
                }
                _ => {}
            },
            Ok(None) => return Err(anyhow!("the browser closed the page")),
            Err(_) => {}
        }
    }
    // collect what the page measured (short deadlines: the page may be wedged)
    let short = Duration::from_secs(5);
    let collected = tokio::time::timeout(
        short,
        cdp.call(
            s,
            "Runtime.evaluate",
            json!({ "expression": COLLECT_JS, "returnByValue": true }),
        ),
    )
    .await;
    let mut ua = String::new();
    if let Ok(Ok(v)) = collected {
        let data: Value = v["result"]["value"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        ua = data["ua"].as_str().unwrap_or_default().to_owned();
        if !data["nav"].is_null() {
            run.timing = capture::nav_timing(&data["nav"]);
        }
        let v = &data["v"];
        run.first_paint_ms = v["paints"]["first-paint"].as_f64();
        run.first_contentful_paint_ms = v["paints"]["first-contentful-paint"].as_f64();
        run.lcp = capture::lcp(v);
        let pairs = |k: &str| -> Vec<(f64, f64)> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        run.cls = capture::cls(&pairs("shifts"));
        let end = data["now"].as_f64().unwrap_or(0.0);
        (run.tbt, run.long_tasks) =
            capture::tbt(&pairs("longtasks"), run.first_contentful_paint_ms, end);
    }
    if let Ok(Ok(m)) =
        tokio::time::timeout(short, cdp.call(s, "Performance.getMetrics", json!({}))).await
    {
        let metrics: BTreeMap<String, f64> = m["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| Some((x["name"].as_str()?.to_owned(), x["value"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        run.metrics = metrics;
    }
    if spec.screenshot && run.error.is_none() {
        if let Ok(Ok(shot)) = tokio::time::timeout(
            short,
            cdp.call(s, "Page.captureScreenshot", json!({ "format": "png" })),
        )
        .await
        {
            run.screenshot_png_base64 = shot["data"].as_str().map(str::to_owned);
        }
    }
    if let Some((status, url)) = fall.document() {
        run.status = status;
        run.final_url = url;
    }
    for (n, what, cap) in [
        (dropped.0, "console errors", MAX_ENTRIES),
        (dropped.1, "exceptions", MAX_ENTRIES),
        (fall.dropped, "requests", crate::waterfall::MAX_REQUESTS),
    ] {
        if n > 0 {
            run.omitted
                .push(format!("{n} more {what} past the first {cap}"));
        }
    }
    run.redirects = std::mem::take(&mut fall.redirects);
    run.requests = fall.into_requests();
    Ok((run, ua))
}

/// Console errors and exceptions kept per run, and characters kept of each.
const MAX_ENTRIES: usize = 200;
const MAX_TEXT: usize = 4096;

/// Keeps `e` (its text cut to [`MAX_TEXT`] characters) unless the list is full; counts it if so.
fn keep(list: &mut Vec<ConsoleEntry>, dropped: &mut u64, mut e: ConsoleEntry) {
    if list.len() >= MAX_ENTRIES {
        *dropped += 1;
        return;
    }
    if let Some((i, _)) = e.text.char_indices().nth(MAX_TEXT) {
        e.text.truncate(i);
        e.text.push('…');
    }
    list.push(e);
}

/// The report as a job-stream frame of at most `limit` bytes of JSON: screenshots go first,
/// latest run first, then waterfalls, latest run first, each removal noted in its run.
pub fn report_frame(report: Report, limit: usize) -> Vec<u8> {
    use vantage_proto::wire::{encode, JobEvent};
    let mut report = Box::new(report);
    loop {
        let event = JobEvent::Report { report };
        let frame = encode(&event);
        let JobEvent::Report { report: back } = event else {
            unreachable!("built as a report above")
        };
        report = back;
        if frame.len() <= limit + 4 || !shrink(&mut report) {
            return frame;
        }
    }
}

/// Removes the next thing [`report_frame`] gives up; false when nothing is left to remove.
fn shrink(report: &mut Report) -> bool {
    const WHY: &str = "the report was over its size limit";
    if let Some(run) = report
        .runs
        .iter_mut()
        .rev()
        .find(|r| r.screenshot_png_base64.is_some())
    {
        run.screenshot_png_base64 = None;
        run.omitted.push(format!("the screenshot: {WHY}"));
        return true;
    }
    if let Some(run) = report
        .runs
        .iter_mut()
        .rev()
        .find(|r| !r.requests.is_empty())
    {
        let n = run.requests.len();
        run.requests.clear();
        run.omitted.push(format!("all {n} requests: {WHY}"));
        return true;
    }
    false
}

fn console_entry(p: &Value) -> ConsoleEntry {
    let text = p["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x["value"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x["description"].as_str().unwrap_or_default().to_owned())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let url = p["stackTrace"]["callFrames"][0]["url"]
        .as_str()
        .map(str::to_owned);
    ConsoleEntry { text, url }
}

fn exception_entry(p: &Value) -> ConsoleEntry {
    let d = &p["exceptionDetails"];
    let text = d["exception"]["description"]
        .as_str()
        .or(d["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    ConsoleEntry {
        text,
        url: d["url"].as_str().map(str::to_owned),
    }
}
