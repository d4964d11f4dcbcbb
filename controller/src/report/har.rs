//! HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>) from a load: one page per run of
//! every region's report, its requests as entries in start order. What HAR has no field for
//! (region, node, view, the estimated RTT) goes in `_`-prefixed fields, as the spec allows.

use serde::Serialize;
use url::Url;
use vantage_proto::api::{LoadStatus, StoredReport};
use vantage_proto::{HarTimings, Header, Request, Run, RunView};

use super::time::iso8601_utc;

/// The HAR document of a whole load (every region, every run), as pretty JSON bytes.
pub fn load_har(status: &LoadStatus) -> Vec<u8> {
    to_bytes(&build(&status.reports))
}

/// The HAR document of one stored report.
pub fn report_har(report: &StoredReport) -> Vec<u8> {
    to_bytes(&build(std::slice::from_ref(report)))
}

fn to_bytes(har: &Har) -> Vec<u8> {
    // the model holds only strings, numbers and bools: serializing it cannot fail
    serde_json::to_vec_pretty(har).expect("a HAR model always serializes")
}

/// The sum of an entry's phases that happened, which HAR requires `time` to be. `ssl` is left
/// out: HAR counts it inside `connect` (as CDP does).
pub fn entry_time(t: &HarTimings) -> f64 {
    [
        t.blocked,
        t.dns,
        t.connect,
        Some(t.send),
        Some(t.wait),
        Some(t.receive),
    ]
    .into_iter()
    .flatten()
    .filter(|v| *v >= 0.0)
    .sum()
}

#[derive(Debug, Serialize)]
struct Har {
    log: Log,
}

#[derive(Debug, Serialize)]
struct Log {
    version: &'static str,
    creator: Creator,
    #[serde(skip_serializing_if = "Option::is_none")]
    browser: Option<Creator>,
    pages: Vec<Page>,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize)]
struct Creator {
    name: String,
    version: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    started_date_time: String,
    id: String,
    title: String,
    page_timings: PageTimings,
    #[serde(rename = "_region")]
    region: String,
    #[serde(rename = "_agentRegion")]
    agent_region: String,
    #[serde(rename = "_node")]
    node: String,
    #[serde(rename = "_view")]
    view: &'static str,
    #[serde(rename = "_run")]
    run: u8,
    #[serde(rename = "_estimatedRttMs", skip_serializing_if = "Option::is_none")]
    estimated_rtt_ms: Option<f64>,
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "_timedOut")]
    timed_out: bool,
    #[serde(rename = "_omitted", skip_serializing_if = "Vec::is_empty")]
    omitted: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PageTimings {
    on_content_load: f64,
    on_load: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    pageref: String,
    started_date_time: String,
    time: f64,
    request: HarRequest,
    response: HarResponse,
    cache: Cache,
    timings: Timings,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    server_ip_address: Option<String>,
    #[serde(rename = "_resourceType")]
    resource_type: String,
    #[serde(rename = "_priority", skip_serializing_if = "Option::is_none")]
    priority: Option<String>,
    #[serde(rename = "_initiator", skip_serializing_if = "Option::is_none")]
    initiator: Option<String>,
    #[serde(rename = "_fromCache")]
    from_cache: bool,
    #[serde(rename = "_failed", skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
    #[serde(rename = "_unfinished")]
    unfinished: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest {
    method: String,
    url: String,
    http_version: String,
    cookies: Vec<Cookie>,
    headers: Vec<NameValue>,
    query_string: Vec<NameValue>,
    headers_size: i64,
    body_size: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HarResponse {
    status: u16,
    status_text: String,
    http_version: String,
    cookies: Vec<Cookie>,
    headers: Vec<NameValue>,
    content: Content,
    #[serde(rename = "redirectURL")]
    redirect_url: String,
    headers_size: i64,
    body_size: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    size: u64,
    mime_type: String,
}

#[derive(Debug, Serialize)]
struct Cache {}

#[derive(Debug, Serialize)]
struct Timings {
    blocked: f64,
    dns: f64,
    connect: f64,
    ssl: f64,
    send: f64,
    wait: f64,
    receive: f64,
}

#[derive(Debug, Serialize, PartialEq)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Cookie {
    name: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secure: Option<bool>,
}

fn build(reports: &[StoredReport]) -> Har {
    let mut pages = Vec::new();
    let mut entries = Vec::new();
    for sr in reports {
        for run in &sr.report.runs {
            let page = page(sr, run);
            let mut requests: Vec<&Request> = run.requests.iter().collect();
            // start order, as HAR viewers expect; the sort is stable so equal starts keep the
            // browser's order
            requests.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
            entries.extend(requests.into_iter().map(|q| entry(&page.id, run, q)));
            pages.push(page);
        }
    }
    let browser = reports.first().map(|r| Creator {
        name: "Chromium".into(),
        version: r.report.browser_version.clone(),
    });
    Har {
        log: Log {
            version: "1.2",
            creator: Creator {
                name: "vantage".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            browser,
            pages,
            entries,
        },
    }
}

fn view_name(view: Option<RunView>) -> &'static str {
    match view {
        Some(RunView::Warm) => "warm",
        Some(RunView::Cold) | None => "cold",
    }
}

fn page(sr: &StoredReport, run: &Run) -> Page {
    let view = view_name(run.view);
    Page {
        started_date_time: iso8601_utc(run.started_unix_ms as f64),
        id: format!("r{}_{}_run{}_{view}", sr.id, sr.region, run.index),
        title: run.url.clone(),
        page_timings: PageTimings {
            on_content_load: run.timing.dom_content_loaded_ms.unwrap_or(-1.0),
            on_load: run.timing.load_ms.unwrap_or(-1.0),
        },
        region: sr.region.clone(),
        agent_region: sr.agent_region.clone(),
        node: sr.report.node.clone(),
        view,
        run: run.index,
        estimated_rtt_ms: sr.estimated_rtt_ms,
        error: run.error.clone(),
        timed_out: run.timed_out,
        omitted: run.omitted.clone(),
    }
}

fn entry(pageref: &str, run: &Run, q: &Request) -> Entry {
    let t = &q.timings;
    let version = http_version(q.protocol.as_deref());
    let header = |h: &[Header], name: &str| {
        h.iter()
            .filter(|x| x.name.eq_ignore_ascii_case(name))
            .map(|x| x.value.clone())
            .collect::<Vec<_>>()
    };
    Entry {
        pageref: pageref.to_owned(),
        started_date_time: iso8601_utc(run.started_unix_ms as f64 + q.start_ms.max(0.0)),
        time: entry_time(t),
        request: HarRequest {
            method: q.method.clone(),
            url: q.url.clone(),
            http_version: version.clone(),
            cookies: header(&q.request_headers, "cookie")
                .iter()
                .flat_map(|v| request_cookies(v))
                .collect(),
            headers: name_values(&q.request_headers),
            query_string: query_string(&q.url),
            headers_size: -1,
            body_size: -1,
        },
        response: HarResponse {
            status: q.status,
            status_text: q.status_text.clone(),
            http_version: version,
            cookies: header(&q.response_headers, "set-cookie")
                .iter()
                // CDP joins repeated set-cookie headers with newlines
                .flat_map(|v| v.lines().filter_map(set_cookie).collect::<Vec<_>>())
                .collect(),
            headers: name_values(&q.response_headers),
            content: Content {
                size: q.body_bytes,
                mime_type: q.mime.clone(),
            },
            redirect_url: header(&q.response_headers, "location")
                .into_iter()
                .next()
                .unwrap_or_default(),
            headers_size: -1,
            body_size: if q.status == 0 {
                -1
            } else {
                q.encoded_bytes as i64
            },
        },
        cache: Cache {},
        timings: Timings {
            blocked: phase(t.blocked),
            dns: phase(t.dns),
            connect: phase(t.connect),
            ssl: phase(t.ssl),
            send: t.send.max(0.0),
            wait: t.wait.max(0.0),
            receive: t.receive.max(0.0),
        },
        server_ip_address: q.remote_ip.clone(),
        resource_type: q.resource_type.clone(),
        priority: q.priority.clone(),
        initiator: q.initiator.clone(),
        from_cache: q.from_cache,
        failed: q.failed.clone(),
        unfinished: q.unfinished,
    }
}

/// HAR's `-1` for a phase that did not happen (or a negative the browser reported).
fn phase(v: Option<f64>) -> f64 {
    v.filter(|v| *v >= 0.0).unwrap_or(-1.0)
}

/// CDP's ALPN names as HAR writes them (`HTTP/1.1`, `HTTP/2`); unknown ones as they came.
fn http_version(protocol: Option<&str>) -> String {
    match protocol.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => String::new(),
        Some("h2") => "HTTP/2".into(),
        Some("h3") | Some("h3-29") => "HTTP/3".into(),
        Some(p) if p.starts_with("http/") => p.to_ascii_uppercase(),
        Some(_) => protocol.unwrap_or_default().to_owned(),
    }
}

fn name_values(headers: &[Header]) -> Vec<NameValue> {
    headers
        .iter()
        .map(|h| NameValue {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

/// The URL's query as HAR wants it, percent-decoded; a URL that does not parse has none.
fn query_string(url: &str) -> Vec<NameValue> {
    Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(name, value)| NameValue {
                    name: name.into_owned(),
                    value: value.into_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Cookie {
    fn new(name: &str, value: &str) -> Cookie {
        Cookie {
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            path: None,
            domain: None,
            expires: None,
            http_only: None,
            secure: None,
        }
    }
}

/// `Cookie: a=1; b=2`.
fn request_cookies(header: &str) -> Vec<Cookie> {
    header
        .split(';')
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some(Cookie::new(name, value))
        })
        .collect()
}

/// One `Set-Cookie` line: `name=value; Path=/; Domain=x; HttpOnly; Secure; Expires=…`.
fn set_cookie(line: &str) -> Option<Cookie> {
    let mut parts = line.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    let mut c = Cookie::new(name, value);
    for attr in parts {
        let (k, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
        match k.to_ascii_lowercase().as_str() {
            "path" => c.path = Some(v.to_owned()),
            "domain" => c.domain = Some(v.to_owned()),
            "expires" => c.expires = Some(v.to_owned()),
            "httponly" => c.http_only = Some(true),
            "secure" => c.secure = Some(true),
            _ => {}
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_queries_come_from_headers_and_urls() {
        assert_eq!(
            request_cookies("a=1; b=x=y;junk"),
            vec![Cookie::new("a", "1"), Cookie::new("b", "x=y")]
        );
        let c = set_cookie("sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax").unwrap();
        assert_eq!(
            (c.path.as_deref(), c.http_only, c.secure),
            (Some("/"), Some(true), Some(true))
        );
        assert!(set_cookie("no equals sign").is_none());
        let q = query_string("https://x.test/p?a=1&b=%20two&a=3#frag");
        let got: Vec<(&str, &str)> = q
            .iter()
            .map(|n| (n.name.as_str(), n.value.as_str()))
            .collect();
        assert_eq!(got, [("a", "1"), ("b", " two"), ("a", "3")]);
        assert!(query_string("not a url").is_empty());
        assert_eq!(http_version(Some("h2")), "HTTP/2");
        assert_eq!(http_version(Some("http/1.1")), "HTTP/1.1");
    }

    #[test]
    fn time_is_the_sum_of_phases_that_happened() {
        let t = HarTimings {
            blocked: Some(2.0),
            dns: None,
            connect: Some(10.0),
            ssl: Some(6.0),
            send: 1.0,
            wait: 30.0,
            receive: 4.0,
        };
        assert_eq!(entry_time(&t), 47.0, "ssl is inside connect");
    }
}
