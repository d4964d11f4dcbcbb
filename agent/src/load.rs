//! Following one navigation's events until its run is over: the load event of the navigation's
//! own loader, then (if the job asks) a quiet network, with the job's deadline as the hard cap;
//! a crashed or detached renderer ends the run at once.
//!
//! "Quiet" is what WebPageTest and browsertime mean by it: no network *activity* (no request
//! sent, no response bytes received) for the window. Requests still open do not hold it off (a
//! page may never read a body it fetched, and Chromium then never finishes the request), and
//! WebSocket frames and EventSource messages are not loading activity.

use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_proto::{ConsoleEntry, Run, Wait};

use crate::cdp::{CdpEvent, Events};
use crate::waterfall::Waterfall;

/// Console errors and exceptions kept per run, and characters kept of each.
pub const MAX_ENTRIES: usize = 200;
const MAX_TEXT: usize = 4096;

/// How a run's wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Loaded (and quiet, if asked).
    Settled,
    /// Loaded, but the network was still busy at the deadline.
    NeverQuiet,
    /// The deadline passed before the load event.
    TimedOut,
    /// The renderer crashed or the page went away; the reason.
    Gone(String),
}

/// What a run gathers from its page's events.
#[derive(Debug)]
pub struct Watch {
    pub fall: Waterfall,
    loader: Option<String>,
    console: Vec<ConsoleEntry>,
    exceptions: Vec<ConsoleEntry>,
    /// Entries past [`MAX_ENTRIES`]: (console errors, exceptions).
    dropped: (u64, u64),
    loaded: bool,
    last_activity: Instant,
    gone: Option<String>,
}

impl Watch {
    /// Watches the navigation `loader` (`None`: the navigation did not say, so every event is
    /// its own) on a page whose earlier navigations had the loaders `stale`. `loaded` when there
    /// is no load to wait for (the navigation failed).
    pub fn new(
        loader: Option<String>,
        stale: std::collections::HashSet<String>,
        loaded: bool,
    ) -> Self {
        Self {
            fall: Waterfall::new(loader.clone(), stale),
            loader,
            console: Vec::new(),
            exceptions: Vec::new(),
            dropped: (0, 0),
            loaded,
            last_activity: Instant::now(),
            gone: None,
        }
    }

    /// Reads events until the run is over by `wait`, or `deadline`; then takes the events still
    /// queued, so requests that did finish are not reported as unfinished.
    pub async fn follow(&mut self, events: &mut Events, wait: Wait, deadline: Instant) -> End {
        let quiet = match wait {
            Wait::Load => None,
            Wait::LoadAndQuiet { quiet_ms } => Some(Duration::from_millis(u64::from(quiet_ms))),
        };
        let end = loop {
            if let Some(why) = &self.gone {
                break End::Gone(why.clone());
            }
            let now = Instant::now();
            if self.loaded {
                match quiet {
                    None => break End::Settled,
                    Some(q) if now.duration_since(self.last_activity) >= q => break End::Settled,
                    Some(_) => {}
                }
            }
            if now >= deadline {
                break if self.loaded {
                    End::NeverQuiet
                } else {
                    End::TimedOut
                };
            }
            // wake at the deadline or when the window would close, whichever is first
            let wake = match quiet {
                Some(q) if self.loaded => (self.last_activity + q).min(deadline),
                _ => deadline,
            };
            match tokio::time::timeout_at(wake.into(), events.recv()).await {
                Ok(Some(e)) => self.on_event(e),
                Ok(None) => self.gone = Some("the browser closed the page".into()),
                Err(_) => {}
            }
        };
        while let Some(e) = events.try_recv() {
            self.on_event(e);
        }
        end
    }

    /// Takes one event of the page.
    pub fn on_event(&mut self, e: CdpEvent) {
        let p = &e.params;
        match e.method.as_str() {
            "Page.lifecycleEvent" if p["name"] == "load" && self.ours(p) => self.loaded = true,
            "Inspector.targetCrashed" => self.gone = Some("the renderer crashed".into()),
            "Inspector.detached" | "Target.detachedFromTarget" => {
                let why = p["reason"].as_str().unwrap_or("the target went away");
                self.gone = Some(format!("the page was detached: {why}"));
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                keep(&mut self.console, &mut self.dropped.0, console_entry(p))
            }
            "Runtime.exceptionThrown" => keep(
                &mut self.exceptions,
                &mut self.dropped.1,
                exception_entry(p),
            ),
            "Log.entryAdded" if p["entry"]["level"] == "error" => keep(
                &mut self.console,
                &mut self.dropped.0,
                ConsoleEntry {
                    text: p["entry"]["text"].as_str().unwrap_or_default().to_owned(),
                    url: p["entry"]["url"].as_str().map(str::to_owned),
                },
            ),
            m if m.starts_with("Network.") => self.network(m, p),
            _ => {}
        }
    }

    /// Whether a page event is of the watched navigation's loader.
    fn ours(&self, p: &Value) -> bool {
        self.loader.is_none() || p["loaderId"].as_str() == self.loader.as_deref()
    }

    /// A Network event into the waterfall; loading activity restarts the quiet window.
    fn network(&mut self, method: &str, p: &Value) {
        if self.fall.on_event(method, p) {
            self.last_activity = Instant::now();
        }
    }

    /// Puts what was gathered into `run`, with what was cut in `omitted`.
    pub fn finish(self, run: &mut Run) {
        run.console_errors = self.console;
        run.exceptions = self.exceptions;
        for (n, what) in [
            (self.dropped.0, "console errors"),
            (self.dropped.1, "exceptions"),
        ] {
            if n > 0 {
                run.omitted
                    .push(format!("{n} more {what} past the first {MAX_ENTRIES}"));
            }
        }
        self.fall.finish(run);
    }
}

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
