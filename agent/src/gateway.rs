//! The CDP gateway: the browser's raw DevTools protocol, offered on the overlay to controllers
//! (see [`crate::authority`]). Served with axum over hyper's HTTP/1.1, one overlay stream per
//! connection. Chromium only listens on 127.0.0.1 and rejects a foreign `Host` or `Origin`, so the
//! gateway asks it on its own behalf, rewrites the URLs in `/json/*` answers to point back at
//! itself, and relays WebSocket sessions message by message, refusing the commands that would take
//! the browser past the egress guard or turn off certificate checks (see [`refusal`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Upstream;

use crate::authority::{Authority, Service};
use crate::chromium::{devtools_http, BrowserState, Supervisor};

/// Roles of mesh members by overlay address, kept current from gossip.
pub type Roles = Arc<RwLock<HashMap<IpAddr, String>>>;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest CDP message relayed either way: screenshots and response bodies arrive as one message.
const MAX_MESSAGE: usize = 256 << 20;

/// What every request on one gateway connection is judged by.
#[derive(Debug)]
struct Gate {
    from: SocketAddr,
    me: SocketAddr,
    authority: Authority,
    sup: Supervisor,
}

impl Gate {
    /// The browser's DevTools port, if the client is a controller and the browser is ready.
    #[allow(clippy::result_large_err)]
    fn admit(&self) -> Result<u16, Response> {
        if let Err(why) = self.authority.check(self.from.ip(), Service::Gateway) {
            return Err(error(StatusCode::FORBIDDEN, why));
        }
        match self.sup.state() {
            BrowserState::Ready { port, .. } => Ok(port),
            other => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("browser is {}", other.tag()),
            )),
        }
    }
}

/// Serves one gateway connection from `from` (HTTP/1.1, upgrades included) until it closes.
pub async fn serve<S>(
    client: S,
    from: SocketAddr,
    me: SocketAddr,
    authority: &Authority,
    sup: &Supervisor,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gate = Arc::new(Gate {
        from,
        me,
        authority: authority.clone(),
        sup: sup.clone(),
    });
    let app = Router::new()
        .route("/json", any(json_endpoint))
        .route("/json/{*rest}", any(json_endpoint))
        .route("/devtools/{*rest}", any(devtools))
        .fallback(not_found)
        .with_state(gate);
    // a member that connects and never finishes its request must not hold a stream forever
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(client), TowerToHyperService::new(app))
        .with_upgrades()
        .await
        .context("gateway connection failed")
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn not_found(State(gate): State<Arc<Gate>>) -> Response {
    if let Err(refused) = gate.admit() {
        return refused;
    }
    error(
        StatusCode::NOT_FOUND,
        "the gateway serves /json/version, /json/list, /json/new and /devtools/*",
    )
}

/// `/json/*`: asked of Chromium, with its URLs pointed back at the gateway.
async fn json_endpoint(State(gate): State<Arc<Gate>>, uri: Uri, headers: HeaderMap) -> Response {
    let port = match gate.admit() {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    // Chromium wants PUT for /json/new; older clients send GET, so accept either
    let method = if uri.path().starts_with("/json/new") {
        Method::PUT
    } else {
        Method::GET
    };
    let body = match devtools_http(port, method, path).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    };
    // point the URLs back at whatever address the client reached us by (a local forwarder such
    // as `vantage connect`, or the overlay address itself)
    let host = host_header(&headers).unwrap_or_else(|| host_of(gate.me));
    let rewritten = body
        .replace(&format!("127.0.0.1:{port}"), &host)
        .replace(&format!("localhost:{port}"), &host);
    (
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        rewritten,
    )
        .into_response()
}

fn host_of(a: SocketAddr) -> String {
    match a {
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
        SocketAddr::V4(v) => v.to_string(),
    }
}

/// The request's `Host`, if it is a plain `host[:port]` (no spaces or URL syntax to smuggle in).
fn host_header(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::HOST)?.to_str().ok()?.trim();
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    ok.then(|| v.to_owned())
}

/// `/devtools/*`: a WebSocket session with the browser or one of its targets, relayed.
async fn devtools(
    State(gate): State<Arc<Gate>>,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let port = match gate.admit() {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // connect first, so a client asking for a target that is gone learns it from the status
    let target = format!("ws://127.0.0.1:{port}{}", uri.path());
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let upstream =
        match tokio_tungstenite::connect_async_with_config(&target, Some(config), false).await {
            Ok((s, _)) => s,
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot open {}: {e}", uri.path()),
                )
            }
        };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |client| relay(client, upstream))
}

type UpstreamSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Passes messages both ways until either side closes; commands [`refusal`] names are answered
/// with an error here and never reach the browser.
async fn relay(client: WebSocket, upstream: UpstreamSocket) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_browser, mut from_browser) = upstream.split();
    let (answers, mut refused) = mpsc::channel::<String>(16);
    let inbound = async move {
        while let Some(Ok(m)) = from_client.next().await {
            let out = match m {
                ws::Message::Text(t) => match refusal(t.as_str()) {
                    Some(answer) => {
                        tracing::warn!("cdp gateway refused a command: {answer}");
                        if answers.send(answer).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    None => Upstream::text(t.as_str()),
                },
                ws::Message::Binary(b) => Upstream::binary(b),
                ws::Message::Close(_) => break,
                ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
            };
            if to_browser.send(out).await.is_err() {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    let outbound = async move {
        loop {
            let out = tokio::select! {
                m = from_browser.next() => match m {
                    Some(Ok(Upstream::Text(t))) => ws::Message::Text(t.as_str().into()),
                    Some(Ok(Upstream::Binary(b))) => ws::Message::Binary(b),
                    Some(Ok(Upstream::Ping(_) | Upstream::Pong(_) | Upstream::Frame(_))) => continue,
                    Some(Ok(Upstream::Close(_)) | Err(_)) | None => break,
                },
                Some(answer) = refused.recv() => ws::Message::Text(answer.into()),
            };
            if to_client.send(out).await.is_err() {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

/// The error answer for a CDP command the gateway does not pass on, or `None` to pass it. Refused:
/// a browser context with its own `proxyServer` (its traffic would bypass the egress guard) and
/// turning certificate errors off or overriding them (for every job on the browser), also when
/// wrapped in `Target.sendMessageToTarget`. A message that is not a JSON object is refused too, so
/// no parser difference between here and Chromium can carry a command past the check.
pub fn refusal(text: &str) -> Option<String> {
    let refuse = |id: Option<&Value>, session: Option<&Value>, why: String| {
        let mut answer = json!({
            "error": { "code": -32000, "message": format!("refused by the vantage cdp gateway: {why}") }
        });
        if let Some(id) = id {
            answer["id"] = id.clone();
        }
        if let Some(s) = session {
            answer["sessionId"] = s.clone();
        }
        Some(answer.to_string())
    };
    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
        return refuse(None, None, "a message must be a JSON object".into());
    };
    let (id, session) = (msg.get("id"), msg.get("sessionId"));
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = msg.get("params");
    let why = match method {
        "Target.createBrowserContext"
            if params.and_then(|p| p.get("proxyServer")).is_some_and(|p| !p.is_null()) =>
        {
            "Target.createBrowserContext with a proxyServer would bypass the agent's egress guard; create the context without one"
                .to_owned()
        }
        "Security.setIgnoreCertificateErrors" | "Security.setOverrideCertificateErrors" => {
            format!("{method}: certificate checks stay on for every client of this agent")
        }
        "Target.sendMessageToTarget" => {
            let inner = params
                .and_then(|p| p.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            refusal(inner)?;
            "Target.sendMessageToTarget carries a refused command".to_owned()
        }
        _ => return None,
    };
    refuse(id, session, why)
}
