//! The built-in demo origin: a small, realistic and fully deterministic shop page that `vantage
//! demo` serves from inside the mesh, so a demo needs no site of the user's and every run loads
//! the same bytes.
//!
//! The page is shaped like a real one: a ~30 KB document that thinks for [`DOC_THINK_MS`] before
//! answering (so TTFB has a known server part), a render-blocking stylesheet that pulls a web
//! font, a deferred ~60 KB script that fetches `/api/products` (which thinks 25 ms) and renders
//! six product cards with their thumbnails, and a large hero image that is the LCP element.
//! Every body is generated once, in code, from fixed seeds: no randomness, no clock, no files.

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The host name the demo site is loaded under (agents pin it to the origin's overlay address).
pub const HOST: &str = "demo.vantage.test";
/// How long the HTML document waits before answering, in milliseconds.
pub const DOC_THINK_MS: u64 = 40;
/// How long `/api/products` waits before answering, in milliseconds.
pub const API_THINK_MS: u64 = 25;

/// The document.
pub const DOC_PATH: &str = "/";
/// The stylesheet (render-blocking, in `<head>`).
pub const CSS_PATH: &str = "/static/site.css";
/// The web font, referenced from the stylesheet.
pub const FONT_PATH: &str = "/static/font.woff2";
/// The main script (deferred); it fetches [`API_PATH`] and renders the product cards.
pub const JS_PATH: &str = "/static/app.js";
/// The hero image, the page's LCP element (`<img id="hero">`).
///
/// The path says `.jpg`, as a shop's hero usually is, but the bytes are a PNG (encoding a JPEG in
/// code is not worth it) and the Content-Type says so: `image/png`. Chromium decodes by content.
pub const HERO_PATH: &str = "/static/hero.jpg";
/// The product list the script renders.
pub const API_PATH: &str = "/api/products";
/// Answered 204 with no body.
pub const FAVICON_PATH: &str = "/favicon.ico";
/// The number of products (and thumbnails, `/static/p1.png` … `/static/p6.png`).
pub const PRODUCTS: usize = 6;
/// The hero's intrinsic (and displayed) size in CSS pixels.
pub const HERO_SIZE: (u32, u32) = (800, 300);
/// A thumbnail's intrinsic (and displayed) size in CSS pixels.
pub const THUMB_SIZE: u32 = 88;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const JSON: &str = "application/json";
const PNG: &str = "image/png";
const WOFF2: &str = "font/woff2";
const NO_STORE: &str = "no-store";
const STATIC_CACHE: &str = "public, max-age=3600";

/// The path of product `n`'s thumbnail, 1-based.
pub fn thumb_path(n: usize) -> String {
    format!("/static/p{n}.png")
}

/// One resource the site serves.
#[derive(Debug, Clone)]
pub struct Resource {
    pub path: String,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// Server think time before the answer, in milliseconds.
    pub think_ms: u64,
    pub body: Bytes,
}

/// Every resource of the site (not the favicon's 204), bodies generated once per process.
pub fn resources() -> &'static [Resource] {
    static ALL: LazyLock<Vec<Resource>> = LazyLock::new(build);
    &ALL
}

fn build() -> Vec<Resource> {
    let r = |path: &str, content_type, cache_control, think_ms, body: Vec<u8>| Resource {
        path: path.into(),
        content_type,
        cache_control,
        think_ms,
        body: Bytes::from(body),
    };
    let mut all = vec![
        r(DOC_PATH, HTML, NO_STORE, DOC_THINK_MS, page_html().into()),
        r(CSS_PATH, CSS, STATIC_CACHE, 0, site_css().into()),
        r(FONT_PATH, WOFF2, STATIC_CACHE, 0, font_bytes()),
        r(JS_PATH, JS, STATIC_CACHE, 0, app_js().into()),
        r(HERO_PATH, PNG, STATIC_CACHE, 0, hero_png()),
        r(
            API_PATH,
            JSON,
            NO_STORE,
            API_THINK_MS,
            products_json().into(),
        ),
    ];
    for n in 1..=PRODUCTS {
        all.push(r(&thumb_path(n), PNG, STATIC_CACHE, 0, thumb_png(n)));
    }
    all
}

/// The demo site. Unknown paths answer 404; `HEAD` is answered like `GET` without the body.
pub fn router() -> Router {
    let mut router = Router::new().route(
        FAVICON_PATH,
        get(|| async {
            (
                StatusCode::NO_CONTENT,
                [(header::CACHE_CONTROL, STATIC_CACHE)],
            )
        }),
    );
    for res in resources() {
        router = router.route(&res.path, get(move || serve(res)));
    }
    router
}

async fn serve(res: &'static Resource) -> impl IntoResponse {
    if res.think_ms > 0 {
        tokio::time::sleep(Duration::from_millis(res.think_ms)).await;
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(res.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(res.cache_control),
            ),
        ],
        // a full body: hyper sends its exact Content-Length
        res.body.clone(),
    )
}

// ---------------------------------------------------------------------------------------------
// Deterministic filler

/// A fixed-seed xorshift generator: the same sequence in every process.
struct Seq(u64);

impl Seq {
    fn new(seed: u64) -> Self {
        Seq(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "linen",
    "walnut",
    "ceramic",
    "travel",
    "daily",
    "compact",
    "woven",
    "matte",
    "classic",
    "studio",
    "field",
    "harbor",
    "alpine",
    "summer",
    "quiet",
    "sturdy",
    "light",
    "soft",
    "bright",
    "handmade",
    "recycled",
    "organic",
    "modern",
    "simple",
    "durable",
    "everyday",
    "small-batch",
    "weatherproof",
    "washable",
    "stackable",
    "portable",
    "timeless",
    "natural",
    "warm",
    "crisp",
    "balanced",
    "careful",
    "honest",
    "local",
    "seasonal",
    "fitted",
    "relaxed",
    "padded",
    "brushed",
];

fn sentence(seq: &mut Seq, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        let w = WORDS[seq.below(WORDS.len())];
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push(' ');
            s.push_str(w);
        }
    }
    s.push('.');
    s
}

struct Product {
    sku: &'static str,
    name: &'static str,
    price_cents: u32,
    hue: u32,
}

const CATALOG: [Product; PRODUCTS] = [
    Product {
        sku: "VD-1001",
        name: "Harbor Linen Tote",
        price_cents: 4800,
        hue: 200,
    },
    Product {
        sku: "VD-1002",
        name: "Walnut Desk Tray",
        price_cents: 3600,
        hue: 30,
    },
    Product {
        sku: "VD-1003",
        name: "Ceramic Pour-Over Set",
        price_cents: 5900,
        hue: 15,
    },
    Product {
        sku: "VD-1004",
        name: "Alpine Wool Beanie",
        price_cents: 2900,
        hue: 130,
    },
    Product {
        sku: "VD-1005",
        name: "Field Notes Trio",
        price_cents: 1500,
        hue: 50,
    },
    Product {
        sku: "VD-1006",
        name: "Studio Desk Lamp",
        price_cents: 8900,
        hue: 270,
    },
];

// ---------------------------------------------------------------------------------------------
// The document

fn page_html() -> String {
    let mut seq = Seq::new(1);
    let (hw, hh) = HERO_SIZE;
    let mut h = String::with_capacity(32 << 10);
    h.push_str(&format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vantage demo shop</title>
<meta name="description" content="Vantage demo shop: a deterministic page for measuring loads from every region.">
<link rel="icon" href="{FAVICON_PATH}">
<link rel="preload" href="{FONT_PATH}" as="font" type="font/woff2" crossorigin>
<link rel="stylesheet" href="{CSS_PATH}">
<script src="{JS_PATH}" defer></script>
"#
    ));
    // structured data, as shops carry it
    h.push_str("<script type=\"application/ld+json\">\n{\"@context\":\"https://schema.org\",\"@type\":\"ItemList\",\"itemListElement\":[");
    for (i, p) in CATALOG.iter().enumerate() {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            "{{\"@type\":\"ListItem\",\"position\":{},\"item\":{{\"@type\":\"Product\",\"sku\":\"{}\",\"name\":\"{}\",\"offers\":{{\"@type\":\"Offer\",\"price\":\"{}.{:02}\",\"priceCurrency\":\"EUR\"}}}}}}",
            i + 1,
            p.sku,
            p.name,
            p.price_cents / 100,
            p.price_cents % 100
        ));
    }
    h.push_str("]}\n</script>\n</head>\n<body>\n");
    h.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a>\n");
    h.push_str("<header class=\"top\">\n<div class=\"wrap bar\">\n<a class=\"logo\" href=\"#\">Vantage <span>demo shop</span></a>\n<nav class=\"nav\" aria-label=\"Main\">\n<ul>\n");
    for section in [
        "New in", "Home", "Kitchen", "Desk", "Travel", "Outdoor", "Gifts", "Sale",
    ] {
        h.push_str(&format!(
            "<li class=\"nav-item\"><a href=\"#{}\">{section}</a>\n<ul class=\"nav-sub\">\n",
            section.to_lowercase().replace(' ', "-")
        ));
        for _ in 0..8 {
            let w = WORDS[seq.below(WORDS.len())];
            h.push_str(&format!("<li><a href=\"#c-{w}\">{w} picks</a></li>\n"));
        }
        h.push_str("</ul></li>\n");
    }
    h.push_str("</ul>\n</nav>\n<form class=\"search\" role=\"search\" onsubmit=\"return false\"><label for=\"q\" class=\"sr\">Search</label><input id=\"q\" type=\"search\" placeholder=\"Search the shop\"><button type=\"submit\">Search</button></form>\n<a class=\"cart\" href=\"#cart\" aria-label=\"Cart, 0 items\">Cart <b>0</b></a>\n</div>\n</header>\n");
    h.push_str(&format!(
        r##"<main id="main">
<section class="hero">
<img id="hero" src="{HERO_PATH}" width="{hw}" height="{hh}" alt="Autumn collection" fetchpriority="high" decoding="async">
<div class="hero-copy"><h1>Autumn collection</h1><p>Made to last.</p><a class="btn" href="#products">Shop now</a></div>
</section>
<section class="products-section" aria-labelledby="products-title">
<h2 id="products-title">Best sellers</h2>
<div id="products" class="grid" aria-busy="true">
"##
    ));
    for _ in 0..PRODUCTS {
        h.push_str("<div class=\"card skeleton\" aria-hidden=\"true\"><div class=\"sk-img\"></div><div class=\"sk-line\"></div><div class=\"sk-line short\"></div></div>\n");
    }
    h.push_str("</div>\n</section>\n<section class=\"features\">\n<h2>Why shop with us</h2>\n<ul class=\"feature-list\">\n");
    for t in [
        "Free shipping over 50 EUR",
        "30-day returns",
        "Carbon-neutral delivery",
        "Repairs for life",
    ] {
        h.push_str(&format!(
            "<li class=\"feature\"><h3>{t}</h3><p>{}</p></li>\n",
            sentence(&mut seq, 9)
        ));
    }
    h.push_str("</ul>\n</section>\n<section class=\"reviews\">\n<h2>What customers say</h2>\n<div class=\"review-list\">\n");
    for i in 0..24 {
        let stars = 3 + seq.below(3);
        let words = 7 + seq.below(6);
        h.push_str(&format!(
            "<figure class=\"review\" data-stars=\"{stars}\"><blockquote>{}</blockquote><figcaption>Customer {} &middot; {}/5</figcaption></figure>\n",
            sentence(&mut seq, words),
            i + 1,
            stars
        ));
    }
    h.push_str("</div>\n</section>\n<section class=\"faq\">\n<h2>Questions</h2>\n");
    for i in 0..16 {
        h.push_str(&format!(
            "<details class=\"qa\"><summary>Question {} about {}?</summary><p>{} {}</p></details>\n",
            i + 1,
            WORDS[seq.below(WORDS.len())],
            sentence(&mut seq, 10),
            sentence(&mut seq, 8)
        ));
    }
    h.push_str("</section>\n</main>\n<footer class=\"foot\">\n<div class=\"wrap cols\">\n");
    for col in ["Shop", "Help", "Company", "Stores", "Journal"] {
        h.push_str(&format!("<div class=\"col\"><h4>{col}</h4><ul>\n"));
        for _ in 0..12 {
            let (a, b) = (WORDS[seq.below(WORDS.len())], WORDS[seq.below(WORDS.len())]);
            h.push_str(&format!("<li><a href=\"#f-{a}-{b}\">{a} {b}</a></li>\n"));
        }
        h.push_str("</ul></div>\n");
    }
    h.push_str("</div>\n<p class=\"legal wrap\">Vantage demo shop. Not a real shop: every byte of this page is generated, and the same on every load.</p>\n</footer>\n");
    // pad to the target size with what shops also carry: a hidden template for the mini-cart
    h.push_str("<template id=\"mini-cart\">\n");
    while h.len() < 30 * 1024 - 64 {
        h.push_str(&format!(
            "<div class=\"mc-row\"><span class=\"mc-name\">{}</span><span class=\"mc-qty\">1</span></div>\n",
            sentence(&mut seq, 4)
        ));
    }
    h.push_str("</template>\n</body>\n</html>\n");
    h
}

// ---------------------------------------------------------------------------------------------
// The stylesheet

fn site_css() -> String {
    let (hw, hh) = HERO_SIZE;
    let mut c = format!(
        r#"/* Vantage demo shop. The font's bytes are not a valid font (see font.woff2): Chromium fetches
   it, fails to decode it and keeps the fallback face; font-display: swap keeps text visible. */
@font-face {{ font-family: "Vantage Sans"; src: url("{FONT_PATH}") format("woff2"); font-display: swap; font-weight: 400 700; }}
:root {{ --ink: #1d2330; --muted: #5d6678; --accent: #2b6cb0; --bg: #fbfaf7; --card: #ffffff; --line: #e6e2da; }}
*, *::before, *::after {{ box-sizing: border-box; }}
html {{ -webkit-text-size-adjust: 100%; }}
body {{ margin: 0; font-family: "Vantage Sans", system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); line-height: 1.5; }}
a {{ color: var(--accent); text-decoration: none; }}
a:hover {{ text-decoration: underline; }}
.sr, .skip {{ position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }}
.wrap {{ max-width: 1200px; margin: 0 auto; padding: 0 24px; }}
.top {{ position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line); }}
.bar {{ display: flex; align-items: center; gap: 24px; height: 64px; }}
.logo {{ font-weight: 700; font-size: 20px; color: var(--ink); }}
.logo span {{ color: var(--muted); font-weight: 400; }}
.nav ul {{ list-style: none; margin: 0; padding: 0; }}
.nav > ul {{ display: flex; gap: 16px; }}
.nav-item {{ position: relative; }}
.nav-sub {{ display: none; position: absolute; top: 100%; left: 0; background: #fff; border: 1px solid var(--line); padding: 8px 12px; min-width: 180px; }}
.nav-item:hover .nav-sub {{ display: block; }}
.search {{ margin-left: auto; display: flex; gap: 4px; }}
.search input {{ border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; font: inherit; }}
.search button, .btn {{ border: 0; border-radius: 6px; padding: 8px 14px; background: var(--accent); color: #fff; font: inherit; cursor: pointer; }}
.cart b {{ display: inline-block; min-width: 20px; text-align: center; background: var(--ink); color: #fff; border-radius: 10px; font-size: 12px; }}
.hero {{ position: relative; max-width: {hw}px; margin: 24px auto; }}
#hero {{ display: block; width: {hw}px; max-width: 100%; height: auto; aspect-ratio: {hw} / {hh}; border-radius: 12px; background: #d7dde8; }}
.hero-copy {{ position: absolute; left: 32px; bottom: 32px; color: #fff; text-shadow: 0 1px 3px rgba(0, 0, 0, .4); }}
.hero-copy h1 {{ margin: 0; font-size: 36px; line-height: 1.1; }}
.hero-copy p {{ margin: 4px 0 12px; }}
.products-section, .features, .reviews, .faq {{ max-width: 1200px; margin: 40px auto; padding: 0 24px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 16px; min-height: 400px; }}
.card {{ background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px; min-height: 400px; }}
.card img {{ display: block; width: {THUMB_SIZE}px; height: {THUMB_SIZE}px; border-radius: 8px; margin: 0 auto 8px; }}
.card h3 {{ font-size: 15px; margin: 4px 0; }}
.card .price {{ font-weight: 700; }}
.card .rating {{ color: var(--muted); font-size: 13px; }}
.card .desc {{ color: var(--muted); font-size: 13px; margin: 6px 0 0; }}
.skeleton .sk-img {{ width: {THUMB_SIZE}px; height: {THUMB_SIZE}px; margin: 0 auto 8px; border-radius: 8px; background: #eee; }}
.skeleton .sk-line {{ height: 12px; margin: 8px 0; border-radius: 6px; background: #eee; }}
.skeleton .sk-line.short {{ width: 60%; }}
.feature-list {{ list-style: none; padding: 0; display: grid; grid-template-columns: repeat(4, 1fr); gap: 16px; }}
.feature h3 {{ font-size: 16px; margin: 0 0 4px; }}
.feature p {{ margin: 0; color: var(--muted); font-size: 14px; }}
.review-list {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; }}
.review {{ margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; font-size: 14px; }}
.review blockquote {{ margin: 0; }}
.review figcaption {{ color: var(--muted); font-size: 12px; margin-top: 4px; }}
.qa {{ border-bottom: 1px solid var(--line); padding: 8px 0; }}
.qa summary {{ cursor: pointer; font-weight: 600; }}
.foot {{ background: #1d2330; color: #c9cfdb; padding: 32px 0; margin-top: 48px; }}
.foot a {{ color: #c9cfdb; }}
.cols {{ display: grid; grid-template-columns: repeat(5, 1fr); gap: 24px; }}
.col h4 {{ margin: 0 0 8px; color: #fff; }}
.col ul {{ list-style: none; margin: 0; padding: 0; font-size: 14px; }}
.legal {{ font-size: 12px; margin-top: 24px; }}
@media (max-width: 800px) {{ .nav, .search {{ display: none; }} .feature-list, .review-list, .cols {{ grid-template-columns: 1fr 1fr; }} }}
/* utilities */
"#
    );
    let props = [
        ("m", "margin"),
        ("mt", "margin-top"),
        ("mb", "margin-bottom"),
        ("p", "padding"),
        ("pt", "padding-top"),
        ("pb", "padding-bottom"),
        ("gap", "gap"),
        ("w", "width"),
    ];
    for step in 0.. {
        for (short, prop) in props {
            c.push_str(&format!(".{short}-{step} {{ {prop}: {}px; }}\n", step * 4));
        }
        c.push_str(&format!(
            ".tone-{step} {{ color: hsl({} 40% 35%); }}\n.bg-{step} {{ background-color: hsl({} 35% 94%); }}\n",
            (step * 37) % 360,
            (step * 37 + 180) % 360
        ));
        if c.len() >= 15 * 1024 {
            break;
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// The script

const APP_CORE: &str = r#"
(function () {
  "use strict";
  var grid = document.getElementById("products");
  var money = new Intl.NumberFormat("en-IE", { style: "currency", currency: "EUR" });
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function card(p) {
    var a = el("article", "card");
    a.dataset.sku = p.sku;
    var img = new Image(p.image_width, p.image_height);
    img.src = p.image;
    img.alt = p.name;
    a.appendChild(img);
    a.appendChild(el("h3", null, p.name));
    a.appendChild(el("div", "price", money.format(p.price_cents / 100)));
    a.appendChild(el("div", "rating", p.rating.toFixed(1) + " / 5 (" + p.reviews + " reviews)"));
    a.appendChild(el("p", "desc", p.description));
    var b = el("button", "btn", "Add to cart");
    b.type = "button";
    b.addEventListener("click", function () { vd.cart.add(p.sku); });
    a.appendChild(b);
    return a;
  }
  function render(data) {
    var frag = document.createDocumentFragment();
    data.products.forEach(function (p) { frag.appendChild(card(p)); });
    grid.textContent = "";
    grid.appendChild(frag);
    grid.setAttribute("aria-busy", "false");
    document.documentElement.dataset.products = String(data.products.length);
    performance.mark("vantage-demo:rendered");
  }
  performance.mark("vantage-demo:fetch");
  fetch("/api/products", { headers: { accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) throw new Error("GET /api/products: HTTP " + r.status);
      return r.json();
    })
    .then(render)
    .catch(function (e) {
      grid.dataset.error = String(e);
      console.error(e);
    });
  window.vd = vd;
})();
"#;

fn app_js() -> String {
    let mut seq = Seq::new(3);
    let mut j = String::with_capacity(64 << 10);
    j.push_str("/* Vantage demo shop: app.js. Deterministic; the helpers below stand in for a bundle's vendor code. */\n");
    j.push_str(
        r#"var vd = (function () {
  "use strict";
  var modules = Object.create(null);
  var cache = Object.create(null);
  function define(name, factory) { modules[name] = factory; }
  function require(name) {
    if (!(name in cache)) {
      var f = modules[name];
      if (!f) throw new Error("module not found: " + name);
      var m = { exports: {} };
      cache[name] = m.exports;
      f(m, m.exports, require);
      cache[name] = m.exports;
    }
    return cache[name];
  }
  var items = [];
  var cart = {
    add: function (sku) {
      items.push(sku);
      var b = document.querySelector(".cart b");
      if (b) b.textContent = String(items.length);
    },
    count: function () { return items.length; }
  };
  return { define: define, require: require, cart: cart, modules: modules };
})();
"#,
    );
    let mut i = 0usize;
    while j.len() < 60 * 1024 - APP_CORE.len() {
        let (k1, k2, k3) = (1 + seq.below(97), seq.below(1 << 16), 2 + seq.below(14));
        let w = WORDS[seq.below(WORDS.len())];
        let body = match i % 4 {
            0 => format!(
                "  function hash(s) {{ var h = {k2}; for (var i = 0; i < s.length; i++) {{ h = (h * {k1} + s.charCodeAt(i)) | 0; }} return h >>> 0; }}\n  module.exports = {{ hash: hash, seed: {k2} }};\n"
            ),
            1 => format!(
                "  var label = \"{w}\";\n  function format(v, width) {{ var s = String(v); while (s.length < (width || {k3})) s = \" \" + s; return label + \":\" + s; }}\n  module.exports = {{ format: format, label: label }};\n"
            ),
            2 => format!(
                "  var initial = {{ count: 0, last: null, limit: {k3} }};\n  function reduce(state, action) {{\n    state = state || initial;\n    switch (action && action.type) {{\n      case \"add\": return {{ count: Math.min(state.count + 1, state.limit), last: action.id, limit: state.limit }};\n      case \"reset\": return initial;\n      default: return state;\n    }}\n  }}\n  module.exports = {{ reduce: reduce }};\n"
            ),
            _ => format!(
                "  var dep = require(\"m{prev}\");\n  function clamp(x) {{ return Math.max(0, Math.min({k2}, x * {k1})); }}\n  module.exports = {{ clamp: clamp, dep: dep }};\n",
                prev = i - 1
            ),
        };
        j.push_str(&format!(
            "vd.define(\"m{i}\", function (module, exports, require) {{\n{body}}});\n"
        ));
        i += 1;
    }
    j.push_str(APP_CORE);
    j
}

// ---------------------------------------------------------------------------------------------
// The API

fn products_json() -> String {
    let mut seq = Seq::new(5);
    let products: Vec<serde_json::Value> = CATALOG
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let description = format!(
                "{} {} {} {}",
                sentence(&mut seq, 10),
                sentence(&mut seq, 9),
                sentence(&mut seq, 8),
                sentence(&mut seq, 6)
            );
            serde_json::json!({
                "id": i + 1,
                "sku": p.sku,
                "name": p.name,
                "price_cents": p.price_cents,
                "currency": "EUR",
                "rating": 3.5 + (seq.below(15) as f64) / 10.0,
                "reviews": 12 + seq.below(400),
                "in_stock": seq.below(5) != 0,
                "image": thumb_path(i + 1),
                "image_width": THUMB_SIZE,
                "image_height": THUMB_SIZE,
                "tags": [WORDS[seq.below(WORDS.len())], WORDS[seq.below(WORDS.len())]],
                "description": description,
            })
        })
        .collect();
    let doc = serde_json::json!({ "currency": "EUR", "count": PRODUCTS, "products": products });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The font

/// ~20 KB behind a WOFF2 signature. Deliberately *not* a valid font (a real WOFF2 needs Brotli):
/// Chromium fetches it once, fails to decode it and keeps the fallback face.
fn font_bytes() -> Vec<u8> {
    let mut seq = Seq::new(7);
    let mut b = b"wOF2\x00\x01\x00\x00".to_vec();
    while b.len() < 20 * 1024 {
        b.extend_from_slice(&seq.next().to_le_bytes());
    }
    b.truncate(20 * 1024);
    b
}

// ---------------------------------------------------------------------------------------------
// Images: palette PNGs, deflate "stored" blocks (no compression), so the sizes are what the
// pixel counts say.

fn hsl_to_rgb(h: u32, s: f64, l: f64) -> [u8; 3] {
    let h = (h % 360) as f64 / 60.0;
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let q = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// The hero: 800×300, 4-bit palette (16 shades from dusk blue to amber), a diagonal gradient with
/// soft horizontal bands. ~120 KB.
fn hero_png() -> Vec<u8> {
    let (w, h) = HERO_SIZE;
    let palette: Vec<[u8; 3]> = (0..16)
        .map(|i| hsl_to_rgb(220 - i * 12, 0.55, 0.30 + i as f64 * 0.03))
        .collect();
    let row_len = (w as usize).div_ceil(2);
    let mut raw = Vec::with_capacity((row_len + 1) * h as usize);
    for y in 0..h {
        raw.push(0); // filter: none
        for x in (0..w).step_by(2) {
            let shade = |x: u32| {
                let t = (x as f64 / w as f64) * 0.7 + (y as f64 / h as f64) * 0.3;
                let band = ((y as f64 / 18.0).sin() * 0.04) + ((x as f64 / 53.0).cos() * 0.03);
                ((t + band).clamp(0.0, 0.999) * 16.0) as u8
            };
            raw.push(shade(x) << 4 | shade(x + 1));
        }
    }
    png(w, h, 4, &palette, &raw)
}

/// Product `n`'s thumbnail: 88×88, 8-bit palette, a radial blob in the product's hue. ~8.6 KB.
fn thumb_png(n: usize) -> Vec<u8> {
    let hue = CATALOG[(n - 1) % PRODUCTS].hue;
    let palette: Vec<[u8; 3]> = (0..256u32)
        .map(|i| hsl_to_rgb(hue + i / 32, 0.5, 0.25 + i as f64 / 255.0 * 0.65))
        .collect();
    let s = THUMB_SIZE;
    let c = s as f64 / 2.0;
    let mut raw = Vec::with_capacity(((s + 1) * s) as usize);
    for y in 0..s {
        raw.push(0);
        for x in 0..s {
            let d = ((x as f64 - c).powi(2) + (y as f64 - c * 0.9).powi(2)).sqrt() / c;
            raw.push((d.clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    png(s, s, 8, &palette, &raw)
}

/// A palette PNG of already filtered scanlines (`raw`).
fn png(w: u32, h: u32, depth: u8, palette: &[[u8; 3]], raw: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", &palette.concat());
    chunk(&mut out, b"IDAT", &zlib_stored(raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of deflate stored blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    let mut blocks = data.chunks(0xFFFF).peekable();
    if blocks.peek().is_none() {
        z.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(b) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(data).to_be_bytes());
    z
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `src`/`href` values in `text` that are paths on this site.
    fn local_refs(text: &str) -> Vec<String> {
        let mut refs = Vec::new();
        for attr in ["src=\"", "href=\"", "url(\"", "fetch(\""] {
            for (at, _) in text.match_indices(attr) {
                let rest = &text[at + attr.len()..];
                if let Some(end) = rest.find('"') {
                    let r = &rest[..end];
                    if r.starts_with('/') {
                        refs.push(r.to_string());
                    }
                }
            }
        }
        refs
    }

    #[test]
    fn known_vectors() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn bodies_are_deterministic_and_sized() {
        let again = build();
        for (a, b) in resources().iter().zip(&again) {
            assert_eq!(a.body, b.body, "{} differs between builds", a.path);
        }
        let size = |p: &str| resources().iter().find(|r| r.path == p).unwrap().body.len();
        let kb = |p: &str| size(p) / 1024;
        assert!((28..=32).contains(&kb(DOC_PATH)), "html {}", size(DOC_PATH));
        assert!((14..=17).contains(&kb(CSS_PATH)), "css {}", size(CSS_PATH));
        assert!((57..=62).contains(&kb(JS_PATH)), "js {}", size(JS_PATH));
        assert!(
            (110..=125).contains(&kb(HERO_PATH)),
            "hero {}",
            size(HERO_PATH)
        );
        assert!((3..=6).contains(&kb(API_PATH)), "api {}", size(API_PATH));
        for n in 1..=PRODUCTS {
            assert!((7..=10).contains(&kb(&thumb_path(n))), "thumb {n}");
        }
    }

    #[tokio::test]
    async fn serves_everything_the_page_references() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: String| {
            let (http, url) = (http.clone(), format!("{base}{path}"));
            async move {
                let r = http.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let h = r.headers().clone();
                let body = r.bytes().await.unwrap();
                (status, h, body)
            }
        };
        let header = |h: &reqwest::header::HeaderMap, n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };

        let started = std::time::Instant::now();
        let (status, h, html) = get(DOC_PATH.into()).await;
        assert!(started.elapsed() >= Duration::from_millis(DOC_THINK_MS));
        assert_eq!(status, 200);
        assert_eq!(header(&h, "content-type"), HTML);
        assert_eq!(header(&h, "cache-control"), NO_STORE);
        let html = String::from_utf8(html.to_vec()).unwrap();
        assert!(html.contains("<title>Vantage demo shop</title>"));
        assert!(html.contains(&format!("<img id=\"hero\" src=\"{HERO_PATH}\"")));

        let (_, _, css) = get(CSS_PATH.into()).await;
        let (_, _, js) = get(JS_PATH.into()).await;
        let (_, _, api) = get(API_PATH.into()).await;
        let api: serde_json::Value = serde_json::from_slice(&api).unwrap();
        let mut refs = local_refs(&html);
        refs.extend(local_refs(std::str::from_utf8(&css).unwrap()));
        refs.extend(local_refs(std::str::from_utf8(&js).unwrap()));
        for p in api["products"].as_array().unwrap() {
            refs.push(p["image"].as_str().unwrap().to_string());
        }
        refs.sort();
        refs.dedup();
        let mut expected: Vec<String> = resources().iter().map(|r| r.path.clone()).collect();
        expected.retain(|p| p != DOC_PATH);
        expected.push(FAVICON_PATH.into());
        expected.sort();
        assert_eq!(
            refs, expected,
            "the page references exactly the site's resources"
        );

        for path in refs {
            let (status, h, body) = get(path.clone()).await;
            if path == FAVICON_PATH {
                assert_eq!(status, 204);
                assert!(body.is_empty());
                continue;
            }
            let res = resources().iter().find(|r| r.path == path).unwrap();
            assert_eq!(status, 200, "{path}");
            assert_eq!(header(&h, "content-type"), res.content_type, "{path}");
            assert_eq!(header(&h, "cache-control"), res.cache_control, "{path}");
            assert_eq!(
                header(&h, "content-length"),
                res.body.len().to_string(),
                "{path}"
            );
            assert_eq!(body, res.body, "{path}");
            if res.content_type == PNG {
                assert!(body.starts_with(b"\x89PNG\r\n\x1a\n"), "{path}");
            }
        }
        let (status, _, _) = get("/nope".into()).await;
        assert_eq!(status, 404);
    }
}
