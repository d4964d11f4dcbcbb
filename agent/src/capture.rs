//! What a run measures inside the page, and how raw browser data becomes report fields: the
//! observer script injected before any page script, the collection script, CLS session windows,
//! TBT, Navigation Timing phases and HAR phases.

use serde_json::Value;
use vantage_proto::{HarTimings, Lcp, LongTask, NavTiming, Run, TbtWindow};

/// Registered on every new document before its own scripts run, so buffered entries and
/// everything after are seen.
pub const OBSERVER_JS: &str = r#"(() => {
  const v = window.__vantage = { paints: {}, lcp: null, shifts: [], longtasks: [] };
  const watch = (type, f) => {
    try { new PerformanceObserver(l => l.getEntries().forEach(f)).observe({ type, buffered: true }); } catch (e) {}
  };
  const describe = el => {
    if (!el) return '';
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    if (typeof el.className === 'string' && el.className.trim()) s += '.' + el.className.trim().split(/\s+/).join('.');
    return s;
  };
  watch('paint', e => { v.paints[e.name] = e.startTime; });
  watch('largest-contentful-paint', e => {
    v.lcp = { time: e.renderTime || e.loadTime || e.startTime, size: e.size, url: e.url || null, element: describe(e.element) };
  });
  watch('layout-shift', e => { if (!e.hadRecentInput) v.shifts.push([e.startTime, e.value]); });
  watch('longtask', e => { v.longtasks.push([e.startTime, e.duration]); });
})();"#;

/// Returns everything the page knows, as one JSON string.
pub const COLLECT_JS: &str = r#"JSON.stringify((() => {
  const n = performance.getEntriesByType('navigation')[0];
  return { nav: n ? n.toJSON() : null, v: window.__vantage || null, now: performance.now(), ua: navigator.userAgent };
})())"#;

/// Fills `run`'s page-measured fields from what [`COLLECT_JS`] returned.
pub fn page_data(data: &Value, run: &mut Run) {
    if !data["nav"].is_null() {
        run.timing = nav_timing(&data["nav"]);
    }
    let v = &data["v"];
    run.first_paint_ms = v["paints"]["first-paint"].as_f64();
    run.first_contentful_paint_ms = v["paints"]["first-contentful-paint"].as_f64();
    run.lcp = lcp(v);
    let pairs = |k: &str| -> Vec<(f64, f64)> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    run.cls = cls(&pairs("shifts"));
    let end = data["now"].as_f64().unwrap_or(0.0);
    (run.tbt, run.long_tasks) = tbt(&pairs("longtasks"), run.first_contentful_paint_ms, end);
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Navigation Timing Level 2 phases from a `PerformanceNavigationTiming` entry.
pub fn nav_timing(nav: &Value) -> NavTiming {
    let secure = f(nav, "secureConnectionStart");
    let opt = |k: &str| nav.get(k).and_then(Value::as_f64).filter(|v| *v > 0.0);
    NavTiming {
        redirect_ms: f(nav, "redirectEnd") - f(nav, "redirectStart"),
        dns_ms: f(nav, "domainLookupEnd") - f(nav, "domainLookupStart"),
        connect_ms: f(nav, "connectEnd") - f(nav, "connectStart"),
        tls_ms: (secure > 0.0).then(|| f(nav, "connectEnd") - secure),
        wait_ms: f(nav, "responseStart") - f(nav, "requestStart"),
        response_start_ms: f(nav, "responseStart"),
        download_ms: f(nav, "responseEnd") - f(nav, "responseStart"),
        dom_content_loaded_ms: opt("domContentLoadedEventStart"),
        load_ms: opt("loadEventStart"),
    }
}

pub fn lcp(v: &Value) -> Option<Lcp> {
    let l = v.get("lcp")?;
    if l.is_null() {
        return None;
    }
    Some(Lcp {
        time_ms: f(l, "time"),
        element: l
            .get("element")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        url: l
            .get("url")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        size: f(l, "size"),
    })
}

/// CLS with session windows: shifts less than 1 s apart and within 5 s form a window; the
/// score is the largest window's sum.
pub fn cls(shifts: &[(f64, f64)]) -> f64 {
    let mut best = 0.0f64;
    let (mut sum, mut first, mut last) = (0.0, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(t, v) in shifts {
        if t - last > 1000.0 || t - first > 5000.0 {
            sum = 0.0;
            first = t;
        }
        sum += v;
        last = t;
        best = best.max(sum);
    }
    best
}

/// Total Blocking Time from FCP to `end`: the part of each long task beyond 50 ms, tasks clipped
/// to the window.
pub fn tbt(tasks: &[(f64, f64)], fcp: Option<f64>, end: f64) -> (TbtWindow, Vec<LongTask>) {
    let from = fcp.unwrap_or(0.0);
    let mut ms = 0.0;
    for &(start, dur) in tasks {
        let s = start.max(from);
        let e = (start + dur).min(end);
        if e - s > 50.0 {
            ms += e - s - 50.0;
        }
    }
    let long = tasks
        .iter()
        .map(|&(start_ms, duration_ms)| LongTask {
            start_ms,
            duration_ms,
        })
        .collect();
    (
        TbtWindow {
            ms,
            from_ms: from,
            to_ms: end,
        },
        long,
    )
}

/// HAR phases from a CDP `ResourceTiming` (offsets in ms from `requestTime`) and the time the
/// last byte arrived (CDP monotonic seconds).
pub fn har(timing: Option<&Value>, finished: Option<f64>) -> HarTimings {
    let Some(t) = timing else {
        return HarTimings::default();
    };
    let span = |a: &str, b: &str| {
        let (x, y) = (f(t, a), f(t, b));
        (x >= 0.0 && y >= 0.0).then_some(y - x)
    };
    let dns = span("dnsStart", "dnsEnd");
    let ssl = span("sslStart", "sslEnd");
    // HAR's connect includes ssl, as CDP's does
    let connect = span("connectStart", "connectEnd");
    let first = [f(t, "dnsStart"), f(t, "connectStart"), f(t, "sendStart")]
        .into_iter()
        .find(|v| *v >= 0.0)
        .unwrap_or(0.0);
    let headers = f(t, "receiveHeadersEnd");
    let receive = finished
        .map(|end| ((end - f(t, "requestTime")) * 1000.0 - headers).max(0.0))
        .unwrap_or(0.0);
    HarTimings {
        blocked: (first > 0.0).then_some(first),
        dns,
        connect,
        ssl,
        send: (f(t, "sendEnd") - f(t, "sendStart")).max(0.0),
        wait: (headers - f(t, "sendEnd")).max(0.0),
        receive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cls_uses_session_windows() {
        assert_eq!(cls(&[]), 0.0);
        // two bursts 3 s apart: the larger window wins, they are not summed
        let s = [(100.0, 0.1), (400.0, 0.05), (3400.0, 0.12)];
        assert!((cls(&s) - 0.15).abs() < 1e-9);
        // a window closes after 5 s even without a 1 s gap
        let chain: Vec<(f64, f64)> = (0..12).map(|i| (i as f64 * 900.0, 0.01)).collect();
        assert!((cls(&chain) - 0.06).abs() < 1e-9, "{}", cls(&chain));
    }

    #[test]
    fn tbt_counts_beyond_50ms_after_fcp() {
        let (w, long) = tbt(
            &[(0.0, 200.0), (500.0, 300.0), (900.0, 40.0)],
            Some(100.0),
            2000.0,
        );
        // first task clipped to 100..200 (100 ms → 50 blocking), second 300 → 250
        assert_eq!(w.ms, 300.0);
        assert_eq!((w.from_ms, w.to_ms, long.len()), (100.0, 2000.0, 3));
    }
}
