//! A second test origin, on axum, for pages that stay alive after their load event or carry
//! cookies: what the agent's quiet window and header capture are checked against.
//!
//! - [`SOCKET_PATH`]: a page that opens a WebSocket ([`WS_PATH`]) and an EventSource
//!   ([`EVENTS_PATH`]), each sending a message every [`TICK`] for as long as the page is open.
//! - [`UNREAD_PATH`]: a page that starts [`UNREAD_FETCHES`] `fetch()`es of [`UNREAD_BYTES`] each
//!   ([`BLOB_PATH`]) and never reads their bodies, so Chromium never finishes them.
//! - [`COOKIE_PATH`]: sets the cookie [`COOKIE`] and then loads [`ECHO_PATH`], which the browser
//!   requests with that cookie.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

pub const SOCKET_PATH: &str = "/socket";
pub const WS_PATH: &str = "/ws";
pub const EVENTS_PATH: &str = "/events";
/// How often the socket and the event stream send.
pub const TICK: Duration = Duration::from_millis(100);
pub const UNREAD_PATH: &str = "/unread";
pub const BLOB_PATH: &str = "/blob";
pub const UNREAD_FETCHES: usize = 8;
/// Larger than Chromium's body pipe, so an unread body stalls its request.
pub const UNREAD_BYTES: usize = 8 << 20;
pub const COOKIE_PATH: &str = "/cookie";
pub const ECHO_PATH: &str = "/echo";
/// `name=value` as set and as sent back.
pub const COOKIE: &str = "vantage=t1";

/// The running server; dropping it stops it.
#[derive(Debug)]
pub struct Live {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Live {
    pub async fn start() -> anyhow::Result<Live> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route(SOCKET_PATH, get(socket_page))
            .route(WS_PATH, get(ws))
            .route(EVENTS_PATH, get(events))
            .route(UNREAD_PATH, get(unread_page))
            .route(BLOB_PATH, get(blob))
            .route(COOKIE_PATH, get(cookie_page))
            .route(ECHO_PATH, get(|| async { "echo\n" }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Live { addr, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn socket_page() -> Html<String> {
    Html(format!(
        "<!doctype html>\n<title>socket</title>\n<p id=n>0</p>\n<script>\n\
         let n = 0;\n\
         const ws = new WebSocket('ws://' + location.host + '{WS_PATH}');\n\
         ws.onmessage = () => document.getElementById('n').textContent = ++n;\n\
         const es = new EventSource('{EVENTS_PATH}');\n\
         es.onmessage = () => n++;\n\
         </script>\n"
    ))
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            if socket.send(Message::text("tick")).await.is_err() {
                return;
            }
        }
    })
}

async fn events() -> Response {
    let stream = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(TICK).await;
        Some((Ok::<_, std::convert::Infallible>("data: tick\n\n"), ()))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn unread_page() -> Html<String> {
    Html(format!(
        "<!doctype html>\n<title>unread</title>\n<script>\n\
         for (let i = 0; i < {UNREAD_FETCHES}; i++) fetch('{BLOB_PATH}?' + i);\n\
         </script>\n"
    ))
}

async fn blob() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        vec![b'x'; UNREAD_BYTES],
    )
}

async fn cookie_page() -> impl IntoResponse {
    (
        [
            (header::SET_COOKIE, format!("{COOKIE}; Path=/")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Html(format!(
            "<!doctype html>\n<title>cookie</title>\n<script>fetch('{ECHO_PATH}')</script>\n"
        )),
    )
}
