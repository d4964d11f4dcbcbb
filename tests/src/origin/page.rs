//! The test origin's content: the page, its stylesheet and scripts, the images (PNGs written by
//! hand, so their sizes are exact), and the 10 MiB page. Geometry comes from the parent module.

use std::fmt::Write as _;

use super::{
    BANNER_HEIGHT, BELOW_TOP, HEADER_HEIGHT, HERO_SIZE, HUGE_BYTES, LONG_TASK, SHIFTED_HEIGHT,
    SHIFT_AFTER, SMALL_SIZE,
};

/// The page. Geometry lives in the inline `<style>` so the layout-shift arithmetic does not depend
/// on the external stylesheet; `/style.css` carries the font and colours.
pub(super) fn page_html(cross_script: &str) -> String {
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

pub(super) const STYLE_CSS: &str = r#"/* Reached through the 302 from /old.css. The font bytes are not a valid font on purpose. */
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
pub(super) fn app_js() -> String {
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

pub(super) const WIDGET_JS: &str = "// Vantage test origin: the cross-origin script.\n\
document.documentElement.dataset.widget = 'loaded';\n";

pub(super) const API_JSON: &str = r#"{"message":"hello from /api/data","items":[1,2,3]}"#;

/// 1 KiB that starts like WOFF2 but is not a font: Chromium's sanitizer rejects it after the
/// download, which is all the page needs (one font request with known size and timing).
pub(super) fn font_bytes() -> Vec<u8> {
    let mut v = b"wOF2".to_vec();
    v.extend((0..1020u32).map(|i| (i.wrapping_mul(37) ^ 0x5a) as u8));
    v
}

/// The hero: a 1000×500 8-bit greyscale gradient. Stored (uncompressed) deflate keeps it about
/// 500 kB, i.e. about 8 bits per displayed pixel, far above the 0.05 below which Chromium ignores
/// an image as an LCP candidate.
pub(super) fn hero_png() -> Vec<u8> {
    let (w, h) = HERO_SIZE;
    png(w, h, 0, |x, y| {
        vec![((x * 255 / w + y * 64 / h) % 256) as u8]
    })
}

/// A 32×32 RGB checkerboard.
pub(super) fn small_png() -> Vec<u8> {
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

/// A valid HTML page of exactly [`HUGE_BYTES`].
pub(super) fn huge_html() -> Vec<u8> {
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
    fn huge_is_exact() {
        assert_eq!(huge_html().len(), HUGE_BYTES);
    }
}
