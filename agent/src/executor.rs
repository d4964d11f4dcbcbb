//! Runs a page-load job against the local browser: a fresh browser context per cold run (taken
//! from the [`PagePool`] when one was opened ahead), the same context again for a warm run, everything captured from CDP events and the page's own
//! performance entries, and a deadline on every phase so a page that never settles still yields a
//! partial report.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vantage_proto::{JobSpec, Report, Run, RunView, Summary, View, SCHEMA_VERSION};

use crate::capture::{self, COLLECT_JS};
use crate::cdp::Cdp;
use crate::egress::Guard;
use crate::load::{End, Watch};
use crate::page::{self, PageCtx, PagePool};

/// Who ran the job, for the report.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub region: String,
    pub node: String,
    pub browser_version: String,
    /// The egress guard the browser goes through, if it is on.
    pub guard: Option<Guard>,
}

impl RunContext {
    /// The report of `runs` of `spec`, as this agent ran them.
    pub fn report(
        &self,
        spec: &JobSpec,
        started_unix_ms: u64,
        user_agent: String,
        runs: Vec<Run>,
        summary: Option<Summary>,
    ) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            job: spec.clone(),
            started_unix_ms,
            region: self.region.clone(),
            node: self.node.clone(),
            browser_version: self.browser_version.clone(),
            user_agent,
            runs,
            summary,
        }
    }
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
        for &view in views {
            let _ = progress.send(Progress::RunStarted { index, view });
            let mut begin = Begin {
                at: start_at.take(),
                unix_ms: unix_ms(),
            };
            let synchronized = begin.at.is_some();
            let contexts = Contexts {
                pool,
                guard: ctx.guard.as_ref(),
            };
            let result = run_once(cdp, spec, contexts, &mut page, index, view, &mut begin).await;
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
            // the context's own lane: a warm run's connections were made in its cold run
            if let Some(outcomes) = page.as_ref().and_then(PageCtx::outcomes) {
                crate::egress::annotate(&mut run, &outcomes);
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
    ctx.report(spec, started_unix_ms, user_agent, runs, summary)
}

/// Where a cold run's context comes from: the pool's spare or a new one, through a lane of the
/// guard if it is on.
#[derive(Clone, Copy)]
struct Contexts<'a> {
    pool: &'a PagePool,
    guard: Option<&'a Guard>,
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

/// One run: a context for a cold view (the warm view reuses it), the navigation, its events
/// until the run is over, then what the page measured.
async fn run_once(
    cdp: &Cdp,
    spec: &JobSpec,
    contexts: Contexts<'_>,
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
        *page = Some(open_context(cdp, spec, contexts, deadline).await?);
    }
    let p = page
        .as_mut()
        .ok_or_else(|| anyhow!("no page for a warm run"))?;
    if let Some(at) = begin.at {
        wait_until(at).await;
        // the wait is not the page's time: the load gets its whole timeout from the start
        deadline = Instant::now() + timeout;
    }
    p.drain_stale();
    begin.unix_ms = unix_ms();
    let mut run = Run {
        index,
        view: Some(view),
        url: spec.url.clone(),
        started_unix_ms: begin.unix_ms,
        viewport: Some(spec.viewport),
        ..Run::default()
    };
    let loader = navigate(cdp, p, spec, &mut run, deadline).await?;
    let mut watch = Watch::new(loader, p.stale.clone(), run.error.is_some());
    let end = if run.timed_out {
        End::TimedOut
    } else {
        watch.follow(&mut p.events, spec.wait, deadline).await
    };
    p.stale.extend(watch.fall.loaders().cloned());
    let mut ua = String::new();
    match &end {
        End::Settled => {}
        End::NeverQuiet => run.omitted.push(
            "network activity past the deadline: the page never went quiet after load".into(),
        ),
        End::TimedOut => run.timed_out = true,
        // a dead page answers nothing: report what the events said, without waiting on it
        End::Gone(why) => run.error = Some(why.clone()),
    }
    if !matches!(end, End::Gone(_)) {
        ua = collect(cdp, &p.session, spec, &mut run, deadline).await;
    }
    watch.finish(&mut run);
    let dropped = p.events.dropped();
    if dropped > 0 {
        run.omitted.push(format!(
            "{dropped} browser events: the page sent them faster than the agent could read"
        ));
    }
    Ok((run, ua))
}

/// A configured context for a cold run: the pool's spare if it opened, else a new one.
async fn open_context(
    cdp: &Cdp,
    spec: &JobSpec,
    contexts: Contexts<'_>,
    deadline: Instant,
) -> Result<PageCtx> {
    tokio::time::timeout_at(deadline.into(), async {
        // a spare that failed to open (its browser went away) is not worth a failed run
        let p = match contexts.pool.take(cdp, contexts.guard).await {
            Ok(Ok(p)) => p,
            _ => page::open(cdp, contexts.guard)
                .await
                .map_err(|e| anyhow!("opening a browser context failed: {e}"))??,
        };
        p.configure(spec).await?;
        Ok::<_, anyhow::Error>(p)
    })
    .await
    .map_err(|_| anyhow!("timed out opening a browser context"))?
}

/// Navigates to the job's URL; the navigation's loader, if it said. A navigation error (DNS,
/// refused, TLS) goes into the run, not the result: the run still reports what it saw.
async fn navigate(
    cdp: &Cdp,
    p: &PageCtx,
    spec: &JobSpec,
    run: &mut Run,
    deadline: Instant,
) -> Result<Option<String>> {
    let left = deadline.saturating_duration_since(Instant::now());
    let nav = cdp
        .call_within(
            Some(&p.session),
            "Page.navigate",
            json!({ "url": spec.url }),
            left,
        )
        .await;
    let v = match nav {
        Err(_) if Instant::now() >= deadline => {
            run.timed_out = true;
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(v) => v,
    };
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
    Ok(v.get("loaderId").and_then(Value::as_str).map(str::to_owned))
}

/// What the page measured, its metrics and (if asked) a screenshot, into `run`; the page's user
/// agent. Each call may take what is left of the run's deadline, and at least a few seconds: a
/// renderer still laying out a huge page answers late, a wedged one never.
async fn collect(
    cdp: &Cdp,
    session: &str,
    spec: &JobSpec,
    run: &mut Run,
    deadline: Instant,
) -> String {
    const LEAST: Duration = Duration::from_secs(5);
    let s = Some(session);
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(LEAST)
    };
    let collected = cdp
        .call_within(
            s,
            "Runtime.evaluate",
            json!({ "expression": COLLECT_JS, "returnByValue": true }),
            left(),
        )
        .await;
    let mut ua = String::new();
    if let Ok(v) = collected {
        let data: Value = v["result"]["value"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        ua = data["ua"].as_str().unwrap_or_default().to_owned();
        capture::page_data(&data, run);
    }
    if let Ok(m) = cdp
        .call_within(s, "Performance.getMetrics", json!({}), left())
        .await
    {
        run.metrics = m["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| Some((x["name"].as_str()?.to_owned(), x["value"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
    }
    if spec.screenshot && run.error.is_none() {
        if let Ok(shot) = cdp
            .call_within(
                s,
                "Page.captureScreenshot",
                json!({ "format": "png" }),
                left(),
            )
            .await
        {
            run.screenshot_png_base64 = shot["data"].as_str().map(str::to_owned);
        }
    }
    ua
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
