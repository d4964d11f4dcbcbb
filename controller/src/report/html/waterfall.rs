//! A run's waterfall as inline SVG: one row per request in start order, its HAR phases as
//! coloured bars, a `<title>` per row for the hover, and the FCP, LCP, DOMContentLoaded and load
//! markers. Failed and blocked requests are marked in the label and outlined in red.

use std::fmt::Write as _;

use vantage_proto::{Request, Run};

use super::esc;
use crate::cli::table::{fmt_bytes, fmt_ms};

/// The class of a request's row, one `<g>` per request (the tests count them).
pub const ROW_CLASS: &str = "req";

/// viewBox width: the label column (up to `CHART_X`), then the time axis.
const WIDTH: f64 = 1000.0;
const CHART_X: f64 = 310.0;
const CHART_W: f64 = WIDTH - CHART_X - 10.0;
const ROW_H: f64 = 16.0;
const AXIS_H: f64 = 28.0;
/// Longest label, in characters, before it is cut with `…`.
const LABEL_CHARS: usize = 46;

/// The phases in drawing order, with their colours.
const PHASES: [(&str, &str); 7] = [
    ("blocked", "#bdbdbd"),
    ("dns", "#26a69a"),
    ("connect", "#ff9800"),
    ("ssl", "#9c27b0"),
    ("send", "#42a5f5"),
    ("wait", "#66bb6a"),
    ("receive", "#1565c0"),
];

/// Page milestones drawn across the rows.
const MARKER_COLORS: [(&str, &str); 4] = [
    ("FCP", "#00897b"),
    ("LCP", "#d81b60"),
    ("DCL", "#3949ab"),
    ("load", "#6d4c41"),
];

pub fn render(out: &mut String, run: &Run) {
    let mut requests: Vec<&Request> = run.requests.iter().collect();
    requests.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let markers = markers(run);
    let span = requests
        .iter()
        .map(|q| q.start_ms + total(q))
        .chain(markers.iter().map(|m| m.1))
        .fold(1.0_f64, f64::max);
    legend(out);
    let height = AXIS_H + ROW_H * requests.len() as f64 + 4.0;
    let _ = write!(
        out,
        "<div class=\"scroll\"><svg class=\"wf\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"waterfall of {} requests\">",
        requests.len()
    );
    axis(out, span, height);
    for (i, q) in requests.iter().enumerate() {
        row(out, i, q, span);
    }
    for (name, at) in &markers {
        let x = CHART_X + at / span * CHART_W;
        let color = MARKER_COLORS
            .iter()
            .find(|c| c.0 == *name)
            .map_or("#000", |c| c.1);
        let _ = write!(
            out,
            "<g class=\"marker\"><title>{name} at {}</title><line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"14\" y2=\"{height}\" stroke=\"{color}\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/><text x=\"{x:.1}\" y=\"10\" text-anchor=\"middle\" fill=\"{color}\">{name}</text></g>",
            fmt_ms(*at)
        );
    }
    out.push_str("</svg></div>\n");
    if requests.is_empty() {
        out.push_str("<p class=\"mut\">No requests were recorded.</p>\n");
    }
}

fn legend(out: &mut String) {
    out.push_str("<p class=\"legend\">");
    for (name, color) in PHASES {
        let _ = write!(
            out,
            "<span><i style=\"background:{color}\"></i>{name}</span>"
        );
    }
    out.push_str("<span class=\"bad\">✕ failed</span><span class=\"bad\">⊘ blocked</span><span>◌ unfinished</span></p>\n");
}

fn markers(run: &Run) -> Vec<(&'static str, f64)> {
    [
        ("FCP", run.first_contentful_paint_ms),
        ("LCP", run.lcp.as_ref().map(|l| l.time_ms)),
        ("DCL", run.timing.dom_content_loaded_ms),
        ("load", run.timing.load_ms),
    ]
    .into_iter()
    .filter_map(|(n, v)| Some((n, v.filter(|v| v.is_finite() && *v >= 0.0)?)))
    .collect()
}

/// Time ticks at a round step, about six across.
fn axis(out: &mut String, span: f64, height: f64) {
    let step = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5,
    ]
    .into_iter()
    .find(|s| span / s <= 8.0)
    .unwrap_or(2e5);
    let mut t = 0.0;
    while t <= span {
        let x = CHART_X + t / span * CHART_W;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{height}\" stroke=\"#eceff1\"/><text x=\"{x:.1}\" y=\"24\" text-anchor=\"middle\" fill=\"#5b6570\">{}</text>",
            AXIS_H - 2.0,
            fmt_ms(t)
        );
        t += step;
    }
}

/// The sum of the phases that happened (ssl is inside connect).
fn total(q: &Request) -> f64 {
    crate::report::har::entry_time(&q.timings)
}

fn row(out: &mut String, i: usize, q: &Request, span: f64) {
    let y = AXIS_H + i as f64 * ROW_H;
    let blocked = q
        .failed
        .as_deref()
        .is_some_and(|f| f.to_ascii_lowercase().contains("blocked"));
    let mark = if blocked {
        "⊘ "
    } else if q.failed.is_some() {
        "✕ "
    } else if q.unfinished {
        "◌ "
    } else {
        ""
    };
    let bad = q.failed.is_some();
    let _ = write!(
        out,
        "<g class=\"{ROW_CLASS}{}\"><title>{}</title><rect class=\"bg\" x=\"0\" y=\"{y}\" width=\"{WIDTH}\" height=\"{ROW_H}\" fill=\"transparent\"/><text x=\"4\" y=\"{:.1}\"{}>{}{}</text>",
        if bad { " failed" } else { "" },
        esc(&hover(q)),
        y + ROW_H - 4.0,
        if bad { " fill=\"#c62828\"" } else { "" },
        mark,
        esc(&label(&q.url, LABEL_CHARS))
    );
    let scale = CHART_W / span;
    let mut x = CHART_X + q.start_ms.max(0.0) * scale;
    let t = &q.timings;
    let connect = t.connect.unwrap_or(0.0).max(0.0);
    let ssl = t.ssl.unwrap_or(0.0).max(0.0).min(connect);
    let phases = [
        t.blocked.unwrap_or(0.0),
        t.dns.unwrap_or(0.0),
        connect - ssl,
        ssl,
        t.send,
        t.wait,
        t.receive,
    ];
    let start_x = x;
    for (ms, (_, color)) in phases.iter().zip(PHASES) {
        let w = ms.max(0.0) * scale;
        if w > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{x:.2}\" y=\"{:.1}\" width=\"{w:.2}\" height=\"{:.1}\" fill=\"{color}\"/>",
                y + 3.0,
                ROW_H - 6.0
            );
            x += w;
        }
    }
    if bad {
        // a failed request may have no phases at all: its outline still shows where it started
        let w = (x - start_x).max(3.0);
        let _ = write!(
            out,
            "<rect x=\"{start_x:.2}\" y=\"{:.1}\" width=\"{w:.2}\" height=\"{:.1}\" fill=\"none\" stroke=\"#c62828\" stroke-width=\"1.5\"/>",
            y + 2.0,
            ROW_H - 4.0
        );
    }
    out.push_str("</g>");
}

/// Host and path, without scheme and query noise, cut to `max` characters.
fn label(url: &str, max: usize) -> String {
    let short = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_owned();
    if short.chars().count() <= max {
        return short;
    }
    let mut cut: String = short.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// What the hover shows: the request, its outcome and every phase.
fn hover(q: &Request) -> String {
    let mut s = format!("{} {}\n", q.method, q.url);
    match &q.failed {
        Some(f) => {
            let _ = writeln!(s, "failed: {f}");
        }
        None => {
            let _ = writeln!(s, "{} {} · {}", q.status, q.status_text, q.mime);
        }
    }
    let _ = writeln!(
        s,
        "{} on the wire, {} body{}{}",
        fmt_bytes(q.encoded_bytes),
        fmt_bytes(q.body_bytes),
        if q.from_cache { ", from cache" } else { "" },
        if q.unfinished { ", unfinished" } else { "" }
    );
    let _ = write!(
        s,
        "starts at {}, takes {}",
        fmt_ms(q.start_ms),
        fmt_ms(total(q))
    );
    let t = &q.timings;
    for (name, v) in [
        ("blocked", t.blocked),
        ("dns", t.dns),
        ("connect", t.connect),
        ("ssl", t.ssl),
        ("send", Some(t.send)),
        ("wait", Some(t.wait)),
        ("receive", Some(t.receive)),
    ] {
        if let Some(v) = v.filter(|v| *v > 0.0) {
            let _ = write!(s, "\n{name} {}", fmt_ms(v));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cut_by_characters() {
        assert_eq!(label("https://a.test/x", 46), "a.test/x");
        let long = format!("https://a.test/{}", "é".repeat(100));
        let l = label(&long, 10);
        assert_eq!(l.chars().count(), 10);
        assert!(l.ends_with('…'));
    }
}
