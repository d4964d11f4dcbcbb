//! Parsers for the flag values `clap` cannot read by itself. Each one states what is accepted in
//! its error, which clap shows as a usage error (exit code 2).

use vantage_proto::api::FromSpec;
use vantage_proto::{View, Viewport, Wait, MAX_QUIET_MS, MAX_TIMEOUT_MS};

/// Shortest whole-job timeout the API accepts, in ms.
const MIN_TIMEOUT_MS: u32 = 1_000;
/// The quiet window of `--wait quiet` without a length, as the API's default.
pub const DEFAULT_QUIET_MS: u32 = 2_000;

/// `1366x768` (also `1366X768` or `1366×768`).
pub fn parse_viewport(s: &str) -> Result<Viewport, String> {
    let bad =
        || format!("`{s}` is not a viewport: expected WIDTHxHEIGHT in CSS pixels, like 1366x768");
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let width: u32 = w.trim().parse().map_err(|_| bad())?;
    let height: u32 = h.trim().parse().map_err(|_| bad())?;
    if width == 0 || height == 0 {
        return Err(bad());
    }
    Ok(Viewport { width, height })
}

/// A duration in milliseconds: `1500ms`, `60s`, `2m`, or a bare number of `default_unit_ms`.
fn parse_duration_ms(s: &str, default_unit_ms: u64) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = s.strip_suffix('m') {
        (d, 60_000)
    } else {
        (s, default_unit_ms)
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(unit)
}

/// `--timeout`: `60s`, `1500ms`, `2m` or a bare number of seconds; 1 s to 120 s.
pub fn parse_timeout(s: &str) -> Result<u32, String> {
    let ms = parse_duration_ms(s, 1_000).ok_or_else(|| {
        format!(
            "`{s}` is not a duration: expected seconds like 60s or 90, or milliseconds like 1500ms"
        )
    })?;
    if !(u64::from(MIN_TIMEOUT_MS)..=u64::from(MAX_TIMEOUT_MS)).contains(&ms) {
        return Err(format!(
            "a timeout of {ms} ms is out of range: accepted is 1s to {}s",
            MAX_TIMEOUT_MS / 1000
        ));
    }
    Ok(ms as u32)
}

/// `--wait`: `load`, `quiet` (load then 2 s without network activity) or `quiet:MS`
/// (`quiet:3000`, `quiet:3s`).
pub fn parse_wait(s: &str) -> Result<Wait, String> {
    let s = s.trim();
    if s == "load" {
        return Ok(Wait::Load);
    }
    if s == "quiet" {
        return Ok(Wait::LoadAndQuiet {
            quiet_ms: DEFAULT_QUIET_MS,
        });
    }
    let bad =
        || format!("`{s}` is not a wait rule: expected load, quiet or quiet:MS like quiet:3000");
    let quiet = s.strip_prefix("quiet:").ok_or_else(bad)?;
    let ms = parse_duration_ms(quiet, 1).ok_or_else(bad)?;
    if ms > u64::from(MAX_QUIET_MS) {
        return Err(format!(
            "a quiet window of {ms} ms is too long: at most {MAX_QUIET_MS} ms"
        ));
    }
    Ok(Wait::LoadAndQuiet {
        quiet_ms: ms as u32,
    })
}

/// `--view`: `cold`, `warm` or `both`.
pub fn parse_view(s: &str) -> Result<View, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "cold" => Ok(View::Cold),
        "warm" => Ok(View::Warm),
        "both" => Ok(View::Both),
        _ => Err(format!("`{s}` is not a view: expected cold, warm or both")),
    }
}

/// `--from`: checked here with the API's own rules so a typo is a usage error before anything
/// is sent.
pub fn parse_from(s: &str) -> Result<String, String> {
    FromSpec::Text(s.to_owned()).parse()?;
    Ok(s.to_owned())
}

/// `--tag k=v`.
pub fn parse_tag(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "`{s}` is not a tag filter: expected KEY=VALUE like region=sin"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewports() {
        assert_eq!(
            parse_viewport("1366x768"),
            Ok(Viewport {
                width: 1366,
                height: 768
            })
        );
        assert_eq!(parse_viewport("390×844").unwrap().height, 844);
        for bad in ["1366", "x768", "0x10", "ax b", "1366x768x2", ""] {
            assert!(parse_viewport(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("60s"), Ok(60_000));
        assert_eq!(parse_timeout("1500ms"), Ok(1_500));
        assert_eq!(parse_timeout("90"), Ok(90_000));
        assert_eq!(parse_timeout("2m"), Ok(120_000));
        for bad in ["999ms", "121s", "3m", "s", "ten", "-5s", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn waits() {
        assert_eq!(parse_wait("load"), Ok(Wait::Load));
        assert_eq!(
            parse_wait("quiet"),
            Ok(Wait::LoadAndQuiet { quiet_ms: 2_000 })
        );
        assert_eq!(
            parse_wait("quiet:3000"),
            Ok(Wait::LoadAndQuiet { quiet_ms: 3_000 })
        );
        assert_eq!(
            parse_wait("quiet:3s"),
            Ok(Wait::LoadAndQuiet { quiet_ms: 3_000 })
        );
        for bad in ["quiet:", "quiet:20000", "idle", "load:5"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn views_regions_and_tags() {
        assert_eq!(parse_view("both"), Ok(View::Both));
        assert!(parse_view("hot").is_err());
        assert!(parse_from("sin,ams").is_ok());
        assert!(parse_from("all").is_ok());
        assert!(parse_from("all,sin").is_err());
        assert!(parse_from("s!n").is_err());
        assert!(parse_tag("region=sin").is_ok());
        assert!(parse_tag("region").is_err());
        assert!(parse_tag("=sin").is_err());
    }
}
