//! The Fleet page: members with region, state, browser, load and version; a 2-D projection of
//! their Vivaldi coordinates (regions cluster); the estimated RTT between any two.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Response;
use vantage_fleet::tags;
use vantage_proto::api::MemberInfo;

use super::projection::pca_2d;
use super::shell;
use crate::cli::table::{fmt_ms, UNKNOWN};
use crate::report::html::esc;
use crate::serve::api::{member_infos, AppState};
use crate::serve::fleet::FleetView;

/// Most members in the RTT matrix (it grows as the square).
const MATRIX_MAX: usize = 24;
const PLOT_W: f64 = 640.0;
const PLOT_H: f64 = 420.0;
const PAD: f64 = 40.0;

pub async fn page(State(s): State<AppState>) -> Response {
    let view = s.orch.fleet();
    let members = member_infos(&view);
    let mut body = String::new();
    members_table(&mut body, &members);
    plot(&mut body, &members);
    matrix(&mut body, &view, &members);
    shell("Fleet", &body)
}

fn tag<'a>(m: &'a MemberInfo, k: &str) -> &'a str {
    m.tags.get(k).map_or(UNKNOWN, String::as_str)
}

fn members_table(out: &mut String, members: &[MemberInfo]) {
    out.push_str("<div class=\"scroll\"><table id=\"members\"><thead><tr><th>name</th><th class=\"l\">region</th><th class=\"l\">role</th><th class=\"l\">state</th><th class=\"l\">browser</th><th>load</th><th class=\"l\">version</th><th>est. RTT</th></tr></thead><tbody>");
    for m in members {
        let load = match (m.tags.get(tags::JOBS), m.tags.get(tags::CAPACITY)) {
            (Some(j), Some(c)) => format!("{j} / {c}"),
            (Some(j), None) => j.clone(),
            _ => UNKNOWN.into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td></tr>",
            esc(&m.name),
            esc(tag(m, tags::REGION)),
            esc(tag(m, tags::ROLE)),
            esc(&m.state),
            esc(tag(m, tags::BROWSER)),
            esc(&load),
            esc(tag(m, tags::VERSION)),
            m.rtt_ms.map(fmt_ms).unwrap_or_else(|| UNKNOWN.into())
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// A stable colour per region.
fn region_color(region: &str) -> String {
    let h = region
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("hsl({},65%,42%)", h % 360)
}

fn plot(out: &mut String, members: &[MemberInfo]) {
    let placed: Vec<&MemberInfo> = members.iter().filter(|m| m.coordinate.is_some()).collect();
    out.push_str("<h2>Network coordinates</h2>");
    if placed.is_empty() {
        out.push_str(
            "<p class=\"mut\">No coordinates yet; they settle within a minute of joining.</p>\n",
        );
        return;
    }
    let vecs: Vec<Vec<f64>> = placed
        .iter()
        .filter_map(|m| m.coordinate.as_ref().map(|c| c.vec.clone()))
        .collect();
    // seconds to milliseconds
    let xy: Vec<(f64, f64)> = pca_2d(&vecs)
        .into_iter()
        .map(|(x, y)| (x * 1e3, y * 1e3))
        .collect();
    let extent = xy
        .iter()
        .flat_map(|(x, y)| [x.abs(), y.abs()])
        .fold(1.0_f64, f64::max);
    let scale = ((PLOT_W - 2.0 * PAD) / 2.0).min((PLOT_H - 2.0 * PAD) / 2.0) / extent;
    let (cx, cy) = (PLOT_W / 2.0, PLOT_H / 2.0);
    let _ = write!(
        out,
        "<svg id=\"coords\" class=\"wf\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {PLOT_W} {PLOT_H}\" role=\"img\" aria-label=\"members placed by their network coordinates\"><rect x=\"0\" y=\"0\" width=\"{PLOT_W}\" height=\"{PLOT_H}\" fill=\"#fafbfc\" stroke=\"#d8dde3\"/>"
    );
    // a 50 ms scale bar, so distances on the picture read as RTT
    let bar = 50.0 * scale;
    let _ = write!(
        out,
        "<line x1=\"{PAD}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#5b6570\" stroke-width=\"2\"/><text x=\"{PAD}\" y=\"{:.1}\">50 ms</text>",
        PAD + bar,
        PLOT_H - 14.0,
        PLOT_H - 14.0,
        PLOT_H - 20.0
    );
    for (m, (x, y)) in placed.iter().zip(&xy) {
        let region = tag(m, tags::REGION);
        let (px, py) = (cx + x * scale, cy - y * scale);
        let _ = write!(
            out,
            "<g class=\"member\"><title>{} ({}), {}</title><circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"6\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            esc(&m.name),
            esc(region),
            esc(tag(m, tags::ROLE)),
            region_color(region),
            px + 8.0,
            py + 4.0,
            esc(&m.name)
        );
    }
    out.push_str("</svg>\n<p class=\"mut\">The first two principal components of the members' Vivaldi coordinates (heights left out); distance on the picture approximates RTT.</p>\n");
}

fn matrix(out: &mut String, view: &FleetView, members: &[MemberInfo]) {
    let placed: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| m.coordinate.is_some())
        .take(MATRIX_MAX)
        .collect();
    if placed.len() < 2 {
        return;
    }
    out.push_str("<h2>Estimated RTT between members</h2><div class=\"scroll\"><table id=\"rtt\"><thead><tr><th></th>");
    for m in &placed {
        let _ = write!(out, "<th>{}</th>", esc(&m.name));
    }
    out.push_str("</tr></thead><tbody>");
    for a in &placed {
        let _ = write!(out, "<tr><th class=\"l\">{}</th>", esc(&a.name));
        for b in &placed {
            let cell = if a.name == b.name {
                "·".to_owned()
            } else {
                view.estimated_rtt(&a.name, &b.name)
                    .map(|d| fmt_ms(d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| UNKNOWN.into())
            };
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    let more = members.len().saturating_sub(MATRIX_MAX);
    out.push_str("</tbody></table></div>\n");
    if more > 0 {
        let _ = writeln!(
            out,
            "<p class=\"mut\">{more} more members left out; ask <code>/api/rtt?a=&amp;b=</code>.</p>"
        );
    }
}
