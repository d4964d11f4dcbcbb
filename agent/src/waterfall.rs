//! Builds the waterfall from CDP Network events: one entry per request and per redirect hop.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use vantage_proto::{Redirect, Request};

use crate::capture::har;

#[derive(Debug, Default)]
pub struct Waterfall {
    /// Entries in start order; `open` maps a live request id to its latest entry.
    entries: Vec<(Request, f64)>,
    open: HashMap<String, usize>,
    timing: HashMap<usize, Value>,
    /// CDP monotonic time of the document request: navigation start.
    base: Option<f64>,
    document: Option<String>,
    pub redirects: Vec<Redirect>,
    pub inflight: HashSet<String>,
    /// Requests past [`MAX_REQUESTS`], counted but not kept.
    pub dropped: u64,
}

/// Requests kept per run: far beyond any real page, small enough that a page firing requests in
/// a loop cannot grow the report (and the agent) without bound.
pub const MAX_REQUESTS: usize = 2000;

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Waterfall {
    pub fn on_event(&mut self, method: &str, p: &Value) {
        let id = s(p, "requestId");
        match method {
            "Network.requestWillBeSent" => {
                let ts = p.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
                if let (Some(prev), Some(resp)) =
                    (self.open.get(&id).copied(), p.get("redirectResponse"))
                {
                    self.respond(prev, resp);
                    self.entries[prev].0.encoded_bytes = resp
                        .get("encodedDataLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if self.document.as_deref() == Some(id.as_str()) {
                        let to = p.get("request").map(|r| s(r, "url")).unwrap_or_default();
                        let from = self.entries[prev].0.url.clone();
                        self.redirects.push(Redirect {
                            from,
                            to,
                            status: self.entries[prev].0.status,
                        });
                    }
                }
                let ty = s(p, "type");
                if self.entries.len() >= MAX_REQUESTS && self.document.is_some() {
                    self.dropped += 1;
                    self.open.remove(&id);
                    return;
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
                self.entries.push((entry, ts));
                self.open.insert(id.clone(), self.entries.len() - 1);
                self.inflight.insert(id);
            }
            "Network.responseReceived" => {
                if let (Some(i), Some(resp)) = (self.open.get(&id).copied(), p.get("response")) {
                    self.respond(i, resp);
                }
            }
            "Network.dataReceived" => {
                if let Some(&i) = self.open.get(&id) {
                    self.entries[i].0.body_bytes +=
                        p.get("dataLength").and_then(Value::as_u64).unwrap_or(0);
                }
            }
            "Network.loadingFinished" => {
                if let Some(&i) = self.open.get(&id) {
                    let e = &mut self.entries[i].0;
                    e.encoded_bytes = p
                        .get("encodedDataLength")
                        .and_then(Value::as_u64)
                        .unwrap_or(e.encoded_bytes);
                    let end = p.get("timestamp").and_then(Value::as_f64);
                    e.timings = har(self.timing.get(&i), end);
                }
                self.inflight.remove(&id);
            }
            "Network.loadingFailed" => {
                if let Some(&i) = self.open.get(&id) {
                    let e = &mut self.entries[i].0;
                    let text = s(p, "errorText");
                    e.failed = Some(
                        if p.get("canceled").and_then(Value::as_bool) == Some(true) {
                            format!("canceled ({text})")
                        } else {
                            text
                        },
                    );
                }
                self.inflight.remove(&id);
            }
            _ => {}
        }
    }

    fn respond(&mut self, i: usize, resp: &Value) {
        let e = &mut self.entries[i].0;
        e.status = resp.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
        e.mime = s(resp, "mimeType");
        e.protocol = resp
            .get("protocol")
            .and_then(Value::as_str)
            .map(str::to_owned);
        e.remote_ip = resp
            .get("remoteIPAddress")
            .and_then(Value::as_str)
            .map(str::to_owned);
        e.from_cache = resp
            .get("fromDiskCache")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || resp
                .get("fromPrefetchCache")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        if let Some(t) = resp.get("timing") {
            self.timing.insert(i, t.clone());
            e.timings = har(Some(t), None);
        }
    }

    /// The main document's final status and URL.
    pub fn document(&self) -> Option<(u16, String)> {
        let id = self.document.as_ref()?;
        let i = *self.open.get(id)?;
        Some((self.entries[i].0.status, self.entries[i].0.url.clone()))
    }

    /// The finished waterfall, start times relative to navigation start.
    pub fn into_requests(self) -> Vec<Request> {
        let base = self.base.unwrap_or(0.0);
        self.entries
            .into_iter()
            .filter(|(r, _)| !r.url.starts_with("data:"))
            .map(|(mut r, ts)| {
                r.start_ms = ((ts - base) * 1000.0).max(0.0);
                r
            })
            .collect()
    }
}
