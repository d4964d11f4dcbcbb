//! The test origin's servers: hyper's HTTP/1.1 connection in front of one axum handler that
//! answers from the site's table. Each connection is configured to behave as the page's ground
//! truth needs: one request per connection (`Connection: close`), header names in Title-Case, no
//! `Date`, an exact `Content-Length` on every response (also the stalled one), and the server delay
//! counted from the moment the request head was read.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt as _;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::page::huge_html;
use super::{
    Hit, Resource, Side, HTML, HUGE_PATH, NEVER_DECLARED_BYTES, NEVER_PATH, NOISY_ERRORS,
    NOISY_FETCHES, NOISY_PATH, NOISY_TEXT, NOT_FOUND, SLOW_MAX, SLOW_PATH, TEXT,
};

/// One server: its routes and the shared hit log.
pub(super) struct Server {
    pub side: Side,
    pub routes: Vec<Resource>,
    pub hits: Arc<Mutex<Vec<Hit>>>,
}

/// Accepts connections until the task is aborted. Owning the connections here means aborting this
/// task closes all of them, including the ones `/never` holds open.
pub(super) async fn accept_loop(server: Arc<Server>, listener: TcpListener) {
    let app = Router::new().fallback(answer).with_state(server);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve(app.clone(), stream));
                }
            }
            // Reap finished connections so the set does not grow for ever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one request on one connection, then closes it. Errors mean the client left (or sent
/// something that is not HTTP, which hyper answers itself), which is no concern of the server's.
async fn serve(app: Router, stream: tokio::net::TcpStream) {
    let _ = http1::Builder::new()
        .keep_alive(false)
        // the names as a hand-written server sends them, for reports that show headers
        .title_case_headers(true)
        // only the headers the truth knows, so the bytes on the wire stay body + a known head
        .auto_date_header(false)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
}

/// The handler for every request: logs the hit as soon as the head is read (so a client that
/// gives up during the delay is still counted), waits the route's delay, then answers.
async fn answer(State(server): State<Arc<Server>>, method: Method, uri: Uri) -> Response {
    // only origin-form targets (`/path?query`) are part of the site
    let target = match uri.path_and_query() {
        Some(p) if uri.scheme().is_none() && p.as_str().starts_with('/') => p.as_str(),
        _ => "?",
    };
    let reply = if target == "?" {
        Reply::text(400, b"bad request\n")
    } else {
        server.reply(&method, target)
    };
    server
        .hits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Hit {
            origin: server.side,
            target: target.to_owned(),
            status: reply.status,
        });
    tokio::time::sleep(reply.delay).await;
    reply.into_response()
}

/// What to send: a head, then either the whole body or a prefix of a body that never completes.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
    body: Content,
}

enum Content {
    Full(Bytes),
    /// Declare `declared` bytes, send `prefix`, then hold the connection open.
    Stall {
        declared: usize,
        prefix: &'static [u8],
    },
}

impl Reply {
    /// A short plain-text answer without delay, for requests that are not part of the site.
    fn text(status: u16, body: &'static [u8]) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Content::Full(Bytes::from_static(body)),
        }
    }

    fn html(delay: Duration, body: Content) -> Reply {
        Reply {
            status: 200,
            content_type: HTML,
            headers: Vec::new(),
            delay,
            body,
        }
    }

    /// The response, its `Content-Length` set whatever the body (hyper keeps it for `HEAD`, and
    /// sends no body then).
    fn into_response(self) -> Response {
        let (declared, body) = match self.body {
            Content::Full(bytes) => (bytes.len(), Body::from(bytes)),
            Content::Stall { declared, prefix } => {
                let prefix = futures_util::stream::once(async move {
                    Ok::<_, Infallible>(Bytes::from_static(prefix))
                });
                // the connection is held until the server stops (its task is then dropped)
                let body = prefix.chain(futures_util::stream::pending());
                (declared, Body::from_stream(body))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("a route's header name");
            let value = HeaderValue::try_from(value).expect("a route's header value");
            h.append(name, value);
        }
        response
    }
}

impl Server {
    fn reply(&self, method: &Method, target: &str) -> Reply {
        if method != Method::GET && method != Method::HEAD {
            return Reply::text(405, b"method not allowed\n");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if let Some(r) = self.routes.iter().find(|r| r.path == path) {
            return Reply {
                status: r.status,
                content_type: r.content_type,
                headers: r.headers.clone(),
                delay: r.delay,
                body: Content::Full(r.body.clone()),
            };
        }
        match (self.side, path) {
            (Side::Main, HUGE_PATH) => {
                Reply::html(Duration::ZERO, Content::Full(huge_html().into()))
            }
            (Side::Main, NEVER_PATH) => Reply::html(
                Duration::ZERO,
                Content::Stall {
                    declared: NEVER_DECLARED_BYTES,
                    prefix: b"<!doctype html>\n<title>never</title>\n<p>this body never",
                },
            ),
            (Side::Main, SLOW_PATH) => slow(query),
            (Side::Main, NOISY_PATH) => Reply::html(Duration::ZERO, Content::Full(noisy().into())),
            _ => Reply::text(404, NOT_FOUND),
        }
    }
}

/// `/slow?ms=N`: a small page after N ms (at most [`SLOW_MAX`]), or a 400 without `ms`.
fn slow(query: &str) -> Reply {
    let ms = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok());
    let Some(ms) = ms else {
        return Reply::text(400, b"want /slow?ms=N\n");
    };
    let delay = Duration::from_millis(ms).min(SLOW_MAX);
    let body = format!(
        "<!doctype html>\n<title>slow</title>\n<p>after {} ms</p>\n",
        delay.as_millis()
    );
    Reply::html(delay, Content::Full(body.into()))
}

/// `/noisy`: more console errors and failing images than a report keeps.
fn noisy() -> String {
    format!(
        "<!doctype html>\n<title>noisy</title>\n<script>\n\
         for (let i = 0; i < {NOISY_ERRORS}; i++) console.error('x'.repeat({NOISY_TEXT}));\n\
         for (let i = 0; i < {NOISY_FETCHES}; i++) document.write('<img src=/nothing-here?' + i + '>');\n\
         </script>\n"
    )
}
