//! `GET /healthz` for Fly checks: 200 with a JSON body when the mesh is up, the node has joined
//! (or has no seeds to join) and Chromium is ready; otherwise 503 and the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the health endpoint reports; the agent's main loop keeps it current.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub name: String,
    pub region: String,
    /// Live members seen, this node included.
    pub members: usize,
    /// Seeds configured, and whether one was joined.
    pub seeds: usize,
    pub joined: bool,
    /// `starting|ready|restarting|failed`, or `none` when running without a browser.
    pub browser: String,
    pub browser_reason: Option<String>,
    pub browser_pid: Option<u32>,
    pub jobs_active: usize,
    pub capacity: usize,
}

impl Health {
    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        if self.seeds > 0 && !self.joined {
            return Some(format!(
                "not joined: none of {} seeds reached yet",
                self.seeds
            ));
        }
        match self.browser.as_str() {
            "ready" | "none" => None,
            other => Some(match &self.browser_reason {
                Some(r) => format!("browser {other}: {r}"),
                None => format!("browser {other}"),
            }),
        }
    }

    fn body(&self) -> String {
        json!({
            "status": if self.problem().is_none() { "ok" } else { "unhealthy" },
            "reason": self.problem(),
            "name": self.name,
            "region": self.region,
            "members": self.members,
            "joined": self.joined || self.seeds == 0,
            "browser": self.browser,
            "browser_pid": self.browser_pid,
            "jobs": format!("{}/{}", self.jobs_active, self.capacity),
        })
        .to_string()
    }
}

/// Binds `addr` and serves `/healthz` from `state` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    state: watch::Receiver<Health>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind health endpoint {addr}"))?;
    let state = Arc::new(state);
    Ok(tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n =
                    match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                        .await
                    {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (code, body) = if path == "/healthz" {
                    let h = state.borrow().clone();
                    let code = if h.problem().is_none() {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    (code, h.body())
                } else {
                    (
                        "404 Not Found",
                        json!({ "error": "only /healthz is served here" }).to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    }))
}
