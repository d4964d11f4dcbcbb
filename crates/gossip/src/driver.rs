//! The tokio driver: one task owns a [`Gossip`] core and does its IO over a [`Transport`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::transport::Transport;
use crate::{Config, Event, Gossip, GossipError, Member, StreamRequest, Tags};

/// Largest push-pull message accepted from a stream, in bytes.
const MAX_STREAM: usize = 8 << 20;
/// How long one push-pull exchange may take, connect included.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving node keeps gossiping its departure.
const LEAVE_DRAIN: Duration = Duration::from_secs(3);

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Gossip(#[from] GossipError),
    #[error("could not join any of {0} seeds: {1}")]
    Join(usize, String),
    #[error("gossip node has stopped")]
    Stopped,
}

enum Input {
    Join(Vec<SocketAddr>, oneshot::Sender<Result<usize, DriverError>>),
    Leave(oneshot::Sender<()>),
    SetTags(Tags, oneshot::Sender<Result<(), GossipError>>),
    UserEvent(String, Vec<u8>, oneshot::Sender<Result<u64, GossipError>>),
    Members(oneshot::Sender<Vec<Member>>),
    EstimateRtt(String, String, oneshot::Sender<Option<Duration>>),
    Coordinates(oneshot::Sender<crate::core::Coordinates>),
    Datagram(SocketAddr, Vec<u8>),
    Incoming(SocketAddr, Vec<u8>, oneshot::Sender<Vec<u8>>),
    Reply {
        from: SocketAddr,
        data: Vec<u8>,
        join: Option<u64>,
    },
    Failed {
        to: SocketAddr,
        error: String,
        join: Option<u64>,
    },
}

/// A handle to a running gossip node.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
}

/// What the driver counts while it runs.
#[derive(Debug, Default)]
struct Counters {
    /// Datagrams dropped because the transport's send queue was full.
    send_dropped: AtomicU64,
}

/// Hands one datagram to the transport without waiting: a full queue drops it and counts it, as
/// a congested router would, so the core never stalls behind the network.
fn send<T: Transport>(transport: &T, t: &crate::Transmit, counters: &Counters) {
    match transport.try_send_to(&t.data, t.to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            counters.send_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(to = %t.to, error = %e, "gossip send failed"),
    }
}

struct JoinState {
    remaining: usize,
    ok: usize,
    errors: Vec<String>,
    reply: oneshot::Sender<Result<usize, DriverError>>,
}

/// Starts the driver. Events go to `events`; the node runs until [`GossipHandle::leave`] or until
/// every handle is dropped.
pub fn spawn<T: Transport>(
    config: Config,
    name: &str,
    tags: &Tags,
    transport: T,
    seed: u64,
    events: mpsc::UnboundedSender<Event>,
) -> Result<GossipHandle, GossipError> {
    let core = Gossip::new(
        config,
        name,
        transport.local_addr(),
        tags,
        seed,
        Instant::now(),
    )?;
    let transport = Arc::new(transport);
    let (tx, rx) = mpsc::channel(1024);
    let recv = tokio::spawn(receive_loop(transport.clone(), tx.clone()));
    let accept = tokio::spawn(accept_loop(transport.clone(), tx.clone()));
    let weak = tx.downgrade();
    let counters = Arc::new(Counters::default());
    let owned = counters.clone();
    tokio::spawn(async move {
        run(core, transport, rx, weak, events, owned).await;
        recv.abort();
        accept.abort();
    });
    Ok(GossipHandle { tx, counters })
}

impl GossipHandle {
    async fn call<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Input,
    ) -> Result<R, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Datagrams dropped so far because the transport's send queue was full.
    pub fn send_dropped(&self) -> u64 {
        self.counters.send_dropped.load(Ordering::Relaxed)
    }

    /// Exchanges state with each seed; succeeds if at least one answered.
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<usize, DriverError> {
        self.call(|tx| Input::Join(seeds, tx)).await?
    }

    /// Announces departure, gossips it for a moment, and stops the node.
    pub async fn leave(&self) -> Result<(), DriverError> {
        self.call(Input::Leave).await
    }

    pub async fn set_tags(&self, tags: Tags) -> Result<(), DriverError> {
        Ok(self.call(|tx| Input::SetTags(tags, tx)).await??)
    }

    pub async fn user_event(&self, name: &str, payload: Vec<u8>) -> Result<u64, DriverError> {
        Ok(self
            .call(|tx| Input::UserEvent(name.to_owned(), payload, tx))
            .await??)
    }

    pub async fn members(&self) -> Result<Vec<Member>, DriverError> {
        self.call(Input::Members).await
    }

    /// This node's Vivaldi coordinate and the last one each other member sent.
    pub async fn coordinates(&self) -> Result<crate::core::Coordinates, DriverError> {
        self.call(Input::Coordinates).await
    }

    /// Estimated RTT between two members from their Vivaldi coordinates.
    pub async fn estimate_rtt(&self, a: &str, b: &str) -> Result<Option<Duration>, DriverError> {
        self.call(|tx| Input::EstimateRtt(a.to_owned(), b.to_owned(), tx))
            .await
    }
}

async fn receive_loop<T: Transport>(t: Arc<T>, tx: mpsc::Sender<Input>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match t.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if tx
                    .send(Input::Datagram(from, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if closed(&e) => return,
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// After an error that is not a closed transport, the loops pause this long, so a transport
/// that fails at once every time cannot spin a core.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A transport whose node has shut down answers every call at once with this: the loops end.
fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotConnected | std::io::ErrorKind::BrokenPipe
    )
}

async fn accept_loop<T: Transport>(t: Arc<T>, tx: mpsc::Sender<Input>) {
    loop {
        let (mut s, from) = match t.accept().await {
            Ok(a) => a,
            Err(e) if closed(&e) => return,
            Err(e) => {
                tracing::debug!(error = %e, "gossip accept failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(STREAM_TIMEOUT, async {
                let req = read_frame(&mut s).await?;
                let (rtx, rrx) = oneshot::channel();
                tx.send(Input::Incoming(from, req, rtx))
                    .await
                    .map_err(|_| std::io::Error::other("stopped"))?;
                let reply = rrx
                    .await
                    .map_err(|_| std::io::Error::other("request rejected"))?;
                write_frame(&mut s, &reply).await
            })
            .await;
            if let Ok(Err(e)) | Err(e) = served.map_err(std::io::Error::from) {
                tracing::debug!(%from, error = %e, "push-pull from peer failed");
            }
        });
    }
}

async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    if len > MAX_STREAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("push-pull of {len} bytes is over the {MAX_STREAM} byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
) -> std::io::Result<()> {
    s.write_u32(data.len() as u32).await?;
    s.write_all(data).await?;
    s.flush().await
}

async fn exchange<T: Transport>(t: &T, req: &StreamRequest) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut s = t.connect(req.to).await?;
        write_frame(&mut s, &req.data).await?;
        read_frame(&mut s).await
    })
    .await?
}

async fn run<T: Transport>(
    mut core: Gossip,
    transport: Arc<T>,
    mut rx: mpsc::Receiver<Input>,
    tx: mpsc::WeakSender<Input>,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
) {
    let mut joins: HashMap<u64, JoinState> = HashMap::new();
    let mut next_join = 0u64;
    let mut leaving: Option<(Instant, oneshot::Sender<()>)> = None;
    loop {
        let mut join_id = None;
        // flush what the core produced
        while let Some(t) = core.poll_transmit() {
            send(&*transport, &t, &counters);
        }
        while let Some(req) = core.poll_stream() {
            let Some(tx) = tx.upgrade() else { return };
            let transport = transport.clone();
            let join = if req.join {
                joins.keys().max().copied()
            } else {
                None
            };
            tokio::spawn(async move {
                let input = match exchange(&*transport, &req).await {
                    Ok(data) => Input::Reply {
                        from: req.to,
                        data,
                        join,
                    },
                    Err(e) => Input::Failed {
                        to: req.to,
                        error: e.to_string(),
                        join,
                    },
                };
                let _ = tx.send(input).await;
            });
        }
        while let Some(e) = core.poll_event() {
            let _ = events.send(e);
        }
        if let Some((until, _)) = &leaving {
            if core.pending_broadcasts() == 0 || Instant::now() >= *until {
                let (_, reply) = leaving.take().expect("checked");
                let _ = reply.send(());
                return;
            }
        }
        let deadline = core.poll_timeout();
        let input = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => i,
                None => return,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                core.handle_timeout(Instant::now());
                continue;
            }
        };
        let now = Instant::now();
        match input {
            Input::Datagram(from, data) => {
                if let Err(e) = core.handle_datagram(now, from, &data) {
                    tracing::debug!(%from, error = %e, "bad gossip datagram");
                }
            }
            Input::Incoming(from, data, reply) => match core.handle_stream(now, from, &data) {
                Ok(r) => {
                    let _ = reply.send(r);
                }
                Err(e) => tracing::debug!(%from, error = %e, "bad push-pull"),
            },
            Input::Reply { from, data, join } => {
                let res = core.handle_stream_reply(now, from, &data);
                if let Some(j) = join.and_then(|id| joins.get_mut(&id)) {
                    match res {
                        Ok(()) => j.ok += 1,
                        Err(e) => j.errors.push(format!("{from}: {e}")),
                    }
                    j.remaining -= 1;
                }
                join_id = join;
            }
            Input::Failed { to, error, join } => {
                tracing::debug!(%to, %error, "push-pull failed");
                if let Some(j) = join.and_then(|id| joins.get_mut(&id)) {
                    j.errors.push(format!("{to}: {error}"));
                    j.remaining -= 1;
                }
                join_id = join;
            }
            Input::Join(seeds, reply) => {
                if seeds.is_empty() {
                    let _ = reply.send(Ok(0));
                    continue;
                }
                next_join += 1;
                joins.insert(
                    next_join,
                    JoinState {
                        remaining: seeds.len(),
                        ok: 0,
                        errors: Vec::new(),
                        reply,
                    },
                );
                core.join(&seeds);
            }
            Input::Leave(reply) => {
                core.leave(now);
                leaving = Some((now + LEAVE_DRAIN, reply));
            }
            Input::SetTags(tags, reply) => {
                let _ = reply.send(core.set_tags(now, &tags));
            }
            Input::UserEvent(name, payload, reply) => {
                let _ = reply.send(core.user_event(&name, &payload));
            }
            Input::Members(reply) => {
                let _ = reply.send(core.members().cloned().collect());
            }
            Input::Coordinates(reply) => {
                let _ = reply.send(core.coordinates());
            }
            Input::EstimateRtt(a, b, reply) => {
                let _ = reply.send(core.estimate_rtt(&a, &b));
            }
        }
        if let Some(id) = join_id {
            if joins.get(&id).is_some_and(|j| j.remaining == 0) {
                let j = joins.remove(&id).expect("present");
                let n = j.errors.len() + j.ok;
                let res = if j.ok > 0 {
                    Ok(j.ok)
                } else {
                    Err(DriverError::Join(n, j.errors.join("; ")))
                };
                let _ = j.reply.send(res);
            }
        }
    }
}
