//! What the API checks before a load is accepted: the request's fields (turned into the job an
//! agent runs) and where its URL points. The agent's egress guard is the real check, where the
//! browser connects; this one gives the user an early, clear error.

use std::net::IpAddr;
use std::time::Duration;

use vantage_proto::api::{LoadRequest, MAX_LOAD_RUNS, MAX_URL_LEN};
use vantage_proto::netpolicy::Policy;
use vantage_proto::{parse_http_url, JobSpec, View};

use super::orchestrator::Validated;

/// How long the target's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Field(String),
    #[error("{0}")]
    Target(String),
}

/// Checks every field and builds the job.
pub fn job_of(r: &LoadRequest) -> Result<Validated, Invalid> {
    if r.url.len() > MAX_URL_LEN {
        return Err(Invalid::Field(format!(
            "the url is {} bytes; at most {MAX_URL_LEN} are accepted",
            r.url.len()
        )));
    }
    if !(1..=MAX_LOAD_RUNS).contains(&r.runs) {
        return Err(Invalid::Field(format!(
            "runs is {}; accepted is 1 to {MAX_LOAD_RUNS}",
            r.runs
        )));
    }
    let from = r.from.parse().map_err(Invalid::Field)?;
    let mut job = JobSpec::new(&r.url);
    job.runs = r.runs as u8;
    job.view = r.view.unwrap_or(View::Cold);
    if let Some(v) = r.viewport {
        job.viewport = v;
    }
    if let Some(t) = r.timeout {
        job.timeout_ms = t;
    }
    if let Some(w) = r.wait {
        job.wait = w;
    }
    job.screenshot = r.screenshot;
    job.user_agent = r.user_agent.clone();
    job.validate().map_err(|e| Invalid::Field(e.to_string()))?;
    Ok(Validated {
        request: r.clone(),
        job,
        from,
    })
}

/// Refuses a URL whose host is, or resolves to, one of the networks the policy keeps out. A
/// `host:port` in `pinned` is what the agents connect to on purpose, and is not resolved.
pub async fn check_target(
    url: &str,
    policy: &Policy,
    pinned: &[(String, u16)],
) -> Result<(), Invalid> {
    let ep = parse_http_url(url).map_err(|e| Invalid::Field(e.to_string()))?;
    if pinned
        .iter()
        .any(|(h, p)| h.eq_ignore_ascii_case(&ep.host) && *p == ep.port)
    {
        return Ok(());
    }
    let addrs: Vec<IpAddr> = match ep.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let found = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((ep.host.as_str(), ep.port)),
            )
            .await
            .map_err(|_| {
                Invalid::Target(format!(
                    "`{}` did not resolve within {} s",
                    ep.host,
                    RESOLVE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Invalid::Target(format!("cannot resolve `{}`: {e}", ep.host)))?;
            found.map(|a| a.ip()).collect()
        }
    };
    for ip in addrs {
        if let Some(why) = policy.refuse(ip) {
            return Err(Invalid::Target(format!(
                "{url} points to {ip}, {why}; loads may only reach the public web unless the controller is started with --allow-net covering it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let none = Policy::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://localhost:1/",
        ] {
            let e = check_target(url, &none, &[]).await.unwrap_err().to_string();
            assert!(e.contains("--allow-net"), "{url}: {e}");
        }
        let lo = Policy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        check_target("http://127.0.0.1:8080/", &lo, &[])
            .await
            .unwrap();
        check_target("http://93.184.215.14/", &none, &[])
            .await
            .unwrap();
        check_target("http://demo.test/", &none, &[("demo.test".into(), 80)])
            .await
            .unwrap();
        assert!(
            check_target("http://demo.test:81/", &none, &[("demo.test".into(), 80)])
                .await
                .is_err()
        );
        let e = check_target("ftp://x/", &none, &[]).await.unwrap_err();
        assert!(matches!(e, Invalid::Field(_)), "{e}");
    }

    #[test]
    fn fields_are_checked_with_what_is_accepted() {
        let mut r = LoadRequest::new("http://example.com/");
        r.runs = 0;
        assert!(job_of(&r).unwrap_err().to_string().contains("1 to 9"));
        r.runs = 100;
        assert!(job_of(&r).unwrap_err().to_string().contains("1 to 9"));
        r.runs = 3;
        let v = job_of(&r).unwrap();
        assert_eq!(v.job.runs, 3);
        r.url = "javascript:alert(1)".into();
        assert!(job_of(&r).is_err());
    }
}
