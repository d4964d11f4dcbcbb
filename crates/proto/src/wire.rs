//! Framing for the agent's job API on the overlay: length-prefixed JSON frames (u32 big-endian
//! length, at most [`MAX_FRAME`] bytes). The client sends one [`JobRequest`]; the agent answers
//! with [`JobEvent`]s ending in `Report`, `Busy` or `Rejected`.

use serde::{Deserialize, Serialize};

use crate::job::JobSpec;
use crate::report::{Report, RunView};

/// Largest frame accepted, in bytes (a report with screenshots stays well under it).
pub const MAX_FRAME: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub job: JobSpec,
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
    /// The job spec was invalid; the message says what and what is accepted.
    Rejected {
        error: String,
    },
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
