//! The page-load job an agent runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most runs per job.
pub const MAX_RUNS: u8 = 9;
/// Longest job timeout, in milliseconds.
pub const MAX_TIMEOUT_MS: u32 = 120_000;
/// Longest quiet window after `load`, in milliseconds.
pub const MAX_QUIET_MS: u32 = 10_000;

/// Cold runs use a fresh browser context each; warm runs reuse the previous run's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Cold,
    Warm,
    /// Each run is a cold load followed by a warm repeat view, as WebPageTest does.
    Both,
}

/// CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
}

/// When a run is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "until", rename_all = "snake_case")]
pub enum Wait {
    /// The `load` event.
    Load,
    /// `load`, then no network activity for `quiet_ms` (at most 10000 ms, `MAX_QUIET_MS`), as
    /// WebPageTest and browsertime define it: activity is a request sent or response bytes
    /// received by the page's navigation. Requests left open do not count (a page may never read
    /// a body it fetched, and the browser then never finishes it; such requests are reported
    /// `unfinished`), nor do WebSocket frames and EventSource messages. The job's `timeout_ms` is
    /// the hard cap: a page still busy then ends its run there, not marked timed out (it did
    /// load), with the fact noted in the run's `omitted`.
    LoadAndQuiet {
        /// The quiet window in ms, 0 to 10000.
        quiet_ms: u32,
    },
}

/// A page-load job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobSpec {
    /// The http or https URL to load.
    pub url: String,
    /// 1 to 9 (`MAX_RUNS`).
    pub runs: u8,
    /// Cold, warm, or both per run.
    pub view: View,
    /// 200 to 4096 CSS pixels each way.
    pub viewport: Viewport,
    /// User-Agent override; null for the browser's own.
    pub user_agent: Option<String>,
    /// Whole-run deadline in milliseconds; a run past it yields a partial report marked timed out.
    pub timeout_ms: u32,
    /// When a run is over.
    pub wait: Wait,
    /// Take a screenshot of the viewport at the end of each run.
    pub screenshot: bool,
}

impl JobSpec {
    /// The defaults a user gets with just a URL: one cold run, 1366×768, load + 2 s quiet, 60 s.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            runs: 1,
            view: View::Cold,
            viewport: Viewport {
                width: 1366,
                height: 768,
            },
            user_agent: None,
            timeout_ms: 60_000,
            wait: Wait::LoadAndQuiet { quiet_ms: 2_000 },
            screenshot: false,
        }
    }

    /// Checks every field; the error says what was wrong and what is accepted.
    pub fn validate(&self) -> Result<(), JobError> {
        check_url(&self.url)?;
        if !(1..=MAX_RUNS).contains(&self.runs) {
            return Err(JobError::Runs(self.runs));
        }
        let Viewport { width, height } = self.viewport;
        if !(200..=4096).contains(&width) || !(200..=4096).contains(&height) {
            return Err(JobError::Viewport(width, height));
        }
        if !(1_000..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(JobError::Timeout(self.timeout_ms));
        }
        if let Wait::LoadAndQuiet { quiet_ms } = self.wait {
            if quiet_ms > MAX_QUIET_MS {
                return Err(JobError::Quiet(quiet_ms));
            }
        }
        if let Some(ua) = &self.user_agent {
            if ua.is_empty() || ua.len() > 512 || ua.chars().any(char::is_control) {
                return Err(JobError::UserAgent);
            }
        }
        Ok(())
    }
}

/// The checks a URL must pass before a browser sees it: it parses as a URL by the WHATWG rules
/// browsers use, its scheme is http or https, it has a host, and it holds no whitespace or control
/// characters (which the parser would silently drop: in a job they are a mistake).
fn check_url(url: &str) -> Result<(), JobError> {
    parse_http_url(url).map(|_| ())
}

/// Where an http(s) URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// The host as the URL parser normalizes it (lowercase, punycode), IPv6 without brackets.
    pub host: String,
    /// The port, or the scheme's default.
    pub port: u16,
}

/// Checks an http(s) URL the way [`JobSpec::validate`] does and says where it points.
pub fn parse_http_url(url: &str) -> Result<Endpoint, JobError> {
    let bad = |why: &str| JobError::Url(url.to_owned(), why.to_owned());
    if url.len() > 8192 {
        return Err(bad("longer than 8192 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(parse_error(e)))?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(JobError::Scheme(scheme.to_owned()));
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => return Err(bad("no host")),
    };
    Ok(Endpoint {
        scheme: scheme.to_owned(),
        host,
        // http and https always have one
        port: parsed.port_or_known_default().unwrap_or(80),
    })
}

/// What was wrong, in the words of the old checks.
fn parse_error(e: url::ParseError) -> &'static str {
    use url::ParseError as P;
    match e {
        P::RelativeUrlWithoutBase | P::RelativeUrlWithCannotBeABaseBase => "no scheme",
        P::EmptyHost => "no host",
        P::InvalidPort => "the port is not a number from 0 to 65535",
        P::InvalidIpv6Address => "invalid IPv6 address (or an unclosed `[`)",
        P::InvalidIpv4Address => "invalid IPv4 address",
        P::InvalidDomainCharacter => "the host holds a character no domain may hold",
        P::IdnaError => "the host is not a valid domain name (a character no domain may hold, or a bad internationalized name)",
        _ => "it does not parse as a URL",
    }
}

/// Why a job spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("`{0}` is not a valid URL: {1}")]
    Url(String, String),
    #[error("`{0}:` URLs are not loaded; only http and https are accepted")]
    Scheme(String),
    #[error("runs is {0}; accepted is 1 to 9")]
    Runs(u8),
    #[error("viewport {0}×{1} is out of range; width and height must be 200 to 4096 CSS pixels")]
    Viewport(u32, u32),
    #[error("timeout is {0} ms; accepted is 1000 to 120000 ms")]
    Timeout(u32),
    #[error("quiet window is {0} ms; the cap is 10000 ms")]
    Quiet(u32),
    #[error("user agent must be 1 to 512 printable characters")]
    UserAgent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_must_with_specific_errors() {
        for (url, want) in [
            ("file:///etc/passwd", "`file:` URLs are not loaded"),
            ("chrome://settings", "`chrome:` URLs are not loaded"),
            ("javascript:alert(1)", "`javascript:` URLs are not loaded"),
            ("not a url", "is not a valid URL"),
            ("http://", "no host"),
            ("http://example.com:99999/", "port"),
            ("https://exa mple.com/", "whitespace"),
            ("HTTP://[::1", "unclosed"),
            ("http://exa<mple.com/", "not a valid domain name"),
            ("http://[::g]/", "IPv6"),
        ] {
            let err = JobSpec::new(url).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
        for ok in [
            "https://example.com/",
            "HTTP://user@[::1]:8080/a?b#c",
            "http://127.0.0.1:3000",
            "https://bücher.example/",
        ] {
            assert_eq!(JobSpec::new(ok).validate(), Ok(()), "{ok}");
        }
        let mut j = JobSpec::new("https://example.com/");
        j.runs = 10;
        assert_eq!(j.validate(), Err(JobError::Runs(10)));
        j.runs = 3;
        j.wait = Wait::LoadAndQuiet { quiet_ms: 60_000 };
        assert_eq!(j.validate(), Err(JobError::Quiet(60_000)));
    }

    #[test]
    fn endpoints_get_the_schemes_default_port() {
        let e = parse_http_url("HTTPS://user@[::1]/x").unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.host.as_str(), e.port),
            ("https", "::1", 443)
        );
        let e = parse_http_url("http://example.com:8080?q").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("example.com", 8080));
        assert_eq!(parse_http_url("http://a.test/").unwrap().port, 80);
        let e = parse_http_url("https://Bücher.Example:444/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("xn--bcher-kva.example", 444));
    }

    #[test]
    fn json_shape_is_stable() {
        let j = JobSpec::new("https://example.com/");
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["view"], "cold");
        assert_eq!(v["wait"]["until"], "load_and_quiet");
        assert_eq!(serde_json::from_value::<JobSpec>(v).unwrap(), j);
    }
}
