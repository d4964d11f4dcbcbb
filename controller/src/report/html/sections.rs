//! The report's sections, each appended to the page body as HTML text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vantage_proto::api::{LoadStatus, StoredReport};
use vantage_proto::{Report, Run, RunView};

use super::esc;
use super::waterfall;
use crate::cli::table::{
    every_run_failed, fmt_bytes, fmt_delta, fmt_ms, load_notes, median_run, outcome_name,
    report_notes, UNKNOWN,
};
use crate::report::iso8601_utc;

/// The page's head for a whole load: URL, when, from where, which browser, the verdict.
pub fn load_summary(out: &mut String, status: &LoadStatus) {
    let regions: Vec<&str> = status.reports.iter().map(|r| r.region.as_str()).collect();
    let browsers = distinct(status.reports.iter().map(|r| browser(&r.report)));
    head(
        out,
        &status.request.url,
        status.created_unix_ms,
        &regions.join(", "),
        &browsers,
    );
    verdict_line(
        out,
        &status.reports,
        status.failure.as_ref().map(|f| &f.message),
    );
    notes(out, &load_notes(status));
}

/// The page's head for one report.
pub fn report_summary(out: &mut String, r: &StoredReport) {
    let from = if r.agent_region.is_empty() || r.agent_region == r.region {
        format!("{} ({})", r.region, r.agent)
    } else {
        format!("{} (ran in {} on {})", r.region, r.agent_region, r.agent)
    };
    head(
        out,
        &r.report.job.url,
        r.report.started_unix_ms,
        &from,
        &browser(&r.report),
    );
    verdict_line(out, std::slice::from_ref(r), None);
    notes(out, &report_notes(r));
}

fn head(out: &mut String, url: &str, when_ms: u64, from: &str, browser: &str) {
    let _ = writeln!(
        out,
        "<h1>{}</h1>\n<p class=\"mut\">{} UTC · from {} · {}</p>",
        esc(url),
        esc(&iso8601_utc(when_ms as f64).replace('T', " ")),
        esc(from),
        esc(browser)
    );
}

fn browser(r: &Report) -> String {
    if r.browser_version.is_empty() {
        "browser unknown".into()
    } else {
        r.browser_version.clone()
    }
}

fn distinct(items: impl Iterator<Item = String>) -> String {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

fn verdict_line(out: &mut String, reports: &[StoredReport], failure: Option<&String>) {
    let (text, bad) = verdict(reports, failure);
    let _ = writeln!(
        out,
        "<p class=\"verdict{}\" id=\"verdict\">{}</p>",
        if bad { " bad" } else { "" },
        esc(&text)
    );
}

/// One line saying how it went: the fastest and slowest region by load time, or what failed.
fn verdict(reports: &[StoredReport], failure: Option<&String>) -> (String, bool) {
    if let Some(f) = failure {
        return (format!("The load failed: {f}"), true);
    }
    let loaded: Vec<(&str, f64)> = reports
        .iter()
        .filter_map(|r| {
            let run = median_run(&r.report).filter(|run| run.error.is_none())?;
            Some((r.region.as_str(), run.timing.load_ms?))
        })
        .collect();
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| every_run_failed(&r.report) || r.report.runs.is_empty())
        .map(|r| r.region.as_str())
        .collect();
    let mut text = match (
        loaded.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        loaded.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) {
        (Some(best), Some(worst)) if loaded.len() > 1 => format!(
            "Loaded in {} from {} (fastest) to {} from {} (slowest, {}).",
            fmt_ms(best.1),
            best.0,
            fmt_ms(worst.1),
            worst.0,
            fmt_delta(worst.1 - best.1)
        ),
        (Some(best), _) => format!("Loaded in {} from {}.", fmt_ms(best.1), best.0),
        _ => "The page did not load in any region.".into(),
    };
    if !failed.is_empty() {
        let _ = write!(text, " Every run failed in {}.", failed.join(", "));
    }
    (text, loaded.is_empty() || !failed.is_empty())
}

fn notes(out: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    out.push_str("<h3>Notes</h3><ul id=\"notes\">");
    for n in notes {
        let _ = write!(out, "<li>{}</li>", esc(n));
    }
    out.push_str("</ul>\n");
}

/// The regions side by side (median runs): the network floor (estimated RTT) beside TTFB, and
/// each metric's distance to the best region.
pub fn comparison(out: &mut String, reports: &[StoredReport]) {
    out.push_str("<h2>Regions compared</h2>\n<div class=\"scroll\"><table id=\"comparison\"><thead><tr><th>region</th><th>est. RTT</th><th>TTFB</th><th>Δ</th><th>FCP</th><th>LCP</th><th>Δ</th><th>load</th><th>Δ</th><th>CLS</th><th>TBT</th><th>requests</th><th>bytes</th></tr></thead><tbody>\n");
    let medians: Vec<Option<&Run>> = reports
        .iter()
        .map(|r| median_run(&r.report).filter(|run| run.error.is_none()))
        .collect();
    let best = |get: fn(&Run) -> Option<f64>| {
        medians
            .iter()
            .flatten()
            .filter_map(|r| get(r))
            .min_by(f64::total_cmp)
    };
    let ttfb: fn(&Run) -> Option<f64> = |r| Some(r.timing.response_start_ms);
    let lcp: fn(&Run) -> Option<f64> = |r| r.lcp.as_ref().map(|l| l.time_ms);
    let load: fn(&Run) -> Option<f64> = |r| r.timing.load_ms;
    let (b_ttfb, b_lcp, b_load) = (best(ttfb), best(lcp), best(load));
    for (r, run) in reports.iter().zip(&medians) {
        let rtt = r.estimated_rtt_ms.map(fmt_ms);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            esc(&r.region),
            rtt.as_deref().unwrap_or(UNKNOWN)
        );
        let Some(run) = run else {
            out.push_str("<td colspan=\"11\" class=\"l bad\">failed</td></tr>\n");
            continue;
        };
        let cell = |v: Option<f64>| v.map(fmt_ms).unwrap_or_else(|| UNKNOWN.into());
        let delta = |v: Option<f64>, b: Option<f64>| match (v, b) {
            (Some(v), Some(b)) => fmt_delta(v - b),
            _ => UNKNOWN.into(),
        };
        let bytes: u64 = run.requests.iter().map(|q| q.encoded_bytes).sum();
        let _ = writeln!(
            out,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(ttfb(run)),
            delta(ttfb(run), b_ttfb),
            cell(run.first_contentful_paint_ms),
            cell(lcp(run)),
            delta(lcp(run), b_lcp),
            cell(load(run)),
            delta(load(run), b_load),
            run.cls,
            fmt_ms(run.tbt.ms),
            run.requests.len(),
            fmt_bytes(bytes)
        );
    }
    out.push_str("</tbody></table></div>\n<p class=\"mut\">Median runs. TTFB is navigation start to first byte; est. RTT (Vivaldi, controller to agent) is the network floor under it for a page served next to the controller.</p>\n");
}

/// One region in detail: the median run's waterfall and what it found, then every run.
pub fn region(out: &mut String, r: &StoredReport) {
    let _ = writeln!(
        out,
        "<section class=\"region\" data-region=\"{0}\"><h2>{0} · {1}</h2>",
        esc(&r.region),
        esc(&r.agent)
    );
    attempts(out, r);
    let Some(run) = median_run(&r.report) else {
        out.push_str("<p class=\"bad\">No runs came back.</p></section>\n");
        return;
    };
    let _ = writeln!(
        out,
        "<h3>Waterfall of run {} ({})</h3>",
        run.index,
        view_name(run.view)
    );
    if let Some(e) = &run.error {
        let _ = writeln!(out, "<p class=\"bad\">This run failed: {}</p>", esc(e));
    }
    if run.timed_out {
        out.push_str(
            "<p class=\"bad\">This run timed out; what was captured until then is shown.</p>\n",
        );
    }
    waterfall::render(out, run);
    page_findings(out, run);
    breakdown(out, run);
    if let Some(png) = &run.screenshot_png_base64 {
        let _ = writeln!(
            out,
            "<h3>Screenshot</h3><img class=\"shot\" alt=\"screenshot of run {}\" src=\"data:image/png;base64,{}\">",
            run.index,
            esc(png)
        );
    }
    stats(out, &r.report);
    runs(out, &r.report);
    out.push_str("</section>\n");
}

fn view_name(v: Option<RunView>) -> &'static str {
    match v {
        Some(RunView::Warm) => "warm",
        _ => "cold",
    }
}

fn attempts(out: &mut String, r: &StoredReport) {
    if let Some(note) = &r.note {
        let _ = writeln!(out, "<p><b>Fallback:</b> {}</p>", esc(note));
    }
    if r.attempts.len() <= 1 {
        return;
    }
    out.push_str("<div class=\"scroll\"><table><thead><tr><th>attempt</th><th class=\"l\">agent</th><th class=\"l\">outcome</th><th class=\"l\">detail</th></tr></thead><tbody>");
    for a in &r.attempts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"wrap\">{}</td></tr>",
            a.number,
            esc(&a.agent),
            a.outcome.map(outcome_name).unwrap_or("running"),
            esc(a.detail.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// The LCP element, layout shifts, long tasks, console errors and exceptions.
fn page_findings(out: &mut String, run: &Run) {
    out.push_str("<h3>What the page did</h3><ul>");
    match &run.lcp {
        Some(l) => {
            let _ = write!(
                out,
                "<li>LCP at {}: <code>{}</code>{} ({:.0} px²)</li>",
                fmt_ms(l.time_ms),
                esc(&l.element),
                l.url
                    .as_deref()
                    .map(|u| format!(", {}", esc(u)))
                    .unwrap_or_default(),
                l.size
            );
        }
        None => out.push_str("<li>No LCP was recorded.</li>"),
    }
    let _ = write!(
        out,
        "<li>Layout shifts: CLS {:.3} (session windows of at most 5 s, 1 s gap).</li>\
<li>Total blocking time {} between {} and {}.</li>",
        run.cls,
        fmt_ms(run.tbt.ms),
        fmt_ms(run.tbt.from_ms),
        fmt_ms(run.tbt.to_ms)
    );
    if run.long_tasks.is_empty() {
        out.push_str("<li>No long tasks.</li>");
    } else {
        let tasks: Vec<String> = run
            .long_tasks
            .iter()
            .map(|t| format!("{} at {}", fmt_ms(t.duration_ms), fmt_ms(t.start_ms)))
            .collect();
        let _ = write!(
            out,
            "<li>{} long tasks: {}.</li>",
            tasks.len(),
            tasks.join(", ")
        );
    }
    for (what, list) in [
        ("Console error", &run.console_errors),
        ("Exception", &run.exceptions),
    ] {
        for e in list {
            let _ = write!(out, "<li class=\"bad\">{what}: {}</li>", esc(&e.text));
        }
    }
    out.push_str("</ul>\n");
}

/// Requests and bytes by resource type and by domain.
fn breakdown(out: &mut String, run: &Run) {
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut by_domain: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for q in &run.requests {
        let t = by_type.entry(q.resource_type.clone()).or_default();
        t.0 += 1;
        t.1 += q.encoded_bytes;
        let host = url::Url::parse(&q.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "(no host)".into());
        let d = by_domain.entry(host).or_default();
        d.0 += 1;
        d.1 += q.encoded_bytes;
    }
    for (title, map) in [("type", by_type), ("domain", by_domain)] {
        let mut rows: Vec<(String, (usize, u64))> = map.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
        let _ = write!(
            out,
            "<h3>Requests by {title}</h3><div class=\"scroll\"><table><thead><tr><th>{title}</th><th>requests</th><th>bytes</th></tr></thead><tbody>"
        );
        for (k, (n, bytes)) in rows {
            let _ = write!(
                out,
                "<tr><td class=\"wrap\">{}</td><td>{n}</td><td>{}</td></tr>",
                esc(&k),
                fmt_bytes(bytes)
            );
        }
        out.push_str("</tbody></table></div>\n");
    }
}

/// min/p50/p90/max across the cold runs, naming the median-run rule.
fn stats(out: &mut String, report: &Report) {
    let Some(s) = &report.summary else {
        if report.runs.len() > 1 {
            out.push_str("<p class=\"mut\">No run statistics: no run loaded.</p>\n");
        }
        return;
    };
    out.push_str("<h3>Run statistics</h3><div class=\"scroll\"><table><thead><tr><th>metric</th><th>min</th><th>p50</th><th>p90</th><th>max</th></tr></thead><tbody>");
    for (name, st) in &s.stats {
        let f = |v: f64| {
            if name.ends_with("_ms") {
                fmt_ms(v)
            } else {
                format!("{v:.3}")
            }
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            f(st.min),
            f(st.p50),
            f(st.p90),
            f(st.max)
        );
    }
    let _ = writeln!(
        out,
        "</tbody></table></div><p class=\"mut\">Median run: {}.</p>",
        esc(&s.rule)
    );
}

/// Every run in one line each, with what it left out.
fn runs(out: &mut String, report: &Report) {
    out.push_str("<h3>Runs</h3><div class=\"scroll\"><table><thead><tr><th>run</th><th class=\"l\">view</th><th>status</th><th>TTFB</th><th>load</th><th>requests</th><th class=\"l\">notes</th></tr></thead><tbody>");
    for run in &report.runs {
        let mut notes: Vec<String> = Vec::new();
        notes.extend(run.error.iter().map(|e| format!("failed: {e}")));
        notes.extend(
            run.certificate_error
                .iter()
                .map(|e| format!("certificate: {e}")),
        );
        if run.timed_out {
            notes.push("timed out".into());
        }
        notes.extend(run.omitted.iter().map(|o| format!("omitted: {o}")));
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
            run.index,
            view_name(run.view),
            run.status,
            fmt_ms(run.timing.response_start_ms),
            run.timing.load_ms.map(fmt_ms).unwrap_or_else(|| UNKNOWN.into()),
            run.requests.len(),
            esc(&notes.join("; "))
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// Regions that never produced a report, and why.
pub fn failed_targets(out: &mut String, status: &LoadStatus) {
    let failed: Vec<_> = status
        .targets
        .iter()
        .filter(|t| t.report_id.is_none())
        .collect();
    if failed.is_empty() {
        return;
    }
    out.push_str("<h2>Regions without a report</h2><ul>");
    for t in failed {
        let why = t
            .failure
            .as_ref()
            .map(|f| f.message.as_str())
            .unwrap_or(t.state.as_str());
        let _ = write!(out, "<li>{}: {}</li>", esc(&t.region), esc(why));
    }
    out.push_str("</ul>\n");
}
