//! A test origin site whose every part has a known server delay, size and status, so a page-load
//! report can be checked against ground truth ([`Truth`]).
//!
//! Two hand-written HTTP/1.1 servers on `127.0.0.1:0`: the *main* origin serves the page and its
//! same-origin subresources, the *cross* origin serves one script with
//! `Access-Control-Allow-Origin: *`. Every response carries an exact `Content-Length`,
//! `Cache-Control: no-store` (so every load fetches everything again) and `Connection: close`
//! (so there is no keep-alive state to get wrong). Dropping the [`Origin`] stops both servers and
//! closes every connection they still hold.
//!
//! The page (`/index.html`) is laid out in absolute CSS pixels for a 1280×800 viewport so its
//! layout shift and its LCP element are known exactly; see [`layout_shift_score`].
//!
//! The main origin also answers three "bad input" routes that the page never uses: [`HUGE_PATH`]
//! (a 10 MiB HTML page), [`NEVER_PATH`] (the head and a little body, then nothing until the server
//! stops) and `/slow?ms=N` (a small page after N ms).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

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
    body: Arc<[u8]>,
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

/// The page. Geometry lives in the inline `<style>` so the layout-shift arithmetic does not depend
/// on the external stylesheet; `/style.css` carries the font and colours.
fn page_html(cross_script: &str) -> String {
    let (hero_w, hero_h) = HERO_SIZE;
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vantage test origin</title>
<link rel="icon" href="data:,">
<style>
html, body {{ margin: 0; padding: 0; overflow: hidden; height: 100%; }}
#head {{ position: absolute; top: 0; left: 0; right: 0; height: {HEADER_HEIGHT}px; overflow: hidden; }}
#head h1 {{ margin: 0 0 0 16px; font-size: 32px; line-height: {HEADER_HEIGHT}px; }}
#head img {{ position: absolute; top: 14px; width: {SMALL_SIZE}px; height: {SMALL_SIZE}px; }}
#small {{ right: 64px; }}
#missing {{ right: 16px; }}
#api {{ position: absolute; top: 0; right: 112px; width: 300px; height: {HEADER_HEIGHT}px; overflow: hidden; line-height: {HEADER_HEIGHT}px; }}
#hero {{ position: absolute; top: {HEADER_HEIGHT}px; left: 0; width: {hero_w}px; height: {hero_h}px; display: block; }}
#below {{ position: absolute; top: {BELOW_TOP}px; left: 0; right: 0; }}
#banner {{ height: {BANNER_HEIGHT}px; background: #fd4; }}
#shifted {{ height: {SHIFTED_HEIGHT}px; overflow: hidden; background: #def; margin: 0; }}
</style>
<link rel="stylesheet" href="/old.css">
<script src="{cross_script}" crossorigin="anonymous" async></script>
</head>
<body>
<div id="head">
<h1>Vantage test origin</h1>
<span id="api">waiting for /api/data</span>
<img id="small" src="/small.png" width="{SMALL_SIZE}" height="{SMALL_SIZE}" alt="small">
<img id="missing" src="/missing.png" width="{SMALL_SIZE}" height="{SMALL_SIZE}" alt="">
</div>
<img id="hero" src="/hero.png" width="{hero_w}" height="{hero_h}" alt="hero">
<div id="below">
<p id="shifted">This block is pushed down by {BANNER_HEIGHT} px when a banner is inserted above it,
{shift} ms after the page's long task.</p>
</div>
<script src="/app.js"></script>
</body>
</html>
"#,
        shift = SHIFT_AFTER.as_millis(),
    )
}

const STYLE_CSS: &str = r#"/* Reached through the 302 from /old.css. The font bytes are not a valid font on purpose. */
@font-face {
  font-family: "VantageSans";
  src: url("/font.woff2") format("woff2");
  font-display: swap;
}
body { background: #fff; color: #123; font-family: sans-serif; }
#head h1 { font-family: "VantageSans", sans-serif; }
"#;

/// The page's main script, parser-blocking at the end of `<body>` (so it runs after the stylesheet
/// has loaded and every element exists).
fn app_js() -> String {
    format!(
        r#"// Vantage test origin: the main script.
(function () {{
  'use strict';
  document.documentElement.dataset.app = 'ran';
  // Load the font explicitly so it is requested before the load event whatever layout does.
  document.fonts.load('32px "VantageSans"').catch(function () {{}});
  fetch('/api/data')
    .then(function (r) {{ return r.json(); }})
    .then(function (d) {{ document.getElementById('api').textContent = d.message; }})
    .catch(function () {{}});
  // The long task: busy-loop on the main thread, once the first contentful paint has happened,
  // so the whole task falls in the Total Blocking Time window (FCP onwards).
  var done = false;
  function longTask() {{
    if (done) return;
    done = true;
    var end = performance.now() + {long};
    while (performance.now() < end) {{}}
    // The layout shift: insert a banner above #shifted, pushing it down.
    setTimeout(function () {{
      var banner = document.createElement('div');
      banner.id = 'banner';
      var below = document.getElementById('below');
      below.insertBefore(banner, below.firstChild);
      document.documentElement.dataset.shifted = 'yes';
    }}, {shift});
  }}
  new PerformanceObserver(function (list) {{
    if (list.getEntries().some(function (e) {{ return e.name === 'first-contentful-paint'; }})) {{
      setTimeout(longTask, 0);
    }}
  }}).observe({{ type: 'paint', buffered: true }});
}})();
"#,
        long = LONG_TASK.as_millis(),
        shift = SHIFT_AFTER.as_millis(),
    )
}

const WIDGET_JS: &str = "// Vantage test origin: the cross-origin script.\n\
document.documentElement.dataset.widget = 'loaded';\n";

const API_JSON: &str = r#"{"message":"hello from /api/data","items":[1,2,3]}"#;

/// 1 KiB that starts like WOFF2 but is not a font: Chromium's sanitizer rejects it after the
/// download, which is all the page needs (one font request with known size and timing).
fn font_bytes() -> Vec<u8> {
    let mut v = b"wOF2".to_vec();
    v.extend((0..1020u32).map(|i| (i.wrapping_mul(37) ^ 0x5a) as u8));
    v
}

/// The hero: a 1000×500 8-bit greyscale gradient. Stored (uncompressed) deflate keeps it about
/// 500 kB, i.e. about 8 bits per displayed pixel, far above the 0.05 below which Chromium ignores
/// an image as an LCP candidate.
fn hero_png() -> Vec<u8> {
    let (w, h) = HERO_SIZE;
    png(w, h, 0, |x, y| {
        vec![((x * 255 / w + y * 64 / h) % 256) as u8]
    })
}

/// A 32×32 RGB checkerboard.
fn small_png() -> Vec<u8> {
    png(SMALL_SIZE, SMALL_SIZE, 2, |x, y| {
        if (x / 8 + y / 8) % 2 == 0 {
            vec![0x20, 0x60, 0xc0]
        } else {
            vec![0xf0, 0xf0, 0xf0]
        }
    })
}

/// A minimal PNG: 8-bit `color_type` (0 = grey, 2 = RGB), no interlace, filter 0 on every row, the
/// image data in a zlib stream of stored deflate blocks.
fn png(w: u32, h: u32, color_type: u8, pixel: impl Fn(u32, u32) -> Vec<u8>) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter type: none
        for x in 0..w {
            raw.extend(pixel(x, y));
        }
    }
    // zlib: CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (so CMF·256+FLG is a multiple of 31).
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(0xffff).collect();
    for (i, block) in blocks.iter().enumerate() {
        let len = block.len() as u16;
        z.push(u8::from(i + 1 == blocks.len())); // BFINAL on the last block, BTYPE 00 (stored)
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend(adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, color_type, 0, 0, 0]); // bit depth, colour type, compression, filter, interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr[..]), (b"IDAT", &z[..]), (b"IEND", &[][..])] {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]); // over chunk type and data
        out.extend(crc.to_be_bytes());
    }
    out
}

/// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// One server: its routes and the shared hit log.
struct Server {
    side: Side,
    routes: Vec<Resource>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// What to send: a head, then either the whole body or a prefix of a body that never completes.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
    body: Body,
}

enum Body {
    Full(Arc<[u8]>),
    /// Declare `declared` bytes, send `prefix`, then hold the connection open.
    Stall {
        declared: usize,
        prefix: Vec<u8>,
    },
}

impl Reply {
    /// A short plain-text answer without delay, for requests that are not part of the site.
    fn text(status: u16, body: &[u8]) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: Body::Full(body.into()),
        }
    }
}

impl Server {
    fn reply(&self, method: &str, target: &str) -> Reply {
        if method != "GET" && method != "HEAD" {
            return Reply::text(405, b"method not allowed\n");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if let Some(r) = self.routes.iter().find(|r| r.path == path) {
            return Reply {
                status: r.status,
                content_type: r.content_type,
                headers: r.headers.clone(),
                delay: r.delay,
                body: Body::Full(r.body.clone()),
            };
        }
        let html = |delay: Duration, body: Body| Reply {
            status: 200,
            content_type: HTML,
            headers: Vec::new(),
            delay,
            body,
        };
        match (self.side, path) {
            (Side::Main, HUGE_PATH) => html(Duration::ZERO, Body::Full(huge_html().into())),
            (Side::Main, NEVER_PATH) => html(
                Duration::ZERO,
                Body::Stall {
                    declared: NEVER_DECLARED_BYTES,
                    prefix: b"<!doctype html>\n<title>never</title>\n<p>this body never".to_vec(),
                },
            ),
            (Side::Main, SLOW_PATH) => {
                let ms = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok());
                match ms {
                    Some(ms) => {
                        let delay = Duration::from_millis(ms).min(SLOW_MAX);
                        let body = format!(
                            "<!doctype html>\n<title>slow</title>\n<p>after {} ms</p>\n",
                            delay.as_millis()
                        );
                        html(delay, Body::Full(body.into_bytes().into()))
                    }
                    None => Reply::text(400, b"want /slow?ms=N\n"),
                }
            }
            (Side::Main, NOISY_PATH) => {
                let body = format!(
                    "<!doctype html>\n<title>noisy</title>\n<script>\n\
                     for (let i = 0; i < {NOISY_ERRORS}; i++) console.error('x'.repeat({NOISY_TEXT}));\n\
                     for (let i = 0; i < {NOISY_FETCHES}; i++) document.write('<img src=/nothing-here?' + i + '>');\n\
                     </script>\n"
                );
                html(Duration::ZERO, Body::Full(body.into_bytes().into()))
            }
            _ => Reply::text(404, NOT_FOUND),
        }
    }
}

/// A valid HTML page of exactly [`HUGE_BYTES`].
fn huge_html() -> Vec<u8> {
    let head = "<!doctype html>\n<title>huge</title>\n";
    let tail = "</p>\n";
    let mut s = String::with_capacity(HUGE_BYTES);
    s.push_str(head);
    let mut line = 0u64;
    while s.len() + 80 + tail.len() < HUGE_BYTES {
        // Fixed-width lines so the padding arithmetic below stays trivial.
        let _ = writeln!(
            s,
            "<p>line {line:012} of a ten mebibyte page, padding padding</p>"
        );
        line += 1;
    }
    s.push_str("<p>");
    while s.len() + tail.len() < HUGE_BYTES {
        s.push('x');
    }
    s.push_str(tail);
    s.into_bytes()
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener) {
    // Owning the connections here means aborting this task closes all of them.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve(server.clone(), stream));
                }
            }
            // Reap finished connections so the set does not grow for ever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one request on one connection, then closes it. I/O errors mean the client left, which
/// is no concern of the server's.
async fn serve(server: Arc<Server>, mut stream: TcpStream) {
    let _ = serve_inner(&server, &mut stream).await;
}

async fn serve_inner(server: &Server, stream: &mut TcpStream) -> anyhow::Result<()> {
    let Some(head) = read_head(stream).await? else {
        return Ok(()); // a preconnect that was never used, or a client that gave up
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") && t.starts_with('/') => (m, t),
        _ => ("", "?"),
    };
    let reply = if method.is_empty() {
        Reply::text(400, b"bad request\n")
    } else {
        server.reply(method, target)
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

    let declared = match &reply.body {
        Body::Full(b) => b.len(),
        Body::Stall { declared, .. } => *declared,
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {declared}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
    );
    for (name, value) in &reply.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    if method == "HEAD" {
        return Ok(stream.shutdown().await?);
    }
    match reply.body {
        Body::Full(body) => {
            stream.write_all(&body).await?;
            stream.shutdown().await?;
        }
        Body::Stall { prefix, .. } => {
            stream.write_all(&prefix).await?;
            stream.flush().await?;
            // Hold the connection until the server stops (this task is then dropped).
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}

/// Reads up to the end of the request head. `None` if the client closed before sending one.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<Option<String>> {
    const MAX_HEAD: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        anyhow::ensure!(buf.len() <= MAX_HEAD, "request head over {MAX_HEAD} bytes");
        let n = stream.read(&mut chunk).await.context("reading request")?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn layout_shift_is_as_documented() {
        assert!((layout_shift_score(VIEWPORT) - 0.3 * 0.078125).abs() < 1e-12);
    }

    #[test]
    fn huge_is_exact() {
        assert_eq!(huge_html().len(), HUGE_BYTES);
    }
}
