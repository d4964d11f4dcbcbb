//! History: the reports per URL with a trend of TTFB, LCP and load by region, and a compare
//! view of any two reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use vantage_proto::api::{ReportSummary, StoredReport};
use vantage_proto::Run;

use super::shell;
use crate::cli::table::{fmt_ms, median_run, UNKNOWN};
use crate::report::html::{comparison, esc};
use crate::report::iso8601_utc;
use crate::serve::api::{ApiError, AppState};
use crate::serve::pages::stored_report;

/// Reports a URL's trend is drawn from (newest).
const TREND_REPORTS: usize = 30;
/// Reports scanned for the list of URLs.
const URL_SCAN: usize = 500;
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 180.0;
const PAD: f64 = 36.0;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    url: Option<String>,
}

pub async fn page(
    State(s): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let Some(url) = q.url.filter(|u| !u.is_empty()) else {
        let rows = s.orch.store().reports(None, None, URL_SCAN).await?;
        return Ok(shell("History", &urls(&rows)));
    };
    let rows = s
        .orch
        .store()
        .reports(Some(url.clone()), None, TREND_REPORTS)
        .await?;
    let mut reports = Vec::new();
    for r in &rows {
        if let Some(full) = s.orch.store().report(r.id).await? {
            reports.push(full);
        }
    }
    // oldest first, as a trend reads
    reports.reverse();
    let mut body = format!("<p>{}</p>", esc(&url));
    for (name, get) in METRICS {
        trend(&mut body, name, &reports, get);
    }
    list(&mut body, &rows);
    Ok(shell("History", &body))
}

type Get = fn(&Run) -> Option<f64>;

const METRICS: [(&str, Get); 3] = [
    ("TTFB", |r| Some(r.timing.response_start_ms)),
    ("LCP", |r| r.lcp.as_ref().map(|l| l.time_ms)),
    ("load", |r| r.timing.load_ms),
];

/// The URLs with reports, most recent first, each linking to its history.
fn urls(rows: &[ReportSummary]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for r in rows {
        match seen.iter_mut().find(|(u, _)| *u == r.url) {
            Some((_, n)) => *n += 1,
            None => seen.push((&r.url, 1)),
        }
    }
    if seen.is_empty() {
        return "<p>No reports yet: <a href=\"/run\">run a load</a>.</p>".into();
    }
    let mut out = String::from("<ul id=\"urls\">");
    for (u, n) in seen {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("url", u)
            .finish();
        let _ = write!(
            out,
            "<li><a href=\"/history?{}\">{}</a> <span class=\"mut\">({n} reports)</span></li>",
            esc(&q),
            esc(u)
        );
    }
    out.push_str("</ul>");
    out
}

/// One metric over time, a line per region (median runs that loaded).
fn trend(out: &mut String, name: &str, reports: &[StoredReport], get: Get) {
    let mut lines: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        let v = median_run(&r.report)
            .filter(|run| run.error.is_none())
            .and_then(get);
        if let Some(v) = v {
            lines.entry(&r.region).or_default().push((i, v));
        }
    }
    let _ = write!(out, "<h2>{name} by region</h2>");
    if lines.is_empty() {
        out.push_str("<p class=\"mut\">No values.</p>");
        return;
    }
    let max = lines
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(1.0_f64, f64::max);
    let n = reports.len().max(2) - 1;
    let x = |i: usize| PAD + i as f64 / n as f64 * (CHART_W - 2.0 * PAD);
    let y = |v: f64| CHART_H - PAD / 2.0 - v / max * (CHART_H - PAD);
    let _ = write!(
        out,
        "<svg class=\"wf trend\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{name} trend\"><text x=\"2\" y=\"12\">{}</text><text x=\"2\" y=\"{:.0}\">0</text>",
        fmt_ms(max),
        CHART_H - PAD / 2.0
    );
    for (k, (region, pts)) in lines.iter().enumerate() {
        let color = format!("hsl({},65%,42%)", k * 67 % 360);
        let path: Vec<String> = pts
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
            .collect();
        let _ = write!(
            out,
            "<g><title>{}</title><polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            esc(region),
            path.join(" ")
        );
        for (i, v) in pts {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} #{}: {}</title></circle>",
                x(*i),
                y(*v),
                esc(region),
                reports[*i].id,
                fmt_ms(*v)
            );
        }
        let (lx, ly) = pts.last().map_or((0.0, 0.0), |(i, v)| (x(*i), y(*v)));
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text></g>",
            (lx + 5.0).min(CHART_W - 30.0),
            ly,
            esc(region)
        );
    }
    out.push_str("</svg>");
}

/// The reports, newest first, and a form to compare two of them.
fn list(out: &mut String, rows: &[ReportSummary]) {
    out.push_str("<h2>Reports</h2><form method=\"get\" action=\"/compare\"><div class=\"scroll\"><table id=\"reports\"><thead><tr><th>A</th><th>B</th><th>report</th><th class=\"l\">started (UTC)</th><th class=\"l\">region</th><th>status</th><th>TTFB</th><th>load</th></tr></thead><tbody>");
    for (i, r) in rows.iter().enumerate() {
        let opt = |v: Option<f64>| v.map(fmt_ms).unwrap_or_else(|| UNKNOWN.into());
        let _ = write!(
            out,
            "<tr><td><input type=\"radio\" name=\"a\" value=\"{id}\"{}></td><td><input type=\"radio\" name=\"b\" value=\"{id}\"{}></td><td><a href=\"/reports/{id}\">#{id}</a></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if i == 1 { " checked" } else { "" },
            if i == 0 { " checked" } else { "" },
            esc(&iso8601_utc(r.started_unix_ms as f64).replace('T', " ")),
            esc(&r.region),
            r.status,
            opt(r.ttfb_ms),
            opt(r.load_ms),
            id = r.id
        );
    }
    out.push_str("</tbody></table></div><button type=\"submit\">Compare A and B</button></form>");
}

#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    a: String,
    b: String,
}

/// Two reports side by side, each labelled by its number, region and time.
pub async fn compare(
    State(s): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> Result<Response, ApiError> {
    let mut pair = [
        stored_report(&s, &q.a).await?,
        stored_report(&s, &q.b).await?,
    ];
    let mut links = String::from("<ul>");
    for r in &mut pair {
        let _ = write!(
            links,
            "<li><a href=\"/reports/{0}\">#{0}</a>: {1} from {2}</li>",
            r.id,
            esc(&r.report.job.url),
            esc(&r.region)
        );
        r.region = format!(
            "#{} {} {}",
            r.id,
            r.region,
            iso8601_utc(r.report.started_unix_ms as f64).replace('T', " ")
        );
    }
    links.push_str("</ul>");
    Ok(shell("Compare", &format!("{links}{}", comparison(&pair))))
}
