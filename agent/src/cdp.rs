//! A small Chrome DevTools Protocol client over one WebSocket to the local browser: commands with
//! ids and replies, and events routed to per-session subscribers. One task owns the socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

#[derive(Default)]
struct Routes {
    pending: Pending,
    sessions: HashMap<String, mpsc::UnboundedSender<CdpEvent>>,
    closed: bool,
}

/// A connection to the browser endpoint (`ws://127.0.0.1:PORT/devtools/browser/…`).
#[derive(Clone)]
pub struct Cdp {
    out: mpsc::UnboundedSender<String>,
    routes: Arc<Mutex<Routes>>,
    next: Arc<std::sync::atomic::AtomicU64>,
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
                    let session = v
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if let Some(tx) = routes.sessions.get(session) {
                        let _ = tx.send(CdpEvent {
                            method: method.to_owned(),
                            params: v.get("params").cloned().unwrap_or(Value::Null),
                        });
                    }
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
    /// its reply.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
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
        rx.await
            .map_err(|_| anyhow!("DevTools connection is gone"))?
            .with_context(|| format!("{method} failed"))
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_connection(&self, other: &Cdp) -> bool {
        Arc::ptr_eq(&self.routes, &other.routes)
    }

    /// Whether the browser has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Receives every event of `session` from now on.
    pub fn subscribe(&self, session: &str) -> mpsc::UnboundedReceiver<CdpEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .insert(session.to_owned(), tx);
        rx
    }

    pub fn unsubscribe(&self, session: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .remove(session);
    }
}
