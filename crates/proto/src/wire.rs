//! Framing for the agent's job API on the overlay: length-prefixed JSON frames (u32 big-endian
//! length, at most [`MAX_FRAME`] bytes). The client sends one [`JobRequest`]; the agent answers
//! with [`JobEvent`]s ending in `Report`, `Busy` or `Rejected`. From `Queued` until that final
//! frame the agent also sends a [`JobEvent::Heartbeat`] every [`HEARTBEAT_INTERVAL_MS`], so a
//! client that hears nothing for [`SILENCE_LIMIT_MS`] can take the agent to be gone instead of
//! waiting out a job's whole timeout.

use serde::{Deserialize, Serialize};

use crate::job::JobSpec;
use crate::report::{Report, RunView};

/// Largest frame accepted, in bytes (a report with screenshots stays well under it).
pub const MAX_FRAME: usize = 32 << 20;

/// How often an agent sends [`JobEvent::Heartbeat`] on an admitted job's stream, in ms. It is
/// sent whatever else the stream carries: while the job waits for a slot, a browser or its start
/// time, while it runs, and while its report is being prepared.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;

/// How long a client waits for the start of the next frame before it takes the agent (or the path
/// to it) to be dead, in ms: six missed heartbeats, so a congested path or a stalled scheduler
/// does not count as a death, while a dead agent is noticed in seconds rather than after the
/// job's timeout.
pub const SILENCE_LIMIT_MS: u64 = 3000;

/// How far ahead of the agent's clock [`JobRequest::start_at_unix_ms`] may be, in ms. A start
/// further ahead is rejected: it is most likely a clock or unit mistake, and the job would hold
/// a slot doing nothing meanwhile.
pub const MAX_START_AHEAD_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub job: JobSpec,
    /// Start the first run at this wall-clock time (ms since the Unix epoch), so that several
    /// agents load a page together. The agent gets its slot, browser and first browser context
    /// ready, then waits; the report's `started_unix_ms` is when the first navigation actually
    /// began. A time already past starts at once; one more than [`MAX_START_AHEAD_MS`] ahead is
    /// rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<u64>,
}

impl JobRequest {
    /// A request to run `job` as soon as possible.
    pub fn new(job: JobSpec) -> Self {
        Self {
            job,
            start_at_unix_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Accepted; `position` jobs are ahead of it.
    Queued {
        position: usize,
    },
    RunStarted {
        index: u8,
        view: RunView,
    },
    RunFinished {
        index: u8,
        view: RunView,
        load_ms: Option<f64>,
    },
    Report {
        report: Box<Report>,
    },
    /// Every slot and queue place is taken; try another agent or later.
    Busy {
        running: usize,
        queued: usize,
    },
    /// The job was refused (an invalid spec or start time, a client that is not a controller,
    /// no browser); the message says what and what is accepted.
    Rejected {
        error: String,
    },
    /// The agent is alive and still on the job; sent every [`HEARTBEAT_INTERVAL_MS`] between
    /// `Queued` and the final frame. Carries nothing.
    Heartbeat,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes one frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol types serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a frame length read from the wire.
pub fn check_len(len: u32) -> Result<usize, FrameError> {
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_a_bare_event_tag() {
        let json = serde_json::to_string(&JobEvent::Heartbeat).unwrap();
        assert_eq!(json, r#"{"event":"heartbeat"}"#);
        assert_eq!(
            decode::<JobEvent>(json.as_bytes()).unwrap(),
            JobEvent::Heartbeat
        );
    }

    #[test]
    fn a_start_time_is_optional_on_the_wire() {
        let req = JobRequest::new(JobSpec::new("https://example.com/"));
        let json = serde_json::to_value(&req).unwrap();
        assert!(json.get("start_at_unix_ms").is_none(), "{json}");
        let back: JobRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.start_at_unix_ms, None);
        let at = JobRequest {
            start_at_unix_ms: Some(1_700_000_000_000),
            ..req
        };
        let back: JobRequest = decode(&serde_json::to_vec(&at).unwrap()).unwrap();
        assert_eq!(back, at);
    }
}
