//! The job API on the overlay: one job per connection, a concurrency limit with a bounded queue
//! and a clear "busy" beyond it, progress streamed as it happens, and cancellation when the client
//! goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use vantage_proto::wire::{self, JobEvent, JobRequest};

use crate::chromium::BrowserLink;
use crate::chromium::BrowserState;
use crate::executor::{report_frame, run_job, RunContext};
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
        })
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
                        me.pool.refill(&cdp);
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
        // a client that connects and never sends its request must not hold a stream forever
        let body = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let len = wire::check_len(rd.read_u32().await.context("reading the job request")?)?;
            if len > MAX_REQUEST {
                anyhow::bail!("a job request of {len} bytes; the limit is {MAX_REQUEST} bytes");
            }
            let mut body = vec![0u8; len];
            rd.read_exact(&mut body).await?;
            anyhow::Ok(body)
        })
        .await
        .with_context(|| format!("no job request within {REQUEST_TIMEOUT:?}"))??;
        let req: JobRequest = match wire::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                return send(
                    &mut wr,
                    &JobEvent::Rejected {
                        error: e.to_string(),
                    },
                )
                .await
            }
        };
        if let Err(e) = req.job.validate() {
            return send(
                &mut wr,
                &JobEvent::Rejected {
                    error: e.to_string(),
                },
            )
            .await;
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
        send(
            &mut wr,
            &JobEvent::Queued {
                position: ahead.saturating_sub(
                    self.capacity - self.running.available_permits().min(self.capacity),
                ),
            },
        )
        .await?;
        // the client hanging up (EOF or error on its half) cancels the job
        let gone = async move {
            let mut b = [0u8; 1];
            let _ = rd.read(&mut b).await;
        };
        tokio::pin!(gone);
        let permit = tokio::select! {
            p = self.running.clone().acquire_owned() => p.context("job server stopped")?,
            _ = &mut gone => return Ok(()),
        };
        let sup = self.browser.supervisor();
        let (cdp, lease) = loop {
            let cdp = match self.browser.cdp(BROWSER_WAIT).await {
                Ok(c) => c,
                Err(e) => {
                    let error = format!("no browser available on this agent: {e:#}");
                    return send(&mut wr, &JobEvent::Rejected { error }).await;
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
        let job = run_job(&cdp, &req.job, &ctx, &self.pool, &ptx);
        tokio::pin!(job);
        let report = loop {
            tokio::select! {
                r = &mut job => break r,
                Some(e) = prx.recv() => {
                    if send(&mut wr, &e).await.is_err() {
                        tracing::info!("client went away; job cancelled");
                        return Ok(());
                    }
                }
                _ = &mut gone => {
                    tracing::info!("client went away; job cancelled");
                    return Ok(());
                }
            }
        };
        drop(lease);
        (self.on_done)();
        // open the next job's context now, before a queued job takes the slot, unless this job
        // just sent the browser off to be recycled, or another job is loading a page whose
        // timings a renderer starting up next to it would disturb
        let alone = self.running.available_permits() + 1 == self.capacity;
        if alone && !cdp.is_closed() && matches!(sup.state(), BrowserState::Ready { .. }) {
            self.pool.refill(&cdp);
        }
        drop(permit);
        send_frame(&mut wr, &report_frame(report, wire::MAX_FRAME)).await
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

/// Client side: submits `job` over `stream` and returns every event until the last one.
pub async fn submit<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    job: &vantage_proto::JobSpec,
) -> Result<Vec<JobEvent>> {
    stream
        .write_all(&wire::encode(&JobRequest { job: job.clone() }))
        .await?;
    let mut events = Vec::new();
    loop {
        let len = wire::check_len(
            stream
                .read_u32()
                .await
                .context("the agent closed the job stream")?,
        )?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        let e: JobEvent = wire::decode(&body)?;
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
