//! The HTML report: one self-contained page (inline CSS and SVG, the screenshot as a data URL, a
//! Content-Security-Policy that forbids every fetch) that reads on a phone and on paper and
//! needs no JavaScript: hovers are SVG `<title>`s. Everything that came from a page or an agent
//! (URLs, headers, element names, errors) is escaped.

mod sections;
mod waterfall;

use std::fmt::Write as _;

use vantage_proto::api::{LoadStatus, StoredReport};

pub use waterfall::ROW_CLASS;

/// The report page of a whole load: every region side by side, then each region in detail.
pub fn load_html(status: &LoadStatus) -> String {
    let mut body = String::new();
    sections::load_summary(&mut body, status);
    sections::comparison(&mut body, &status.reports);
    for r in &status.reports {
        sections::region(&mut body, r);
    }
    sections::failed_targets(&mut body, status);
    page(&format!("Vantage: {}", status.request.url), &body)
}

/// The report page of one region's report.
pub fn report_html(report: &StoredReport) -> String {
    let mut body = String::new();
    sections::report_summary(&mut body, report);
    sections::comparison(&mut body, std::slice::from_ref(report));
    sections::region(&mut body, report);
    page(&format!("Vantage: {}", report.report.job.url), &body)
}

/// The regions-compared table alone (the dashboard's compare view).
pub fn comparison(reports: &[StoredReport]) -> String {
    let mut body = String::new();
    sections::comparison(&mut body, reports);
    body
}

/// Escapes text for HTML element content and quoted attribute values alike.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // control characters have no business in a report and break XML (inline SVG)
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The styles every Vantage page shares (the report and the dashboard).
pub const STYLE: &str = r#"
:root{--fg:#1b1f24;--mut:#5b6570;--line:#d8dde3;--bg:#fff;--bad:#c62828;--good:#2e7d32}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:1200px;padding:12px}
h1{font-size:1.35em;margin:.2em 0 .4em;overflow-wrap:anywhere}
h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{font-size:1em;margin:1em 0 .3em}
.verdict{font-size:1.1em;font-weight:600;padding:.5em .7em;background:#f3f6f9;border-left:4px solid #1565c0}
.verdict.bad{border-color:var(--bad)}
.mut{color:var(--mut)}
.bad{color:var(--bad)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.3em 0}
th,td{padding:.25em .55em;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.l,th.l{text-align:left}
td.wrap{white-space:normal;overflow-wrap:anywhere;text-align:left}
ul{padding-left:1.2em}
li{overflow-wrap:anywhere}
svg.wf{display:block;width:100%;height:auto;font:11px system-ui,sans-serif}
svg.wf text{fill:var(--fg)}
svg.wf .req:hover rect.bg{fill:#eef3fb}
.legend span{display:inline-block;margin-right:.8em;font-size:.85em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.25em;vertical-align:-.05em}
img.shot{max-width:100%;height:auto;border:1px solid var(--line)}
nav a{margin-right:1em}
form label{display:block;margin:.4em 0}
input,select,button{font:inherit;padding:.3em .5em}
@media (max-width:600px){body{font-size:14px;padding:8px}th,td{padding:.2em .35em}}
@media print{body{max-width:none;font-size:11pt}.scroll{overflow:visible}nav,form{display:none}h2{break-after:avoid}svg.wf,img.shot{break-inside:avoid-page}}
"#;

/// The report's policy: no fetch at all but inline styles and `data:` images, so even a slip in
/// escaping could not make the file reach the network or run a script.
const REPORT_CSP: &str = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

fn page(title: &str, body: &str) -> String {
    document(title, REPORT_CSP, body)
}

/// A whole HTML document around `body`, with `csp` as its Content-Security-Policy.
pub fn document(title: &str, csp: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 512);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\
<title>{}</title><style>{STYLE}</style></head><body>\n{body}\n\
<p class=\"mut\">Made by Vantage {}.</p></body></html>\n",
        esc(csp),
        esc(title),
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(esc("a\u{1}b"), "a\u{FFFD}b");
    }
}
