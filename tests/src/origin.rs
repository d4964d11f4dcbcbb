//! A test origin site whose every part has a known server delay, size and status, so a page-load
//! report can be checked against ground truth ([`Truth`]).
//!
//! Two HTTP/1.1 servers (axum on hyper, `serve.rs`) on `127.0.0.1:0`: the *main* origin serves the
//! page and its same-origin subresources, the *cross* origin serves one script with
//! `Access-Control-Allow-Origin: *`. Every response carries an exact `Content-Length`,
//! `Cache-Control: no-store` (so every load fetches everything again) and `Connection: close`
//! (so there is no keep-alive state to get wrong). Dropping the [`Origin`] stops both servers and
//! closes every connection they still hold. The content is in `page.rs`.
//!
//! The page (`/index.html`) is laid out in absolute CSS pixels for a 1280×800 viewport so its
//! layout shift and its LCP element are known exactly; see [`layout_shift_score`].
//!
//! The main origin also answers three "bad input" routes that the page never uses: [`HUGE_PATH`]
//! (a 10 MiB HTML page), [`NEVER_PATH`] (the head and a little body, then nothing until the server
//! stops) and `/slow?ms=N` (a small page after N ms).

mod page;
mod serve;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use page::{app_js, font_bytes, hero_png, page_html, small_png, API_JSON, STYLE_CSS, WIDGET_JS};
use serve::{accept_loop, Server};

/// The viewport the page is designed for, in CSS pixels (width, height).
pub const VIEWPORT: (u32, u32) = (1280, 800);
/// A 10 MiB HTML page.
pub const HUGE_PATH: &str = "/huge";
/// Exact body size of [`HUGE_PATH`], in bytes.
pub const HUGE_BYTES: usize = 10 * 1024 * 1024;
/// Sends its head (declaring [`NEVER_DECLARED_BYTES`]) and a short prefix of the body, then holds
/// the connection open without sending more until the server stops.
pub const NEVER_PATH: &str = "/never";
/// The `Content-Length` that [`NEVER_PATH`] declares and never delivers.
pub const NEVER_DECLARED_BYTES: usize = 1024 * 1024;
/// `/slow?ms=N` answers a small HTML page after N milliseconds (capped at [`SLOW_MAX`]).
pub const SLOW_PATH: &str = "/slow";
/// `/noisy` logs [`NOISY_ERRORS`] console errors of [`NOISY_TEXT`] characters each and loads
/// [`NOISY_FETCHES`] missing images before its load event: more than a report keeps.
pub const NOISY_PATH: &str = "/noisy";
pub const NOISY_ERRORS: usize = 1000;
pub const NOISY_TEXT: usize = 10_000;
pub const NOISY_FETCHES: usize = 2100;
/// The longest delay `/slow` honours, so a typo cannot hang a test for hours.
pub const SLOW_MAX: Duration = Duration::from_secs(120);

// Page geometry in CSS pixels. Everything is absolutely positioned so that exactly one box (the
// `#shifted` block) moves when the banner is inserted; see `layout_shift_score`.
const HEADER_HEIGHT: u32 = 60;
const HERO_SIZE: (u32, u32) = (1000, 500);
/// Top of the `#below` container: directly under the hero.
const BELOW_TOP: u32 = HEADER_HEIGHT + HERO_SIZE.1;
const SHIFTED_HEIGHT: u32 = 200;
/// Height of the banner inserted above `#shifted`, hence the distance `#shifted` moves down.
const BANNER_HEIGHT: u32 = 100;
const SMALL_SIZE: u32 = 32;

const DOCUMENT_DELAY: Duration = Duration::from_millis(150);
const LONG_TASK: Duration = Duration::from_millis(300);
const SHIFT_AFTER: Duration = Duration::from_millis(500);

/// Which of the two servers answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The page's own origin ([`Origin::url`]).
    Main,
    /// The second, cross-origin server ([`Origin::cross_url`]).
    Cross,
}

/// One request the page makes when a browser loads it, and how the server answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Request path (no query), e.g. `/style.css`.
    pub path: String,
    /// Which server it goes to.
    pub origin: Side,
    /// HTTP status of the response.
    pub status: u16,
    /// Exact response body size in bytes (equals its `Content-Length`).
    pub body_bytes: usize,
    /// The `Content-Type` header, verbatim.
    pub content_type: String,
    /// How long the server waits after reading the request before it sends the response head.
    pub delay: Duration,
    /// The resource type Chromium's DevTools protocol reports (`Network.ResourceType`). The 302 is
    /// reported as part of the stylesheet request it redirects.
    pub resource_type: &'static str,
}

/// Ground truth about the page at [`Truth::document_path`].
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// Path of the page on the main origin: `/index.html`.
    pub document_path: String,
    /// Server delay before the HTML's response head (150 ms).
    pub document_delay: Duration,
    /// Every request a browser makes when it loads the page, each exactly once, in document order
    /// starting with the document itself. Nothing else is requested (the favicon is a `data:` URL).
    pub requests: Vec<Expected>,
    /// The stylesheet link's target, answered with a 302 (`/old.css`).
    pub redirect_from: String,
    /// The 302's `Location` (`/style.css`), a relative URL on the main origin.
    pub redirect_to: String,
    /// The path the page's `fetch()` requests (`/api/data`).
    pub api_path: String,
    /// The image that answers 404 (`/missing.png`).
    pub missing_path: String,
    /// The one cross-origin request, on [`Side::Cross`] (`/widget.js`).
    pub cross_path: String,
    /// The web font (`/font.woff2`). Its bytes are deliberately *not* a valid font: Chromium fetches
    /// it once, fails to decode it and keeps the fallback face (`font-display: swap`, so the text
    /// is visible throughout and no layout shift comes from the font).
    pub font_path: String,
    /// How long `/app.js` busy-loops on the main thread right after the first contentful paint
    /// (300 ms), so all of it counts toward Total Blocking Time. The long
    /// task a browser reports contains this loop plus the rest of the script, so it is a little
    /// longer.
    pub long_task: Duration,
    /// The cumulative layout shift score the page produces in [`Truth::viewport`]: one shift, see
    /// [`layout_shift_score`].
    pub layout_shift: f64,
    /// How long after the long task ends the shifting banner is inserted (500 ms; no input occurs
    /// in a headless load, so the shift counts).
    pub layout_shift_after: Duration,
    /// Path of the LCP element, the hero image (`/hero.png`).
    pub lcp_url_path: String,
    /// The hero's natural and displayed size in (CSS) pixels: 1000×500, the largest element in the
    /// viewport.
    pub lcp_size: (u32, u32),
    /// The viewport the layout shift and LCP are computed for, in CSS pixels: 1280×800.
    pub viewport: (u32, u32),
}

/// One request a server read, recorded as soon as its head arrived (before the server delay), so
/// a client that gives up early is still counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Which server read it.
    pub origin: Side,
    /// The request target as sent: path plus query, if any.
    pub target: String,
    /// The status the server answered (or was about to answer) with.
    pub status: u16,
}

/// The running test origin: two servers. Dropping it stops both and closes their connections.
#[derive(Debug)]
pub struct Origin {
    main: SocketAddr,
    cross: SocketAddr,
    truth: Truth,
    hits: Arc<Mutex<Vec<Hit>>>,
    servers: Vec<JoinHandle<()>>,
}

impl Origin {
    /// Binds two listeners on `127.0.0.1:0` (main and cross origin) and starts serving. Must be
    /// called inside a tokio runtime.
    pub async fn start() -> anyhow::Result<Origin> {
        let main_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the main origin")?;
        let cross_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the cross origin")?;
        let main = main_listener.local_addr()?;
        let cross = cross_listener.local_addr()?;
        let site = Site::build(cross);
        let truth = site.truth();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let mut servers = Vec::new();
        for (side, listener, routes) in [
            (Side::Main, main_listener, site.main),
            (Side::Cross, cross_listener, site.cross),
        ] {
            let server = Arc::new(Server {
                side,
                routes,
                hits: hits.clone(),
            });
            servers.push(tokio::spawn(accept_loop(server, listener)));
        }
        Ok(Origin {
            main,
            cross,
            truth,
            hits,
            servers,
        })
    }

    /// URL of `path` (starting with `/`) on the main origin, e.g. `http://127.0.0.1:PORT/index.html`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.main)
    }

    /// URL of `path` on the cross-origin server.
    pub fn cross_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.cross)
    }

    /// URL of an expected request, on whichever server answers it.
    pub fn expected_url(&self, e: &Expected) -> String {
        match e.origin {
            Side::Main => self.url(&e.path),
            Side::Cross => self.cross_url(&e.path),
        }
    }

    /// The ground truth about the page.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// Every request both servers have read so far, in arrival order: (target, status). The two
    /// servers share no paths, so the target alone says which server answered; see
    /// [`Origin::hit_log`] for that explicitly.
    pub fn hits(&self) -> Vec<(String, u16)> {
        self.hit_log()
            .into_iter()
            .map(|h| (h.target, h.status))
            .collect()
    }

    /// Every request both servers have read so far, in arrival order, with its server.
    pub fn hit_log(&self) -> Vec<Hit> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Each accept loop owns the JoinSet of its connections, so aborting it drops (closes)
        // every connection too, including the ones `/never` holds open.
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The CLS of the page's single layout shift in a `viewport` (CSS px), per the Layout Instability
/// spec: impact fraction × distance fraction.
///
/// `#shifted` is a full-width block (its width is the viewport width `vw`), `SHIFTED_HEIGHT` =
/// 200 px tall, at y = `BELOW_TOP` = 560. A banner `BANNER_HEIGHT` = 100 px tall is inserted above
/// it, inside an absolutely positioned container, so `#shifted` (and the text inside it) is the
/// only box that moves, by d = 100 px straight down. Inserting a new box is not itself a shift.
///
/// - Impact region: the union of the old and new visual rects, each clipped to the viewport.
///   Old: y 560..760; new: y 660..860, clipped to 660..800. Union: y 560..800, full width, so the
///   impact fraction is 1280 × 240 / (1280 × 800) = 0.3.
/// - Distance fraction: d / max(vw, vh) = 100 / 1280 = 0.078125.
/// - Score: 0.3 × 0.078125 = 0.0234375, and CLS is that one score (one session window).
///
/// Chromium 156 at 1280×800 reports exactly this `layout-shift` entry (value 0.0234375, source
/// `#shifted` from y 560 to y 660).
pub fn layout_shift_score(viewport: (u32, u32)) -> f64 {
    let (vw, vh) = (f64::from(viewport.0), f64::from(viewport.1));
    let top = f64::from(BELOW_TOP);
    let d = f64::from(BANNER_HEIGHT);
    let h = f64::from(SHIFTED_HEIGHT);
    let old = (top.min(vh), (top + h).min(vh));
    let new = ((top + d).min(vh), (top + d + h).min(vh));
    // The old and new rects overlap (d < h), so their union is one band of the full width.
    let band = if new.0 <= old.1 {
        new.1.max(old.1) - old.0
    } else {
        (old.1 - old.0) + (new.1 - new.0)
    };
    let impact_fraction = vw * band / (vw * vh);
    let distance_fraction = d / vw.max(vh);
    impact_fraction * distance_fraction
}

/// How a server answers one path.
#[derive(Debug, Clone)]
struct Resource {
    path: &'static str,
    status: u16,
    content_type: &'static str,
    body: Bytes,
    delay: Duration,
    headers: Vec<(&'static str, String)>,
    resource_type: &'static str,
}

impl Resource {
    fn new(
        path: &'static str,
        status: u16,
        content_type: &'static str,
        resource_type: &'static str,
        delay_ms: u64,
        body: Vec<u8>,
    ) -> Resource {
        Resource {
            path,
            status,
            content_type,
            body: body.into(),
            delay: Duration::from_millis(delay_ms),
            headers: Vec::new(),
            resource_type,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Resource {
        self.headers.push((name, value.into()));
        self
    }
}

/// The page's routes on both servers, in document order.
struct Site {
    main: Vec<Resource>,
    cross: Vec<Resource>,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const PNG: &str = "image/png";
const NOT_FOUND: &[u8] = b"not found\n";

impl Site {
    fn build(cross: SocketAddr) -> Site {
        let cross_script = format!("http://{cross}/widget.js");
        let ms = DOCUMENT_DELAY.as_millis() as u64;
        let page = page_html(&cross_script).into_bytes();
        let main = vec![
            Resource::new("/index.html", 200, HTML, "Document", ms, page),
            Resource::new("/old.css", 302, TEXT, "Stylesheet", 20, Vec::new())
                .header("Location", "/style.css"),
            Resource::new("/style.css", 200, CSS, "Stylesheet", 25, STYLE_CSS.into()),
            Resource::new("/hero.png", 200, PNG, "Image", 40, hero_png()),
            Resource::new("/small.png", 200, PNG, "Image", 35, small_png()),
            Resource::new("/missing.png", 404, TEXT, "Image", 50, NOT_FOUND.into()),
            Resource::new("/app.js", 200, JS, "Script", 30, app_js().into_bytes()),
            Resource::new("/font.woff2", 200, "font/woff2", "Font", 45, font_bytes()),
            Resource::new("/api/data", 200, JSON, "Fetch", 80, API_JSON.into()),
        ];
        let cross = vec![
            Resource::new("/widget.js", 200, JS, "Script", 60, WIDGET_JS.into())
                .header("Access-Control-Allow-Origin", "*"),
        ];
        Site { main, cross }
    }

    fn truth(&self) -> Truth {
        let expected = |side: Side, routes: &[Resource]| -> Vec<Expected> {
            routes
                .iter()
                .map(|r| Expected {
                    path: r.path.to_owned(),
                    origin: side,
                    status: r.status,
                    body_bytes: r.body.len(),
                    content_type: r.content_type.to_owned(),
                    delay: r.delay,
                    resource_type: r.resource_type,
                })
                .collect()
        };
        let mut requests = expected(Side::Main, &self.main);
        requests.extend(expected(Side::Cross, &self.cross));
        Truth {
            document_path: "/index.html".into(),
            document_delay: DOCUMENT_DELAY,
            requests,
            redirect_from: "/old.css".into(),
            redirect_to: "/style.css".into(),
            api_path: "/api/data".into(),
            missing_path: "/missing.png".into(),
            cross_path: "/widget.js".into(),
            font_path: "/font.woff2".into(),
            long_task: LONG_TASK,
            layout_shift: layout_shift_score(VIEWPORT),
            layout_shift_after: SHIFT_AFTER,
            lcp_url_path: "/hero.png".into(),
            lcp_size: HERO_SIZE,
            viewport: VIEWPORT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_shift_is_as_documented() {
        assert!((layout_shift_score(VIEWPORT) - 0.3 * 0.078125).abs() < 1e-12);
    }
}
