//! The job API on the overlay: one job per connection, a concurrency limit with a bounded queue
//! and a clear "busy" beyond it, progress streamed as it happens, and cancellation when the client
//! goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use vantage_proto::wire::{self, JobEvent, JobRequest};
use vantage_proto::{JobSpec, Report, Run};

use crate::chromium::BrowserLink;
use crate::chromium::BrowserState;
use crate::executor::{report_frame, run_job_at, RunContext};
use crate::page::PagePool;

/// How long a job waits for a (re)starting browser before it is refused.
const BROWSER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a client may take to send its job request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest job request accepted, in bytes: a spec is well under 10 KiB, and the frame limit
/// (sized for reports with screenshots) is far too much to allocate per connection.
const MAX_REQUEST: usize = 64 << 10;

/// Where jobs run and how many at once.
pub struct JobServer {
    browser: Arc<BrowserLink>,
    ctx: RunContext,
    running: Arc<Semaphore>,
    capacity: usize,
    queue: usize,
    admitted: AtomicUsize,
    /// The next cold run's browser context, opened between jobs.
    pool: PagePool,
    /// Called after each job (counts toward browser recycling).
    on_done: Box<dyn Fn() + Send + Sync>,
    /// Set when the agent shuts down: every job still admitted ends with a cancelled report.
    cancel: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for JobServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobServer")
            .field("capacity", &self.capacity)
            .field("queue", &self.queue)
            .field("active", &self.active())
            .finish()
    }
}

impl JobServer {
    /// `capacity` jobs run at once; `queue` more wait; anything beyond is told it is busy.
    pub fn new(
        browser: Arc<BrowserLink>,
        ctx: RunContext,
        capacity: usize,
        queue: usize,
        on_done: Box<dyn Fn() + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(Self {
            browser,
            ctx,
            running: Arc::new(Semaphore::new(capacity)),
            capacity,
            queue,
            admitted: AtomicUsize::new(0),
            pool: PagePool::default(),
            on_done,
            cancel: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Cancels every admitted job, queued or running: each sends its client a report whose runs
    /// carry [`CANCELLED`] as their error, then ends.
    pub fn cancel_all(&self) {
        self.cancel.send_replace(true);
    }

    /// Keeps a browser context open ahead of the first job, and again after every browser
    /// (re)start, so no job pays for opening one while the agent has time to spare.
    pub fn keep_warm(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let mut state = self.browser.supervisor().watch();
        tokio::spawn(async move {
            loop {
                let ready = matches!(*state.borrow_and_update(), BrowserState::Ready { .. });
                if ready {
                    let Some(me) = me.upgrade() else { return };
                    if let Ok(cdp) = me.browser.cdp(BROWSER_WAIT).await {
                        me.pool.refill(&cdp, me.ctx.guard.as_ref());
                    }
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Whether a browser context is open (or opening) for the next job.
    pub fn has_spare(&self) -> bool {
        self.pool.has_spare()
    }

    /// How many cold runs have started on a context opened ahead.
    pub fn spares_taken(&self) -> u64 {
        self.pool.taken()
    }

    /// Jobs running or waiting.
    pub fn active(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Serves one connection: reads a job, answers busy or runs it and streams events.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
        self: &Arc<Self>,
        stream: S,
    ) -> Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let body = read_request(&mut rd).await?;
        let req: JobRequest = match wire::decode(&body) {
            Ok(r) => r,
            Err(e) => return reject(&mut wr, e.to_string()).await,
        };
        if let Err(e) = req.job.validate() {
            return reject(&mut wr, e.to_string()).await;
        }
        if let Err(e) = check_start(req.start_at_unix_ms, unix_ms()) {
            return reject(&mut wr, e).await;
        }
        // admit atomically, or refuse: never more than capacity + queue at once
        let limit = self.capacity + self.queue;
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            });
        let Ok(ahead) = admitted else {
            let busy = JobEvent::Busy {
                running: self.capacity,
                queued: self.queue,
            };
            return send(&mut wr, &busy).await;
        };
        let _slot = Admitted(self);
        let queued = JobEvent::Queued {
            position: ahead.saturating_sub(
                self.capacity - self.running.available_permits().min(self.capacity),
            ),
        };
        // from here on one writer owns the stream, so a heartbeat never lands inside a frame
        let (out, frames) = mpsc::channel(8);
        out.send(wire::encode(&queued))
            .await
            .expect("the writer's receiver is alive");
        let writer = write_frames(wr, frames);
        let job = self.run_admitted(req, rd, out);
        tokio::pin!(writer, job);
        tokio::select! {
            w = &mut writer => {
                // the writer only stops early when the client is gone; dropping the job cancels it
                if let Err(e) = w {
                    tracing::info!(error = %format!("{e:#}"), "client went away; job cancelled");
                }
                Ok(())
            }
            j = &mut job => {
                j?;
                // the final frame is queued; the writer ends once it is written
                writer.await
            }
        }
    }

    /// Runs an admitted job, sending its events and final frame to `out`. Returns early when the
    /// client hangs up.
    async fn run_admitted<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        req: JobRequest,
        mut rd: R,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Result<()> {
        // the client hanging up (EOF or error on its half) cancels the job
        let gone = async move {
            let mut b = [0u8; 1];
            let _ = rd.read(&mut b).await;
        };
        tokio::pin!(gone);
        let started_unix_ms = unix_ms();
        let mut cancel = self.cancel.subscribe();
        let cancelled = async move {
            let _ = cancel.wait_for(|c| *c).await;
        };
        tokio::pin!(cancelled);
        let send_cancelled = |out: mpsc::Sender<Vec<u8>>, ctx: &RunContext| {
            let report = cancelled_report(&req.job, ctx, started_unix_ms);
            async move {
                tracing::info!("job cancelled: the agent is shutting down");
                let _ = out.send(report_frame(report, wire::MAX_FRAME)).await;
                Ok(())
            }
        };
        let permit = tokio::select! {
            p = self.running.clone().acquire_owned() => p.context("job server stopped")?,
            _ = &mut gone => return Ok(()),
            _ = &mut cancelled => return send_cancelled(out, &self.ctx).await,
        };
        let sup = self.browser.supervisor();
        let (cdp, lease) = loop {
            let cdp = tokio::select! {
                c = self.browser.cdp(BROWSER_WAIT) => c,
                _ = &mut gone => return Ok(()),
                _ = &mut cancelled => return send_cancelled(out, &self.ctx).await,
            };
            let cdp = match cdp {
                Ok(c) => c,
                Err(e) => {
                    let error = format!("no browser available on this agent: {e:#}");
                    let _ = out.send(wire::encode(&JobEvent::Rejected { error })).await;
                    return Ok(());
                }
            };
            // leased while still ready: a recycle decided from now on waits for this job
            let lease = sup.lease();
            if matches!(sup.state(), BrowserState::Ready { .. }) && !cdp.is_closed() {
                break (cdp, lease);
            }
        };
        let mut ctx = self.ctx.clone();
        if let BrowserState::Ready { version, .. } = sup.state() {
            ctx.browser_version = version;
        }
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let job = run_job_at(&cdp, &req.job, &ctx, &self.pool, &ptx, req.start_at_unix_ms);
        tokio::pin!(job);
        let report = loop {
            tokio::select! {
                r = &mut job => break r,
                Some(e) = prx.recv() => {
                    if out.send(wire::encode(&e)).await.is_err() {
                        return Ok(());
                    }
                }
                _ = &mut gone => {
                    tracing::info!("client went away; job cancelled");
                    return Ok(());
                }
                _ = &mut cancelled => {
                    drop(lease);
                    return send_cancelled(out, &ctx).await;
                }
            }
        };
        // the last run's events may still be queued when the job's future completes
        while let Ok(e) = prx.try_recv() {
            if out.send(wire::encode(&e)).await.is_err() {
                return Ok(());
            }
        }
        drop(lease);
        (self.on_done)();
        // open the next job's context now, before a queued job takes the slot, unless this job
        // just sent the browser off to be recycled, or another job is loading a page whose
        // timings a renderer starting up next to it would disturb
        let alone = self.running.available_permits() + 1 == self.capacity;
        if alone && !cdp.is_closed() && matches!(sup.state(), BrowserState::Ready { .. }) {
            self.pool.refill(&cdp, self.ctx.guard.as_ref());
        }
        drop(permit);
        // encoding a report with screenshots takes a while: off the runtime, so the writer keeps
        // heartbeating meanwhile
        let frame = tokio::task::spawn_blocking(move || report_frame(report, wire::MAX_FRAME))
            .await
            .context("preparing the report frame")?;
        let _ = out.send(frame).await;
        Ok(())
    }
}

/// The error of every run of a job the agent cancelled.
pub const CANCELLED: &str = "cancelled: the agent is shutting down";

/// The report of a job cancelled before it finished: its runs are lost with the browser, so it
/// says so in one run carrying [`CANCELLED`].
fn cancelled_report(spec: &JobSpec, ctx: &RunContext, started_unix_ms: u64) -> Report {
    let run = Run {
        index: 1,
        url: spec.url.clone(),
        started_unix_ms,
        error: Some(CANCELLED.into()),
        ..Run::default()
    };
    ctx.report(spec, started_unix_ms, String::new(), vec![run], None)
}

/// Reads one job request, bounded in time and size.
async fn read_request<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Vec<u8>> {
    // a client that connects and never sends its request must not hold a stream forever
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let len = wire::check_len(rd.read_u32().await.context("reading the job request")?)?;
        if len > MAX_REQUEST {
            anyhow::bail!("a job request of {len} bytes; the limit is {MAX_REQUEST} bytes");
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await?;
        anyhow::Ok(body)
    })
    .await
    .with_context(|| format!("no job request within {REQUEST_TIMEOUT:?}"))?
}

/// Answers a connection the job API will not serve (see [`crate::authority`]): its request is
/// read, so the client is not cut off mid-write, and answered with `Rejected`.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: S, error: String) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    read_request(&mut rd).await?;
    reject(&mut wr, error).await
}

async fn reject<W: AsyncWrite + Unpin>(wr: &mut W, error: String) -> Result<()> {
    send(wr, &JobEvent::Rejected { error }).await
}

/// Whether a requested start time is acceptable at `now` (both ms since the Unix epoch).
fn check_start(start_at: Option<u64>, now: u64) -> Result<(), String> {
    match start_at {
        Some(at) if at > now + wire::MAX_START_AHEAD_MS => Err(format!(
            "start_at_unix_ms {at} is {} ms ahead of this agent's clock; accepted is at most {} ms ahead (a time already past starts at once)",
            at - now,
            wire::MAX_START_AHEAD_MS
        )),
        _ => Ok(()),
    }
}

/// Writes `frames` as they come and a heartbeat every [`wire::HEARTBEAT_INTERVAL_MS`], until
/// the sender is dropped and everything is written, or the client stops reading.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let period = std::time::Duration::from_millis(wire::HEARTBEAT_INTERVAL_MS);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // after a long write, one heartbeat now rather than a burst of the missed ones
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = wire::encode(&JobEvent::Heartbeat);
    loop {
        tokio::select! {
            f = frames.recv() => match f {
                Some(f) => send_frame(&mut wr, &f).await?,
                None => return Ok(()),
            },
            _ = beat.tick() => send_frame(&mut wr, &heartbeat).await?,
        }
    }
}

/// Releases an admission slot when the job ends, however it ends.
struct Admitted<'a>(&'a JobServer);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long one event may take to reach a client before it is taken to be gone.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one event. A client that stops reading must not hold its admission slot forever.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, e: &JobEvent) -> Result<()> {
    send_frame(w, &wire::encode(e)).await
}

async fn send_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, async {
        w.write_all(frame).await?;
        w.flush().await
    })
    .await
    .context("the client stopped reading")??;
    Ok(())
}

/// Client side: submits `job` over `stream` to start at once and returns every event until the
/// last one, heartbeats left out.
pub async fn submit<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    job: &vantage_proto::JobSpec,
) -> Result<Vec<JobEvent>> {
    submit_request(stream, &JobRequest::new(job.clone())).await
}

/// [`submit`], starting the first run at `start_at_unix_ms` (see
/// [`JobRequest::start_at_unix_ms`]).
pub async fn submit_at<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    job: &vantage_proto::JobSpec,
    start_at_unix_ms: u64,
) -> Result<Vec<JobEvent>> {
    let req = JobRequest {
        start_at_unix_ms: Some(start_at_unix_ms),
        ..JobRequest::new(job.clone())
    };
    submit_request(stream, &req).await
}

/// Sends `req` and returns every event until the last one, heartbeats left out. An agent that
/// sends nothing for [`wire::SILENCE_LIMIT_MS`] is taken to be dead.
pub async fn submit_request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &JobRequest,
) -> Result<Vec<JobEvent>> {
    stream.write_all(&wire::encode(req)).await?;
    let silence = std::time::Duration::from_millis(wire::SILENCE_LIMIT_MS);
    let mut events = Vec::new();
    loop {
        let len = tokio::time::timeout(silence, stream.read_u32())
            .await
            .with_context(|| {
                format!(
                    "the agent sent nothing for {} ms; taking it to be dead",
                    wire::SILENCE_LIMIT_MS
                )
            })?
            .context("the agent closed the job stream")?;
        let len = wire::check_len(len)?;
        let mut body = vec![0u8; len];
        // a large report may take a while to arrive, but not longer than the agent's own limit
        tokio::time::timeout(SEND_TIMEOUT, stream.read_exact(&mut body))
            .await
            .context("a frame from the agent stalled")??;
        let e: JobEvent = wire::decode(&body)?;
        if matches!(e, JobEvent::Heartbeat) {
            continue;
        }
        let last = matches!(
            e,
            JobEvent::Report { .. } | JobEvent::Busy { .. } | JobEvent::Rejected { .. }
        );
        events.push(e);
        if last {
            return Ok(events);
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
