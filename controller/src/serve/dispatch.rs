//! One attempt at running a region's job on one agent, over the mesh: connect to its job API,
//! send the job, and follow the stream. Liveness is the stream's: a failed connect, a dropped
//! stream or [`SILENCE`] without a frame means the agent is gone, long before gossip would say.

use std::net::SocketAddrV6;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::Node;
use vantage_proto::wire::{self, JobEvent, JobRequest};
use vantage_proto::{JobSpec, Report};

/// How long the agent may stay silent (it heartbeats twice a second while a job runs).
pub const SILENCE: Duration = Duration::from_millis(wire::SILENCE_LIMIT_MS);

/// How an attempt ended.
#[derive(Debug)]
pub enum Ended {
    Report(Box<Report>),
    /// No connection could be opened.
    ConnectFailed(String),
    /// The stream dropped or went silent.
    Lost(String),
    Busy,
    Rejected(String),
}

/// What the attempt reports while it runs.
#[derive(Debug)]
pub enum Progress {
    /// The agent admitted the job (its first frame).
    Admitted,
    Event(JobEvent),
}

/// Runs one attempt. `progress` sees the agent's events as they arrive.
pub async fn attempt(
    node: &Node,
    agent: SocketAddrV6,
    job: &JobSpec,
    start_at_unix_ms: Option<u64>,
    connect_timeout: Duration,
    mut progress: impl FnMut(Progress),
) -> Ended {
    let stream = match tokio::time::timeout(connect_timeout, node.tcp_connect(agent)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ended::ConnectFailed(format!("cannot connect to the job API: {e}")),
        Err(_) => {
            return Ended::ConnectFailed(format!(
                "no connection to the job API within {:.1} s",
                connect_timeout.as_secs_f64()
            ))
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let req = wire::encode(&JobRequest {
        job: job.clone(),
        start_at_unix_ms,
    });
    match tokio::time::timeout(SILENCE, async {
        wr.write_all(&req).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Ended::Lost(format!("the job stream failed while sending the job: {e}"))
        }
        Err(_) => return Ended::Lost("the agent did not take the job within 3 s".into()),
    }
    let mut first = true;
    loop {
        let frame = match tokio::time::timeout(SILENCE, read_frame(&mut rd)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Ended::Lost(format!("the job stream dropped: {e}")),
            Err(_) => {
                return Ended::Lost(format!(
                    "the job stream was silent for {} s",
                    SILENCE.as_secs()
                ))
            }
        };
        let event: JobEvent = match wire::decode(&frame) {
            Ok(e) => e,
            Err(e) => return Ended::Lost(format!("the agent sent a malformed frame: {e}")),
        };
        if first {
            first = false;
            progress(Progress::Admitted);
        }
        match event {
            JobEvent::Report { report } => return Ended::Report(report),
            JobEvent::Busy { .. } => return Ended::Busy,
            JobEvent::Rejected { error } => return Ended::Rejected(error),
            e => progress(Progress::Event(e)),
        }
    }
}

/// Reads one length-prefixed frame.
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = wire::check_len(r.read_u32().await?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}
