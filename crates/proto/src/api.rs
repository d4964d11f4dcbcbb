//! The controller's HTTP API: what the CLI and the dashboard send and read. Documented as OpenAPI
//! at `/api/openapi.json`, generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::job::{View, Viewport, Wait};
use crate::report::{Report, RunView};

/// Most runs a load may ask for (per region).
pub const MAX_LOAD_RUNS: u32 = crate::job::MAX_RUNS as u32;
/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 8192;
/// Largest request body the API reads, in bytes.
pub const MAX_BODY: usize = 64 << 10;

/// Where a load runs, as written: `sin`, `sin,ams,iad`, `all` or `nearest`, or a JSON list of
/// region codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(untagged)]
pub enum FromSpec {
    Text(String),
    List(Vec<String>),
}

impl Default for FromSpec {
    fn default() -> Self {
        FromSpec::Text("nearest".into())
    }
}

/// Where a load runs, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Each of these regions.
    Regions(Vec<String>),
    /// The agent with the smallest estimated RTT from the controller.
    Nearest,
    /// One agent in every region that has one.
    All,
}

impl FromSpec {
    /// `all` and `nearest` stand alone; region codes are 1 to 32 of `[a-z0-9-]`, without repeats.
    pub fn parse(&self) -> Result<Placement, String> {
        let items: Vec<String> = match self {
            FromSpec::Text(t) => t
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
            FromSpec::List(l) => l.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
        };
        match items.as_slice() {
            [one] if one == "all" => return Ok(Placement::All),
            [one] if one == "nearest" => return Ok(Placement::Nearest),
            [] => return Err("`from` is empty: give region codes, `all` or `nearest`".into()),
            _ => {}
        }
        let mut out: Vec<String> = Vec::new();
        for r in items {
            if r == "all" || r == "nearest" {
                return Err(format!("`{r}` cannot be combined with regions in `from`"));
            }
            let ok = !r.is_empty()
                && r.len() <= 32
                && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(format!(
                    "`{r}` is not a region code: expected 1 to 32 letters, digits or dashes, like sin"
                ));
            }
            if !out.contains(&r) {
                out.push(r);
            }
        }
        Ok(Placement::Regions(out))
    }
}

/// `POST /api/loads`: load `url` from one or more regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// http or https URL, at most 8192 bytes.
    pub url: String,
    /// Region codes (`sin`, `sin,ams`), `all` or `nearest` (the default).
    #[serde(default)]
    pub from: FromSpec,
    /// Runs per region, 1 to 9; the report's median run follows WebPageTest's rule.
    #[serde(default = "one")]
    pub runs: u32,
    /// `cold` (default), `warm` or `both` (each run a cold load then a repeat view).
    #[schema(value_type = Option<String>)]
    pub view: Option<View>,
    /// CSS pixels; default 1366×768.
    #[schema(value_type = Option<Object>)]
    pub viewport: Option<Viewport>,
    /// Take a screenshot at the end of each run.
    #[serde(default)]
    pub screenshot: bool,
    /// Whole-job deadline per region, in milliseconds (1000 to 120000; default 60000).
    pub timeout: Option<u32>,
    /// When a run is over: `{"until":"load"}` or `{"until":"load_and_quiet","quiet_ms":2000}`
    /// (the default).
    #[schema(value_type = Option<Object>)]
    pub wait: Option<Wait>,
    /// Fail rather than run in another region when a region has no healthy agent.
    #[serde(default)]
    pub strict: bool,
    /// User-Agent override.
    pub user_agent: Option<String>,
}

fn one() -> u32 {
    1
}

impl LoadRequest {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            from: FromSpec::default(),
            runs: 1,
            view: None,
            viewport: None,
            screenshot: false,
            timeout: None,
            wait: None,
            strict: false,
            user_agent: None,
        }
    }
}

/// `202` answer to `POST /api/loads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadAccepted {
    pub id: String,
    /// Where to follow it: `/api/loads/{id}`.
    pub location: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadState {
    Queued,
    Running,
    Done,
    Failed,
}

impl LoadState {
    pub fn is_terminal(self) -> bool {
        matches!(self, LoadState::Done | LoadState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::Queued => "queued",
            LoadState::Running => "running",
            LoadState::Done => "done",
            LoadState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => LoadState::Queued,
            "running" => LoadState::Running,
            "done" => LoadState::Done,
            "failed" => LoadState::Failed,
            _ => return None,
        })
    }
}

/// Why something failed, in a form a program can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No healthy agent could take it (and `strict`, or no agent at all).
    NoAgent,
    /// The agent died mid-job and no other attempt was allowed or left.
    AgentLost,
    /// The agent refused the job spec.
    Rejected,
    /// The page itself failed to load in every run.
    Page,
    /// The controller stopped while the load was in flight and could not resume it.
    ControllerRestart,
    /// Anything else on the controller's side.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
/// What failed, as a kind to branch on and a sentence to show.
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// How one attempt at running a region's job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A report came back.
    Report,
    /// No connection to the agent's job API.
    ConnectFailed,
    /// The job stream dropped, or went silent past the heartbeat limit.
    AgentLost,
    /// The agent had no free slot.
    Busy,
    /// The agent refused the job.
    Rejected,
    /// The controller stopped during the attempt.
    ControllerRestart,
}

/// One dispatch of a region's job to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// The agent's member name.
    pub agent: String,
    /// The agent's region.
    pub region: String,
    /// Unix time in milliseconds when the job was sent.
    pub dispatched_unix_ms: u64,
    /// Unix time in milliseconds when the attempt ended; null while it runs.
    pub ended_unix_ms: Option<u64>,
    /// Null while the attempt runs.
    pub outcome: Option<AttemptOutcome>,
    /// What happened, in words (`the job stream was silent for 3 s`).
    pub detail: Option<String>,
}

/// One region of a load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TargetStatus {
    /// The region asked for (for `nearest`, the region chosen).
    pub region: String,
    pub state: LoadState,
    /// Every dispatch, in order.
    pub attempts: Vec<Attempt>,
    /// Set when the load ran somewhere other than asked, and why.
    pub note: Option<String>,
    /// The report's id (`GET /api/reports/{id}`), once there is one.
    pub report_id: Option<i64>,
    /// Why the region failed, if it did.
    pub failure: Option<Failure>,
}

/// `GET /api/loads/{id}`, and what `vantage load --json` and `vantage demo --json` print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct LoadStatus {
    pub id: String,
    pub state: LoadState,
    /// Unix time in milliseconds when the load was accepted.
    pub created_unix_ms: u64,
    /// Unix time in milliseconds when it ended; null while it runs.
    pub finished_unix_ms: Option<u64>,
    /// The request as accepted.
    pub request: LoadRequest,
    /// One per region, in the order placed.
    pub targets: Vec<TargetStatus>,
    /// Set when the whole load failed (for example, no agent matched).
    pub failure: Option<Failure>,
    /// The reports, when done.
    #[serde(default)]
    pub reports: Vec<StoredReport>,
}

/// A report as the controller keeps it: the agent's report plus where and how it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct StoredReport {
    /// The report's id (`GET /api/reports/{id}`).
    pub id: i64,
    /// The load it belongs to.
    pub load_id: String,
    /// The region asked for.
    pub region: String,
    /// Where it ran.
    pub agent: String,
    /// The region of the agent it ran on.
    pub agent_region: String,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
    /// Why it ran somewhere other than asked, if it did.
    pub note: Option<String>,
    /// The estimated network RTT between the controller and the agent (Vivaldi), in ms: the
    /// floor under the TTFB of a page served next to the controller.
    pub estimated_rtt_ms: Option<f64>,
    /// The agent's report.
    #[schema(value_type = Object)]
    pub report: Report,
}

/// A row of `GET /api/reports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ReportSummary {
    /// The report's id (`GET /api/reports/{id}`).
    pub id: i64,
    pub load_id: String,
    /// The URL loaded.
    pub url: String,
    /// The region asked for.
    pub region: String,
    /// Where it ran.
    pub agent: String,
    /// Unix time in milliseconds when the job started.
    pub started_unix_ms: u64,
    /// The median run's main-document HTTP status (the first run's when none loaded; 0 if none
    /// arrived).
    pub status: u16,
    /// The median run's TTFB, ms from navigation start to first response byte (its
    /// `timing.response_start_ms`, not `timing.wait_ms`).
    pub ttfb_ms: Option<f64>,
    /// The median run's `load` event, ms from navigation start.
    pub load_ms: Option<f64>,
    /// Why it ran somewhere other than asked, if it did.
    pub note: Option<String>,
}

/// Server-sent events of `GET /api/loads/{id}/events`; the SSE event name is `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LoadEvent {
    Queued {
        id: String,
    },
    Dispatched {
        region: String,
        agent: String,
        attempt: u32,
    },
    RunStarted {
        region: String,
        agent: String,
        index: u8,
        #[schema(value_type = String)]
        view: RunView,
    },
    RunFinished {
        region: String,
        agent: String,
        index: u8,
        #[schema(value_type = String)]
        view: RunView,
        load_ms: Option<f64>,
    },
    Retried {
        region: String,
        failed_agent: String,
        reason: String,
    },
    TargetDone {
        region: String,
        report_id: i64,
    },
    TargetFailed {
        region: String,
        failure: Failure,
    },
    /// The last event.
    Done {
        state: LoadState,
        failure: Option<Failure>,
    },
}

impl LoadEvent {
    pub fn name(&self) -> &'static str {
        match self {
            LoadEvent::Queued { .. } => "queued",
            LoadEvent::Dispatched { .. } => "dispatched",
            LoadEvent::RunStarted { .. } => "run_started",
            LoadEvent::RunFinished { .. } => "run_finished",
            LoadEvent::Retried { .. } => "retried",
            LoadEvent::TargetDone { .. } => "target_done",
            LoadEvent::TargetFailed { .. } => "target_failed",
            LoadEvent::Done { .. } => "done",
        }
    }
}

/// A Vivaldi coordinate, as Serf shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct CoordinateInfo {
    /// Euclidean part, in seconds (8 dimensions).
    pub vec: Vec<f64>,
    /// Confidence in the coordinate: relative error, dimensionless (lower is better).
    pub error: f64,
    /// Vivaldi's adjustment term, in seconds.
    pub adjustment: f64,
    /// Height above the Euclidean space (the access link), in seconds.
    pub height: f64,
}

/// A row of `GET /api/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct MemberInfo {
    /// The member's name.
    pub name: String,
    /// Overlay address and gossip port.
    pub addr: String,
    /// `alive`, `suspect`, `failed` or `left`.
    pub state: String,
    /// Its gossip tags (`role`, `region`, `wg`, `ep`…).
    pub tags: BTreeMap<String, String>,
    /// Its Vivaldi network coordinate, once known.
    pub coordinate: Option<CoordinateInfo>,
    /// Estimated RTT from the controller, in ms.
    pub rtt_ms: Option<f64>,
}

/// A row of `GET /api/regions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct RegionInfo {
    /// The region code, like `sin`.
    pub region: String,
    /// Agents that can take a job now.
    pub healthy_agents: usize,
    /// Agents known in the region, healthy or not.
    pub agents: usize,
}

/// `GET /api/rtt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RttAnswer {
    pub a: String,
    pub b: String,
    /// The members the estimate is between.
    pub a_member: String,
    pub b_member: String,
    pub rtt_ms: f64,
}

/// Every error the API answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable and machine-readable: `unauthorized`, `bad_request`, `unknown_region`,
    /// `forbidden_target`, `cross_origin`, `not_found`, `too_large`, `too_many_loads`, `no_agent`, `internal`.
    pub code: String,
    /// What was wrong and what is accepted.
    pub error: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ControllerHealth {
    pub status: String,
    pub name: String,
    pub region: String,
    pub members: usize,
    pub healthy_agents: usize,
    pub loads_in_flight: usize,
}
