//! `GET /healthz` for Fly checks: 200 with a JSON body when the mesh is up, the node has joined
//! (or has no seeds to join) and Chromium is ready; otherwise 503 and the reason.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
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
    /// Chromium's sandbox: `on (as USER)` or `off: <why>`.
    pub sandbox: Option<String>,
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

    fn body(&self) -> serde_json::Value {
        json!({
            "status": if self.problem().is_none() { "ok" } else { "unhealthy" },
            "reason": self.problem(),
            "name": self.name,
            "region": self.region,
            "members": self.members,
            "joined": self.joined || self.seeds == 0,
            "browser": self.browser,
            "browser_pid": self.browser_pid,
            "sandbox": self.sandbox,
            "jobs": format!("{}/{}", self.jobs_active, self.capacity),
        })
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
    let app = Router::new()
        .route("/healthz", get(healthz))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "only /healthz is served here" })),
            )
        })
        .with_state(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "health endpoint stopped");
        }
    }))
}

async fn healthz(State(state): State<watch::Receiver<Health>>) -> impl IntoResponse {
    let h = state.borrow().clone();
    let code = match h.problem() {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(h.body()))
}
