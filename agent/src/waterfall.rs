//! Builds the waterfall from CDP Network events: one entry per request and per redirect hop, with
//! the headers as sent and received, and whether the network is still busy (what "quiet" means).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use vantage_proto::{Header, Redirect, Request, Run};

use crate::capture::har;

/// Requests kept per run: far beyond any real page, small enough that a page firing requests in
/// a loop cannot grow the report (and the agent) without bound.
pub const MAX_REQUESTS: usize = 2000;
/// Headers kept per request and direction: real requests send a few dozen.
pub const MAX_HEADERS: usize = 100;
/// Header bytes (names and values) kept per request and direction, and per run over all
/// requests: a page that sets huge cookies on thousands of requests cannot make the report (or
/// the agent) huge.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 << 10;
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Request ids of earlier navigations remembered, so their late events are not taken for this
/// one's activity.
const MAX_FOREIGN: usize = 10_000;

/// One request (or redirect hop) as seen so far.
#[derive(Debug)]
struct Entry {
    req: Request,
    /// CDP monotonic seconds when it was sent.
    sent: f64,
    /// The response's `timing` object, for HAR phases.
    timing: Option<Value>,
    /// A `loadingFinished`, `loadingFailed` or redirect ended it.
    done: bool,
    /// The headers came from an ExtraInfo event (as on the wire, with cookies); the plain
    /// event's do not replace them.
    request_extra: bool,
    response_extra: bool,
    /// Headers cut at capture, past the per-request caps.
    headers_cut: usize,
}

/// The waterfall of one navigation.
#[derive(Debug, Default)]
pub struct Waterfall {
    /// The navigation's loader, and loaders of earlier navigations on the same page: a request
    /// of a stale loader belongs to the page being left.
    loader: Option<String>,
    stale: HashSet<String>,
    /// Loaders seen in this navigation (its frames and workers), stale for the next one.
    seen: HashSet<String>,
    entries: Vec<Entry>,
    /// A live request id to its latest entry.
    open: HashMap<String, usize>,
    /// Requests of stale loaders, whose events are ignored.
    foreign: HashSet<String>,
    /// EventSource requests: a message is a `dataReceived`, but not loading activity.
    streams: HashSet<String>,
    /// ExtraInfo that came before its request's `requestWillBeSent` (Chromium sends the two
    /// from different processes, in either order).
    early_request: HashMap<String, Value>,
    early_response: HashMap<String, Value>,
    /// CDP monotonic time of the document request: navigation start.
    base: Option<f64>,
    document: Option<String>,
    redirects: Vec<Redirect>,
    /// Requests past [`MAX_REQUESTS`], counted but not kept.
    dropped: u64,
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// CDP's header object (`{name: value}`, repeated headers joined by newlines) as a list, one
/// entry per value as HAR wants them, within [`MAX_HEADERS`] and [`MAX_REQUEST_HEADER_BYTES`];
/// and how many were cut.
fn headers(v: Option<&Value>) -> (Vec<Header>, usize) {
    let Some(map) = v.and_then(Value::as_object) else {
        return (Vec::new(), 0);
    };
    let all = map.iter().flat_map(|(name, value)| {
        let values = value.as_str().unwrap_or_default().split('\n');
        values.map(move |value| (name, value))
    });
    let (mut list, mut bytes, mut cut) = (Vec::new(), 0, 0);
    for (name, value) in all {
        let n = name.len() + value.len();
        if list.len() >= MAX_HEADERS || bytes + n > MAX_REQUEST_HEADER_BYTES {
            cut += 1;
            continue;
        }
        bytes += n;
        list.push(Header {
            name: name.clone(),
            value: value.to_owned(),
        });
    }
    (list, cut)
}

impl Waterfall {
    /// A waterfall of the navigation `loader` (every request is taken when it is unknown), on a
    /// page whose earlier navigations had the loaders `stale`.
    pub fn new(loader: Option<String>, stale: HashSet<String>) -> Self {
        Self {
            loader,
            stale,
            ..Self::default()
        }
    }

    /// Takes one Network event. True when it is loading activity of this navigation: a request
    /// sent, or response bytes received. WebSocket frames and EventSource messages are not: a
    /// page with a live socket still goes quiet.
    pub fn on_event(&mut self, method: &str, p: &Value) -> bool {
        let id = s(p, "requestId");
        if self.foreign.contains(&id) {
            return false;
        }
        match method {
            "Network.requestWillBeSent" => self.sent(id, p),
            "Network.requestWillBeSentExtraInfo" => {
                match self.open.get(&id) {
                    Some(&i) => self.request_extra(i, p),
                    None => {
                        self.early_request.insert(id, p.clone());
                    }
                }
                false
            }
            "Network.responseReceived" => {
                if let (Some(i), Some(resp)) = (self.open.get(&id).copied(), p.get("response")) {
                    self.respond(i, resp);
                }
                true
            }
            "Network.responseReceivedExtraInfo" => {
                match self.open.get(&id) {
                    Some(&i) => self.response_extra(i, p),
                    None => {
                        self.early_response.insert(id, p.clone());
                    }
                }
                false
            }
            "Network.dataReceived" => {
                if let Some(&i) = self.open.get(&id) {
                    self.entries[i].req.body_bytes +=
                        p.get("dataLength").and_then(Value::as_u64).unwrap_or(0);
                }
                !self.streams.contains(&id)
            }
            "Network.loadingFinished" => {
                if let Some(&i) = self.open.get(&id) {
                    let e = &mut self.entries[i];
                    e.req.encoded_bytes = p
                        .get("encodedDataLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(e.req.encoded_bytes);
                    let end = p.get("timestamp").and_then(Value::as_f64);
                    e.req.timings = har(e.timing.as_ref(), end);
                    e.done = true;
                }
                !self.streams.contains(&id)
            }
            "Network.loadingFailed" => {
                if let Some(&i) = self.open.get(&id) {
                    let e = &mut self.entries[i];
                    let text = s(p, "errorText");
                    e.req.failed = Some(
                        if p.get("canceled").and_then(Value::as_bool) == Some(true) {
                            format!("canceled ({text})")
                        } else {
                            text
                        },
                    );
                    e.done = true;
                }
                false
            }
            _ => false,
        }
    }

    /// A request sent (or a redirect hop followed). Always activity unless it belongs to the
    /// page being left; past the cap it is counted, not kept.
    fn sent(&mut self, id: String, p: &Value) -> bool {
        let loader = s(p, "loaderId");
        if self.loader.as_deref() != Some(loader.as_str()) && self.stale.contains(&loader) {
            if self.foreign.len() < MAX_FOREIGN {
                self.foreign.insert(id);
            }
            return false;
        }
        if !loader.is_empty() && self.seen.len() < MAX_FOREIGN {
            self.seen.insert(loader);
        }
        let ts = p.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
        let ty = s(p, "type");
        if ty == "EventSource" {
            self.streams.insert(id.clone());
        }
        if let (Some(prev), Some(resp)) = (self.open.get(&id).copied(), p.get("redirectResponse")) {
            self.redirected(prev, &id, resp, p);
        }
        if self.entries.len() >= MAX_REQUESTS && self.document.is_some() {
            self.dropped += 1;
            self.open.remove(&id);
            return true;
        }
        if self.document.is_none() && ty == "Document" {
            self.document = Some(id.clone());
            self.base = Some(ts);
        }
        let req = p.get("request").cloned().unwrap_or(Value::Null);
        let initiator = p.get("initiator").map(|i| {
            let url = s(i, "url");
            if url.is_empty() {
                s(i, "type")
            } else {
                format!("{} {url}", s(i, "type"))
            }
        });
        let entry = Request {
            url: s(&req, "url"),
            method: s(&req, "method"),
            resource_type: ty,
            initiator,
            priority: req
                .get("initialPriority")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ..Request::default()
        };
        self.entries.push(Entry {
            req: entry,
            sent: ts,
            timing: None,
            done: false,
            request_extra: false,
            response_extra: false,
            headers_cut: 0,
        });
        let i = self.entries.len() - 1;
        self.open.insert(id.clone(), i);
        self.set_headers(i, Dir::Request, req.get("headers"), false);
        if let Some(extra) = self.early_request.remove(&id) {
            self.request_extra(i, &extra);
        }
        if let Some(extra) = self.early_response.remove(&id) {
            self.response_extra(i, &extra);
        }
        true
    }

    /// Ends the hop `prev` with its redirect response, noting the document's redirects.
    fn redirected(&mut self, prev: usize, id: &str, resp: &Value, p: &Value) {
        self.respond(prev, resp);
        let e = &mut self.entries[prev];
        e.req.encoded_bytes = resp
            .get("encodedDataLength")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        e.done = true;
        if self.document.as_deref() == Some(id) {
            let to = p.get("request").map(|r| s(r, "url")).unwrap_or_default();
            self.redirects.push(Redirect {
                from: e.req.url.clone(),
                to,
                status: e.req.status,
            });
        }
    }

    fn request_extra(&mut self, i: usize, p: &Value) {
        self.set_headers(i, Dir::Request, p.get("headers"), true);
    }

    fn response_extra(&mut self, i: usize, p: &Value) {
        self.set_headers(i, Dir::Response, p.get("headers"), true);
    }

    /// Sets one direction's headers of entry `i`, unless they came from ExtraInfo (the headers
    /// on the wire, cookies included) and these do not.
    fn set_headers(&mut self, i: usize, dir: Dir, v: Option<&Value>, extra: bool) {
        let e = &mut self.entries[i];
        let (list, from_extra) = match dir {
            Dir::Request => (&mut e.req.request_headers, &mut e.request_extra),
            Dir::Response => (&mut e.req.response_headers, &mut e.response_extra),
        };
        if *from_extra && !extra {
            return;
        }
        let (got, cut) = headers(v);
        *list = got;
        *from_extra = extra;
        e.headers_cut += cut;
    }

    fn respond(&mut self, i: usize, resp: &Value) {
        let e = &mut self.entries[i];
        let r = &mut e.req;
        r.status = resp.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
        r.status_text = s(resp, "statusText");
        r.mime = s(resp, "mimeType");
        r.protocol = resp
            .get("protocol")
            .and_then(Value::as_str)
            .map(str::to_owned);
        r.remote_ip = resp
            .get("remoteIPAddress")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let flag = |k: &str| resp.get(k).and_then(Value::as_bool).unwrap_or(false);
        r.from_cache = flag("fromDiskCache") || flag("fromPrefetchCache");
        if let Some(t) = resp.get("timing") {
            r.timings = har(Some(t), None);
            e.timing = Some(t.clone());
        }
        self.set_headers(i, Dir::Response, resp.get("headers"), false);
    }

    /// The main document's final status and URL.
    pub fn document(&self) -> Option<(u16, String)> {
        let id = self.document.as_ref()?;
        let e = &self.entries[*self.open.get(id)?];
        Some((e.req.status, e.req.url.clone()))
    }

    /// The loaders this navigation used: stale for the next navigation on the same page.
    pub fn loaders(&self) -> impl Iterator<Item = &String> {
        self.seen.iter().chain(&self.loader)
    }

    /// Puts the waterfall into `run`: the document's status and final URL, its redirects, the
    /// requests in start order (start times relative to navigation start, unfinished ones
    /// marked), and what was cut to keep it bounded in `omitted`.
    pub fn finish(mut self, run: &mut Run) {
        if let Some((status, url)) = self.document() {
            run.status = status;
            run.final_url = url;
        }
        if self.dropped > 0 {
            run.omitted.push(format!(
                "{} more requests past the first {MAX_REQUESTS}",
                self.dropped
            ));
        }
        run.redirects = std::mem::take(&mut self.redirects);
        let base = self.base.unwrap_or(0.0);
        let mut cap = HeaderCap::default();
        run.requests = self
            .entries
            .into_iter()
            .filter(|e| !e.req.url.starts_with("data:"))
            .map(|e| {
                let mut r = e.req;
                r.start_ms = ((e.sent - base) * 1000.0).max(0.0);
                r.unfinished = !e.done;
                cap.cut += e.headers_cut;
                cap.apply(&mut r.request_headers);
                cap.apply(&mut r.response_headers);
                r
            })
            .collect();
        run.omitted.extend(cap.note());
    }
}

/// Which headers of a request.
#[derive(Debug, Clone, Copy)]
enum Dir {
    Request,
    Response,
}

/// Keeps headers within [`MAX_HEADER_BYTES`] per run, counting what it and the capture cut.
#[derive(Debug, Default)]
struct HeaderCap {
    bytes: usize,
    cut: usize,
}

impl HeaderCap {
    fn apply(&mut self, list: &mut Vec<Header>) {
        let keep = list
            .iter()
            .take_while(|h| {
                let n = h.name.len() + h.value.len();
                let fits = self.bytes + n <= MAX_HEADER_BYTES;
                if fits {
                    self.bytes += n;
                }
                fits
            })
            .count();
        self.cut += list.len() - keep;
        list.truncate(keep);
    }

    fn note(&self) -> Option<String> {
        (self.cut > 0).then(|| {
            format!(
                "{} headers past {MAX_HEADERS} or {MAX_REQUEST_HEADER_BYTES} bytes per request \
                 and direction, or {MAX_HEADER_BYTES} bytes per run",
                self.cut
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(id: &str, loader: &str, url: &str, ty: &str, t: f64) -> Value {
        json!({ "requestId": id, "loaderId": loader, "type": ty, "timestamp": t,
                "request": { "url": url, "method": "GET", "headers": { "Accept": "*/*" } } })
    }

    #[test]
    fn stragglers_of_an_earlier_navigation_are_not_this_ones() {
        let mut w = Waterfall::new(Some("new".into()), ["old".to_owned()].into());
        // the page being left sends a beacon, and a byte of an old request arrives
        assert!(!w.on_event(
            "Network.requestWillBeSent",
            &sent("b", "old", "http://a.test/beacon", "Ping", 1.0)
        ));
        assert!(!w.on_event(
            "Network.dataReceived",
            &json!({ "requestId": "b", "dataLength": 9 })
        ));
        assert!(w.on_event(
            "Network.requestWillBeSent",
            &sent("d", "new", "http://a.test/", "Document", 2.0)
        ));
        // an iframe's document has a loader of its own, never seen before: it is this page's
        assert!(w.on_event(
            "Network.requestWillBeSent",
            &sent("f", "frame", "http://a.test/frame", "Document", 2.1)
        ));
        assert_eq!(
            w.loaders().collect::<HashSet<_>>(),
            HashSet::from([&"new".to_owned(), &"frame".to_owned()])
        );
        let mut run = Run::default();
        w.finish(&mut run);
        let urls: Vec<_> = run.requests.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["http://a.test/", "http://a.test/frame"]);
        assert!(run.requests.iter().all(|r| r.unfinished));
    }

    #[test]
    fn extra_info_headers_win_in_either_order_and_streams_are_not_activity() {
        let mut w = Waterfall::new(None, HashSet::new());
        let extra = json!({ "requestId": "d", "headers": { "Cookie": "a=1", "Accept": "*/*" } });
        assert!(!w.on_event("Network.requestWillBeSentExtraInfo", &extra));
        w.on_event(
            "Network.requestWillBeSent",
            &sent("d", "l", "http://a.test/", "Document", 1.0),
        );
        let resp = json!({ "requestId": "d", "response": { "status": 200, "statusText": "OK",
            "headers": { "Content-Type": "text/html" } } });
        let resp_extra = json!({ "requestId": "d",
            "headers": { "set-cookie": "a=1\nb=2", "content-type": "text/html" } });
        w.on_event("Network.responseReceivedExtraInfo", &resp_extra);
        assert!(w.on_event("Network.responseReceived", &resp));
        w.on_event(
            "Network.requestWillBeSent",
            &sent("e", "l", "http://a.test/events", "EventSource", 1.5),
        );
        assert!(!w.on_event(
            "Network.dataReceived",
            &json!({ "requestId": "e", "dataLength": 5 })
        ));
        assert!(w.on_event(
            "Network.loadingFinished",
            &json!({ "requestId": "d", "timestamp": 1.2 })
        ));
        let mut run = Run::default();
        w.finish(&mut run);
        let d = &run.requests[0];
        assert_eq!(
            (d.status, d.status_text.as_str(), d.unfinished),
            (200, "OK", false)
        );
        let names = |h: &[Header]| {
            h.iter()
                .map(|h| format!("{}: {}", h.name, h.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&d.request_headers), ["Accept: */*", "Cookie: a=1"]);
        assert_eq!(
            names(&d.response_headers),
            [
                "content-type: text/html",
                "set-cookie: a=1",
                "set-cookie: b=2"
            ]
        );
        assert!(run.requests[1].unfinished);
        assert!(run.omitted.is_empty(), "{:?}", run.omitted);
    }

    #[test]
    fn requests_past_the_cap_are_still_activity() {
        let mut w = Waterfall::new(None, HashSet::new());
        w.on_event(
            "Network.requestWillBeSent",
            &sent("d", "l", "http://a.test/", "Document", 1.0),
        );
        for i in 0..MAX_REQUESTS + 3 {
            let id = format!("r{i}");
            let p = sent(&id, "l", "http://a.test/img", "Image", 2.0);
            assert!(w.on_event("Network.requestWillBeSent", &p), "{i}");
            let data = json!({ "requestId": id, "dataLength": 1 });
            assert!(w.on_event("Network.dataReceived", &data), "{i}");
        }
        let mut run = Run::default();
        w.finish(&mut run);
        assert_eq!(run.requests.len(), MAX_REQUESTS);
        assert_eq!(run.omitted, ["4 more requests past the first 2000"]);
    }

    #[test]
    fn headers_are_capped_per_request_and_the_cut_is_said() {
        let many: serde_json::Map<String, Value> = (0..MAX_HEADERS + 5)
            .map(|i| (format!("x-{i:03}"), json!("v")))
            .collect();
        let mut w = Waterfall::new(None, HashSet::new());
        let mut p = sent("d", "l", "http://a.test/", "Document", 1.0);
        p["request"]["headers"] = Value::Object(many);
        w.on_event("Network.requestWillBeSent", &p);
        let mut run = Run::default();
        w.finish(&mut run);
        assert_eq!(run.requests[0].request_headers.len(), MAX_HEADERS);
        assert!(
            run.omitted[0].starts_with("5 headers past"),
            "{:?}",
            run.omitted
        );
    }
}
