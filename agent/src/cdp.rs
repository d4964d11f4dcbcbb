//! A small Chrome DevTools Protocol client over one WebSocket to the local browser: commands with
//! ids and replies (each with a deadline), and events routed to per-session subscribers through
//! bounded queues. One task owns the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A CDP event.
#[derive(Debug, Clone)]
pub struct CdpEvent {
    pub method: String,
    pub params: Value,
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value>>>;

/// How long a command may wait for its reply unless the caller gives its own deadline: far more
/// than any command takes on a live browser, so only a wedged one runs into it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Events queued per session before newer ones are dropped: a run reads them as they come, so
/// only a page flooding the protocol (thousands of requests or console lines a second) fills it.
pub const EVENT_QUEUE: usize = 65_536;

/// A session's events, and how many were dropped because its queue was full.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<CdpEvent>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// A receiver that never yields an event (the session is not attached yet).
    pub fn none() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self {
            rx,
            dropped: Arc::default(),
        }
    }

    /// The next event; `None` once the connection or the subscription is gone.
    pub async fn recv(&mut self) -> Option<CdpEvent> {
        self.rx.recv().await
    }

    /// An event already queued, if any.
    pub fn try_recv(&mut self) -> Option<CdpEvent> {
        self.rx.try_recv().ok()
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Subscriber {
    tx: mpsc::Sender<CdpEvent>,
    dropped: Arc<AtomicU64>,
}

impl Subscriber {
    /// Queues `e` without waiting: the reader task also delivers replies, so it never blocks.
    fn deliver(&self, e: CdpEvent) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Routes {
    pending: Pending,
    sessions: HashMap<String, Subscriber>,
    closed: bool,
}

/// A connection to the browser endpoint (`ws://127.0.0.1:PORT/devtools/browser/…`).
#[derive(Clone)]
pub struct Cdp {
    out: mpsc::UnboundedSender<String>,
    routes: Arc<Mutex<Routes>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Cdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cdp")
    }
}

impl Cdp {
    pub async fn connect(ws_url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .with_context(|| format!("cannot open DevTools socket {ws_url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let r = routes.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let mut routes = r.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = routes.pending.remove(&id) {
                        let res = match v.get("error") {
                            Some(e) => Err(anyhow!(
                                "cdp error: {}",
                                e.get("message")
                                    .and_then(Value::as_str)
                                    .unwrap_or("unknown")
                            )),
                            None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                        };
                        let _ = tx.send(res);
                    }
                } else if let Some(method) = v.get("method").and_then(Value::as_str) {
                    route_event(&routes, method, &v);
                }
            }
            let mut routes = r.lock().unwrap_or_else(|e| e.into_inner());
            routes.closed = true;
            for (_, tx) in routes.pending.drain() {
                let _ = tx.send(Err(anyhow!("the browser closed the DevTools connection")));
            }
            routes.sessions.clear();
        });
        Ok(Self {
            out,
            routes,
            next: Arc::default(),
        })
    }

    /// Sends a command (to a session, or to the browser when `session` is `None`) and waits for
    /// its reply, at most [`CALL_DEADLINE`].
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.call_within(session, method, params, CALL_DEADLINE)
            .await
    }

    /// [`Cdp::call`] with its own deadline: past it the call fails (the reply, if it still comes,
    /// is discarded).
    pub async fn call_within(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        deadline: Duration,
    ) -> Result<Value> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if routes.closed {
                return Err(anyhow!("the browser closed the DevTools connection"));
            }
            routes.pending.insert(id, tx);
        }
        self.out
            .send(msg.to_string())
            .map_err(|_| anyhow!("DevTools connection is gone"))?;
        match tokio::time::timeout(deadline, rx).await {
            Ok(reply) => reply
                .map_err(|_| anyhow!("DevTools connection is gone"))?
                .with_context(|| format!("{method} failed")),
            Err(_) => {
                self.routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pending
                    .remove(&id);
                Err(anyhow!(
                    "{method} had no reply within {} ms",
                    deadline.as_millis()
                ))
            }
        }
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_connection(&self, other: &Cdp) -> bool {
        Arc::ptr_eq(&self.routes, &other.routes)
    }

    /// Whether the browser has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Receives every event of `session` from now on (up to [`EVENT_QUEUE`] unread), and
    /// `Target.detachedFromTarget` for it.
    pub fn subscribe(&self, session: &str) -> Events {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let dropped = Arc::<AtomicU64>::default();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .insert(
                session.to_owned(),
                Subscriber {
                    tx,
                    dropped: dropped.clone(),
                },
            );
        Events { rx, dropped }
    }

    pub fn unsubscribe(&self, session: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .remove(session);
    }
}

/// Routes an event to its session's subscriber. A detach is sent on the parent (browser)
/// connection, naming the session in its params: the session's own subscriber gets it too, so a
/// run learns its page is gone.
fn route_event(routes: &Routes, method: &str, v: &Value) {
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    let session = match method {
        "Target.detachedFromTarget" => params.get("sessionId"),
        _ => v.get("sessionId"),
    }
    .and_then(Value::as_str)
    .unwrap_or_default();
    if let Some(sub) = routes.sessions.get(session) {
        sub.deliver(CdpEvent {
            method: method.to_owned(),
            params,
        });
    }
}
