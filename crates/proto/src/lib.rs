//! `vantage-proto`: the only types that cross a process boundary. Job specs go from the controller
//! to an agent; reports come back and are stored and rendered (JSON, CLI, HAR, HTML, dashboard).
//! Both are versioned; a reader refuses a newer major schema with a clear error.

pub mod api;
mod job;
pub mod netpolicy;
mod report;
pub mod schema;
pub mod wire;

pub use job::{
    parse_http_url, Endpoint, JobError, JobSpec, View, Viewport, Wait, MAX_QUIET_MS, MAX_RUNS,
    MAX_TIMEOUT_MS,
};
pub use report::{
    ConsoleEntry, HarTimings, Header, Lcp, LongTask, NavTiming, Redirect, Report, Request, Run,
    RunView, Stats, Summary, TbtWindow, MEDIAN_RULE, SCHEMA_VERSION,
};
