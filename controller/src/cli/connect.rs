//! `vantage connect sin`: a local CDP endpoint (what `chromium --remote-debugging-port` offers)
//! whose browser is an agent's, reached through the controller's authenticated WebSocket proxy
//! and the mesh. Playwright's `connectOverCDP` and Puppeteer's `browserURL` read `/json/version`
//! and open its `webSocketDebuggerUrl`; both are served here, the WebSocket relayed frame by frame.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::client::{error_answer, path_segment, Client};
use super::error::CliError;

/// The local port Chromium's DevTools use by default, so scripts written for a local browser
/// work unchanged.
pub const DEFAULT_PORT: u16 = 9222;
/// CDP messages carry screenshots and whole DOMs; Chromium itself allows 256 MiB.
const MAX_MESSAGE: usize = 256 << 20;
/// How long closing a side may take before the relay gives up on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Flags of `vantage connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The agent: a member name (`sin-1`) or a region code (`sin`, any healthy agent there).
    pub member: String,
    /// Local port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

/// What each local request needs to reach the agent's browser.
#[derive(Debug, Clone)]
struct Relay {
    client: Client,
    member: String,
    /// The local endpoint, for rewriting `webSocketDebuggerUrl`.
    local: SocketAddr,
    /// Turns true at shutdown, so open relays end too.
    stop: watch::Receiver<bool>,
}

/// Serves a local CDP endpoint for `member` on `listener` until `shutdown` resolves. First asks
/// the controller for the browser's `/json/version`, so a refused token (401), an unknown member
/// (404) or no agent (503) is an error at once (a [`CliError`] inside the `anyhow::Error`).
pub async fn connect_endpoint(
    server: &str,
    token: &str,
    member: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = Client::new(server, token)?;
    check(&client, member).await?;
    serve(client, member, listener, shutdown).await
}

/// `vantage connect`: check, listen, say where, serve until Ctrl-C.
pub async fn run(client: &Client, args: &ConnectArgs) -> Result<(), CliError> {
    check(client, &args.member).await?;
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot listen on 127.0.0.1:{}: {e}; pick another --port (0 for any free one)",
                args.port
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Server(format!("cannot read the local address: {e}")))?;
    println!(
        "CDP endpoint for {}: http://{addr} (Playwright: chromium.connectOverCDP(\"http://{addr}\"))",
        args.member
    );
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(client.clone(), &args.member, listener, ctrl_c)
        .await
        .map_err(|e| CliError::Server(format!("{e:#}")))
}

/// The browser's `/json/version` through the controller: proof that the token is good and the
/// member exists and has a browser.
pub async fn check(client: &Client, member: &str) -> Result<serde_json::Value, CliError> {
    let path = format!("/api/cdp/{}/version", path_segment(member));
    client.get_json(&path, &[]).await
}

/// Serves `/json/version` and WebSocket upgrades under `/devtools/` on `listener`.
pub async fn serve(
    client: Client,
    member: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let (stop_tx, stop) = watch::channel(false);
    let relay = Relay {
        client,
        member: member.to_owned(),
        local,
        stop,
    };
    let app = Router::new()
        .route("/json/version", get(version))
        .route("/json/version/", get(version))
        .route("/devtools/{*rest}", any(devtools))
        .with_state(relay);
    tracing::info!(%local, member, "serving a CDP endpoint");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await?;
    Ok(())
}

/// `GET /json/version`: the agent's, with the debugger URL pointing here.
async fn version(State(relay): State<Relay>) -> Response {
    match check(&relay.client, &relay.member).await {
        Ok(v) => Json(rewrite_version(v, relay.local)).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Points `webSocketDebuggerUrl` at the local endpoint, keeping the browser id (the last path
/// segment) so clients that check it still see the browser's own.
pub fn rewrite_version(mut v: serde_json::Value, local: SocketAddr) -> serde_json::Value {
    const KEY: &str = "webSocketDebuggerUrl";
    let id = v
        .get(KEY)
        .and_then(|u| u.as_str())
        .and_then(|u| u.rsplit('/').next())
        .filter(|id| !id.is_empty() && !id.contains(':'))
        .unwrap_or("vantage")
        .to_owned();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            KEY.into(),
            format!("ws://{local}/devtools/browser/{id}").into(),
        );
    }
    v
}

/// A WebSocket under `/devtools/`: open the controller's CDP proxy first (so a refusal is an
/// HTTP error the client sees), then relay.
async fn devtools(
    State(relay): State<Relay>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            StatusCode::BAD_REQUEST,
            "this is a CDP endpoint: /devtools/ takes WebSocket upgrades only",
        )
            .into_response();
    };
    let upstream = match open_upstream(&relay.client, &relay.member).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("cannot open the browser's CDP through the controller: {e}");
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let stop = relay.stop.clone();
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |local| splice(local, upstream, stop))
}

/// `ws://` or `wss://` URL of the controller's CDP proxy for `member`.
pub fn upstream_url(base: &str, member: &str) -> Result<String, CliError> {
    let rest = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        return Err(CliError::Usage(format!(
            "--server `{base}` must start with http:// or https://"
        )));
    };
    Ok(format!("{rest}/api/cdp/{}", path_segment(member)))
}

async fn open_upstream(client: &Client, member: &str) -> Result<Upstream, CliError> {
    let url = upstream_url(client.base(), member)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(format!("cannot make a WebSocket request to {url}: {e}")))?;
    let auth = format!("Bearer {}", client.token())
        .parse()
        .map_err(|_| CliError::Usage("the token is not a valid HTTP header value".into()))?;
    req.headers_mut()
        .insert(tungstenite::http::header::AUTHORIZATION, auth);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tokio_tungstenite::connect_async_with_config(req, Some(config), false).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err(error_answer(
                resp.status().as_u16(),
                &String::from_utf8_lossy(body),
            ))
        }
        Err(e) => Err(CliError::Server(format!(
            "cannot open the CDP WebSocket at {url}: {e}"
        ))),
    }
}

/// Relays both ways until either side closes or the endpoint shuts down, then closes both.
async fn splice(local: WebSocket, upstream: Upstream, mut stop: watch::Receiver<bool>) {
    let (mut local_tx, mut local_rx) = local.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    {
        let to_browser = pump(&mut local_rx, &mut up_tx, to_tungstenite);
        let to_client = pump(&mut up_rx, &mut local_tx, to_axum);
        tokio::select! {
            _ = to_browser => {}
            _ = to_client => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    // one side is done; the other gets a close frame rather than a dropped connection
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, up_tx.close()).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, local_tx.close()).await;
}

/// Forwards messages from `rx` to `tx` until `rx` ends or errs, `tx` fails, or a close went
/// through. Written once for both directions; `convert` maps one library's messages to the other's.
async fn pump<M, O, E>(
    rx: &mut (impl Stream<Item = Result<M, E>> + Unpin),
    tx: &mut (impl Sink<O> + Unpin),
    convert: fn(M) -> Option<(O, bool)>,
) {
    while let Some(Ok(m)) = rx.next().await {
        let Some((out, is_close)) = convert(m) else {
            continue;
        };
        if tx.send(out).await.is_err() || is_close {
            break;
        }
    }
}

/// A local client's message, for the browser; `true` when it is the close.
fn to_tungstenite(m: ws::Message) -> Option<(tungstenite::Message, bool)> {
    use tungstenite::Message as T;
    Some(match m {
        ws::Message::Text(t) => (T::Text(t.as_str().into()), false),
        ws::Message::Binary(b) => (T::Binary(b), false),
        ws::Message::Ping(b) => (T::Ping(b), false),
        ws::Message::Pong(b) => (T::Pong(b), false),
        ws::Message::Close(c) => (
            T::Close(c.map(|c| tungstenite::protocol::CloseFrame {
                code: c.code.into(),
                reason: c.reason.as_str().into(),
            })),
            true,
        ),
    })
}

/// The browser's message, for the local client; raw frames never come out of a read.
fn to_axum(m: tungstenite::Message) -> Option<(ws::Message, bool)> {
    use tungstenite::Message as T;
    Some(match m {
        T::Text(t) => (ws::Message::Text(t.as_str().into()), false),
        T::Binary(b) => (ws::Message::Binary(b), false),
        T::Ping(b) => (ws::Message::Ping(b), false),
        T::Pong(b) => (ws::Message::Pong(b), false),
        T::Close(c) => (
            ws::Message::Close(c.map(|c| ws::CloseFrame {
                code: c.code.into(),
                reason: c.reason.as_str().into(),
            })),
            true,
        ),
        T::Frame(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugger_url_points_here_with_the_same_id() {
        let v = serde_json::json!({
            "Browser": "Chrome/126.0",
            "webSocketDebuggerUrl": "ws://[fdaa::1]:9222/devtools/browser/4f1c-88aa"
        });
        let local: SocketAddr = "127.0.0.1:9333".parse().unwrap();
        let v = rewrite_version(v, local);
        assert_eq!(
            v["webSocketDebuggerUrl"],
            "ws://127.0.0.1:9333/devtools/browser/4f1c-88aa"
        );
        assert_eq!(v["Browser"], "Chrome/126.0");
    }

    #[test]
    fn upstream_follows_the_server_scheme() {
        assert_eq!(
            upstream_url("http://127.0.0.1:8080", "sin").unwrap(),
            "ws://127.0.0.1:8080/api/cdp/sin"
        );
        assert_eq!(
            upstream_url("https://vantage.example", "sin-1").unwrap(),
            "wss://vantage.example/api/cdp/sin-1"
        );
    }

    /// A stand-in for the controller: `/version` and a WebSocket that echoes, both behind the
    /// token, so the relay is tested without a fleet.
    async fn fake_controller() -> SocketAddr {
        use axum::extract::Path;
        use axum::http::HeaderMap;

        fn authorized(h: &HeaderMap) -> bool {
            h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer good-token")
        }
        fn refusal(status: StatusCode, code: &str, error: &str) -> Response {
            let body = vantage_proto::api::ErrorBody {
                code: code.into(),
                error: error.into(),
            };
            (status, Json(body)).into_response()
        }
        async fn version(Path(member): Path<String>, h: HeaderMap) -> Response {
            if !authorized(&h) {
                return refusal(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token");
            }
            if member != "sin" {
                return refusal(StatusCode::NOT_FOUND, "not_found", "no agent or region `x`");
            }
            Json(serde_json::json!({
                "Browser": "Chrome/1",
                "webSocketDebuggerUrl": "ws://[fdaa::1]:9222/devtools/browser/abc-1"
            }))
            .into_response()
        }
        async fn cdp(h: HeaderMap, ws: WebSocketUpgrade) -> Response {
            if !authorized(&h) {
                return refusal(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token");
            }
            // above the 16 MiB frame default, as Chromium's own frames may be
            ws.max_frame_size(MAX_MESSAGE)
                .max_message_size(MAX_MESSAGE)
                .on_upgrade(|mut s| async move {
                    while let Some(Ok(m)) = s.next().await {
                        let close = matches!(m, ws::Message::Close(_));
                        if s.send(m).await.is_err() || close {
                            break;
                        }
                    }
                })
        }
        let app = Router::new()
            .route("/api/cdp/{member}/version", get(version))
            .route("/api/cdp/{member}", get(cdp));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    async fn refusal_code(server: &str, token: &str, member: &str) -> (u8, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = connect_endpoint(server, token, member, l, std::future::pending())
            .await
            .unwrap_err();
        let cli = e.downcast_ref::<CliError>().expect("a CliError");
        (cli.exit_code(), cli.to_string())
    }

    #[tokio::test]
    async fn refusals_fail_at_startup() {
        let server = format!("http://{}", fake_controller().await);
        let (code, msg) = refusal_code(&server, "bad-token", "sin").await;
        assert_eq!(code, 2);
        assert!(msg.contains("refused the token (401)"), "{msg}");
        let (code, msg) = refusal_code(&server, "good-token", "nowhere").await;
        assert_eq!(code, 2);
        assert!(msg.contains("404"), "{msg}");
        let (code, _) = refusal_code("http://127.0.0.1:1", "good-token", "sin").await;
        assert_eq!(code, 5, "an unreachable controller is a network error");
    }

    #[tokio::test]
    async fn relays_cdp_both_ways() {
        use tungstenite::Message as M;
        let server = format!("http://{}", fake_controller().await);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = l.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            connect_endpoint(&server, "good-token", "sin", l, async {
                let _ = stop_rx.await;
            })
            .await
        });

        let v: serde_json::Value = reqwest::get(format!("http://{local}/json/version/"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = v["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        assert_eq!(url, format!("ws://{local}/devtools/browser/abc-1"));

        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
                .await
                .unwrap();
        ws.send(M::Text(r#"{"id":1,"method":"Browser.getVersion"}"#.into()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(
            back.into_text().unwrap().as_str(),
            r#"{"id":1,"method":"Browser.getVersion"}"#
        );
        let big = vec![7u8; 20 << 20];
        ws.send(M::Binary(big.clone().into())).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(
            back.into_data().len(),
            big.len(),
            "a 20 MiB message goes through"
        );
        ws.close(None).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }

        let _ = stop_tx.send(());
        task.await.unwrap().unwrap();
    }
}
