//! `/api/cdp/{member}`: a browser's raw CDP, for `vantage connect` and scripts. The controller
//! opens the agent's CDP gateway over the mesh and relays WebSocket messages both ways; the
//! gateway does Chromium's Host/Origin handling, so nothing here rewrites CDP.

use std::net::SocketAddrV6;

use anyhow::{bail, Context, Result};
use axum::extract::ws::{Message as AxMsg, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message as TMsg;
use vantage_mesh::Node;

/// The largest `/json/version` answer read, in bytes.
const MAX_VERSION: usize = 64 << 10;

/// The browser's `/json/version`, through the agent's gateway.
pub async fn version(node: &Node, gateway: SocketAddrV6) -> Result<serde_json::Value> {
    let stream = node
        .tcp_connect(gateway)
        .await
        .context("cannot reach the agent's CDP gateway over the mesh")?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake with the CDP gateway failed")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/json/version")
        .header(hyper::header::HOST, gateway.to_string())
        .body(Empty::<hyper::body::Bytes>::new())?;
    let res = send
        .send_request(req)
        .await
        .context("the CDP gateway did not answer")?;
    let status = res.status();
    let body = http_body_util::Limited::new(res.into_body(), MAX_VERSION)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the gateway's answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "the agent's CDP gateway answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    serde_json::from_slice(&body).context("the gateway's /json/version is not JSON")
}

/// Largest CDP message relayed, in bytes: Chromium sends a full-page screenshot as one message.
pub const MAX_MESSAGE: usize = 256 << 20;

fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Relays a client's WebSocket to the browser's, until either side closes.
pub async fn relay(client: WebSocket, node: Node, gateway: SocketAddrV6) {
    if let Err(e) = try_relay(client, &node, gateway).await {
        tracing::info!(%gateway, error = %format!("{e:#}"), "cdp relay ended");
    }
}

async fn try_relay(client: WebSocket, node: &Node, gateway: SocketAddrV6) -> Result<()> {
    let v = version(node, gateway).await?;
    let url = v
        .get("webSocketDebuggerUrl")
        .and_then(|u| u.as_str())
        .context("the gateway's /json/version has no webSocketDebuggerUrl")?
        .to_owned();
    let stream = node.tcp_connect(gateway).await?;
    let (browser, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()))
            .await
            .context("websocket handshake with the CDP gateway failed")?;
    let (mut bw, mut br) = browser.split();
    let (mut cw, mut cr) = client.split();
    let up = async {
        while let Some(m) = cr.next().await {
            let m = match m? {
                AxMsg::Text(t) => TMsg::Text(t.as_str().into()),
                AxMsg::Binary(b) => TMsg::Binary(b),
                AxMsg::Ping(p) => TMsg::Ping(p),
                AxMsg::Pong(p) => TMsg::Pong(p),
                AxMsg::Close(_) => break,
            };
            bw.send(m).await?;
        }
        let _ = bw.close().await;
        anyhow::Ok(())
    };
    let down = async {
        while let Some(m) = br.next().await {
            let m = match m? {
                TMsg::Text(t) => AxMsg::Text(t.as_str().into()),
                TMsg::Binary(b) => AxMsg::Binary(b),
                TMsg::Ping(p) => AxMsg::Ping(p),
                TMsg::Pong(p) => AxMsg::Pong(p),
                TMsg::Close(_) => break,
                TMsg::Frame(_) => continue,
            };
            cw.send(m).await?;
        }
        let _ = cw.close().await;
        anyhow::Ok(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}
