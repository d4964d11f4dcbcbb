//! The one task that owns a node: underlay socket, WireGuard sessions and the smoltcp stack.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::addr::OverlayPrefix;
use crate::device::{self, Out, Underlay, Wire};
use crate::keys::PublicKey;
use crate::lookup::{self, LookupMsg, TokenBucket};
use crate::node::{Command, Node, NodeConfig, NodeInfo};
use crate::peers::{Admission, Peer, Peers};
use crate::tcp::{self as tcpx, SharedListener, SharedStream, TcpStream, Wake};
use crate::udp::SharedUdp;
use crate::wg::{self, Decap, Identity, Initiator, Kind, Screened, Tick};
use crate::{Counters, MeshError};

const TICK: Duration = Duration::from_millis(250);
/// Underlay datagrams handled before the stack is polled again.
const RECV_BATCH: usize = 128;
/// Listening sockets kept ready per port. smoltcp has no SYN queue: a SYN that finds no socket
/// in LISTEN is reset, and one batch of underlay datagrams can carry several browsers' six
/// connections at once. Their buffers are zeroed allocations the kernel maps lazily, so a ready
/// socket costs address space, not memory.
const BACKLOG: usize = 32;
/// Handshakes in progress per port beyond which no socket is made ready (a SYN flood from a peer
/// is then reset instead of growing the socket set).
const HALF_OPEN: usize = 64;
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

pub(crate) fn spawn(config: NodeConfig, socket: std::net::UdpSocket) -> Result<Node, MeshError> {
    config.validate()?;
    socket.set_nonblocking(true).map_err(MeshError::Io)?;
    set_buffers(&socket, config.socket_buffer);
    let local = socket.local_addr().map_err(MeshError::Io)?;
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(MeshError::Io)?;
    let public_key = config.private_key.public_key();
    let prefix = OverlayPrefix::from_psk(&config.psk);
    let overlay = prefix.address_of(&public_key);
    let advertise = config.advertise.unwrap_or(local);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let info = Arc::new(NodeInfo {
        public_key,
        overlay,
        prefix,
        advertise,
        local: Mutex::new(local),
        stop: Notify::new(),
        done: done_rx,
    });
    let driver = Driver::new(config, socket, local, info.clone(), cmd_rx);
    tokio::spawn(async move {
        driver.run().await;
        let _ = done_tx.send(true);
    });
    Ok(Node { cmd: cmd_tx, info })
}

/// Large socket buffers absorb bursts while the single driver task is busy encrypting.
fn set_buffers(socket: &impl std::os::fd::AsFd, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
}

fn smol_now(start: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(start).as_micros() as i64)
}

struct StreamEntry {
    shared: SharedStream,
    fin_sent: bool,
    established: bool,
    connect: Option<PendingConnect>,
}

struct PendingConnect {
    reply: oneshot::Sender<Result<TcpStream, MeshError>>,
    deadline: Instant,
    peer: u32,
    addr: SocketAddrV6,
    local: SocketAddrV6,
}

struct ListenerEntry {
    shared: SharedListener,
    port: u16,
    sockets: Vec<SocketHandle>,
}

struct PendingLookup {
    nonce: [u8; 24],
    addr: SocketAddr,
    deadline: Instant,
    after: Duration,
    next_send: Instant,
    reply: oneshot::Sender<Result<PublicKey, MeshError>>,
}

struct Driver {
    cfg: NodeConfig,
    ident: Identity,
    info: Arc<NodeInfo>,
    underlay: Underlay,
    peers: Peers,
    iface: Interface,
    sockets: SocketSet<'static>,
    start: Instant,
    rx: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    inner_buf: Vec<u8>,
    enc_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    streams: HashMap<SocketHandle, StreamEntry>,
    listeners: HashMap<u16, ListenerEntry>,
    udps: HashMap<SocketHandle, (SharedUdp, u16)>,
    lookups: Vec<PendingLookup>,
    admission: TokenBucket,
    lookup_bucket: TokenBucket,
    initiations: TokenBucket,
    counters: Counters,
    wake: Wake,
    cmd_rx: mpsc::Receiver<Command>,
    rng: u64,
    next_port: u16,
    ticks: u64,
}

impl Driver {
    fn new(
        cfg: NodeConfig,
        socket: tokio::net::UdpSocket,
        local: SocketAddr,
        info: Arc<NodeInfo>,
        cmd_rx: mpsc::Receiver<Command>,
    ) -> Self {
        let start = Instant::now();
        let mut iface_cfg = Config::new(HardwareAddress::Ip);
        iface_cfg.random_seed = cfg.seed;
        let mut probe = device::Probe;
        let mut iface = Interface::new(iface_cfg, &mut probe, smol_now(start, start));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(
                IpAddress::Ipv6(info.overlay),
                crate::PREFIX_LEN,
            ));
        });
        let ident = Identity::new(
            cfg.private_key.clone(),
            cfg.psk.clone(),
            cfg.handshakes_per_second,
        );
        let admission = TokenBucket::new(cfg.admission.per_second, cfg.admission.burst);
        let lookup_bucket = TokenBucket::new(cfg.lookups_per_second, cfg.lookups_per_second * 2);
        let initiation_budget =
            u32::try_from(cfg.handshakes_per_second.saturating_mul(10)).unwrap_or(u32::MAX);
        let rng = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut d = Self {
            ident,
            peers: Peers::new(0),
            underlay: Underlay {
                socket,
                v6: local.is_ipv6(),
            },
            iface,
            sockets: SocketSet::new(Vec::new()),
            start,
            rx: VecDeque::new(),
            pool: Vec::new(),
            inner_buf: vec![0; wg::SCRATCH_LEN],
            enc_buf: vec![0; wg::SCRATCH_LEN],
            recv_buf: vec![0; 65536],
            streams: HashMap::new(),
            listeners: HashMap::new(),
            udps: HashMap::new(),
            lookups: Vec::new(),
            admission,
            lookup_bucket,
            initiations: TokenBucket::new(initiation_budget, initiation_budget * 2),
            counters: Counters::default(),
            wake: Arc::new(Notify::new()),
            cmd_rx,
            rng,
            next_port: *EPHEMERAL.start(),
            ticks: 0,
            info,
            cfg,
        };
        let first = d.random() as u32;
        d.peers = Peers::new(first);
        d.next_port = *EPHEMERAL.start() + (d.random() % 16384) as u16;
        d
    }

    /// splitmix64 over the configured seed: nonces and ports need uniqueness, not secrecy.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    async fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let mut progress = false;
            loop {
                match self.cmd_rx.try_recv() {
                    Ok(cmd) => {
                        self.command(cmd, now);
                        progress = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.close_all(),
                }
            }
            progress |= self.receive_batch(now);
            self.service_handles();
            self.poll_stack(now);
            progress |= self.service_handles();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if progress {
                // let handle tasks run before taking more work (matters on a current-thread runtime)
                tokio::task::yield_now().await;
                continue;
            }
            let smol = self
                .iface
                .poll_delay(smol_now(self.start, now), &self.sockets);
            let mut deadline = next_tick;
            if let Some(d) = smol {
                deadline = deadline.min(now + Duration::from_micros(d.total_micros()));
            }
            tokio::select! {
                biased;
                _ = self.info.stop.notified() => return self.close_all(),
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd, Instant::now()),
                    None => return self.close_all(),
                },
                _ = self.underlay.socket.readable() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Runs the stack over the received inner packets one at a time, with egress after each one
    /// that carries TCP data. smoltcp grows a sender's congestion window by at most one segment
    /// per ACK and emits ACKs only on egress: a single egress after a whole batch would answer a
    /// window's worth of segments with one ACK, and slow start would gain one segment per round
    /// trip instead of doubling. Egress after each data segment lets the receiver ACK every
    /// second segment (RFC 9293).
    fn poll_stack(&mut self, now: Instant) {
        let ts = smol_now(self.start, now);
        let mut wire = Wire {
            rx: &mut self.rx,
            pool: &mut self.pool,
            out: Out {
                peers: &mut self.peers,
                underlay: &self.underlay,
                inner: &mut self.inner_buf,
                enc: &mut self.enc_buf,
                counters: &mut self.counters,
            },
        };
        while let Some(front) = wire.rx.front() {
            let wants_ack = device::carries_tcp_data(front);
            self.iface
                .poll_ingress_single(ts, &mut wire, &mut self.sockets);
            // a pure ACK makes no reply: the sender's burst goes out once, after the batch
            if wants_ack {
                while self.iface.poll_egress(ts, &mut wire, &mut self.sockets) != PollResult::None {
                }
            }
        }
        // maintenance and the timers' egress
        self.iface.poll(ts, &mut wire, &mut self.sockets);
    }

    fn receive_batch(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..RECV_BATCH {
            let mut buf = std::mem::take(&mut self.recv_buf);
            let got = self.underlay.socket.try_recv_from(&mut buf);
            let done = match got {
                Ok((n, src)) => {
                    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
                    self.datagram(src, &buf[..n], now);
                    any = true;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) => {
                    // ICMP errors surface here on Linux (ECONNREFUSED); they say nothing about us
                    tracing::trace!(error = %e, "underlay receive error");
                    false
                }
            };
            self.recv_buf = buf;
            if done {
                break;
            }
        }
        any
    }

    fn datagram(&mut self, src: SocketAddr, data: &[u8], now: Instant) {
        match wg::classify(data) {
            Kind::Lookup => self.lookup_datagram(src, data, now),
            Kind::Junk => self.counters.junk += 1,
            Kind::Response(index) => {
                if self.peers.get(index).is_none() {
                    self.counters.rejected += 1;
                    return;
                }
                match self.ident.screen(src, data, &mut self.enc_buf) {
                    Screened::Pass(_) => self.decapsulate(index, src, data, now),
                    Screened::CookieReply(cookie) => {
                        self.counters.cookies_sent += 1;
                        self.underlay.send(cookie, src, &mut self.counters);
                    }
                    Screened::Rejected(e) => {
                        tracing::trace!(%src, error = ?e, "rejected handshake response");
                        self.counters.rejected += 1;
                    }
                }
            }
            Kind::ForIndex(index) => {
                if self.peers.get(index).is_some() {
                    self.decapsulate(index, src, data, now);
                } else {
                    self.counters.rejected += 1;
                }
            }
            Kind::Initiation => {
                // past this budget an initiation costs nothing but the receive: under a flood the
                // cookie machinery itself would starve the established peers
                if !self.initiations.try_take(now) {
                    self.counters.shed += 1;
                    return;
                }
                let key = match self.ident.identify(src, data, &mut self.enc_buf) {
                    Initiator::Known(key) => key,
                    Initiator::CookieReply(cookie) => {
                        self.counters.cookies_sent += 1;
                        self.underlay.send(cookie, src, &mut self.counters);
                        return;
                    }
                    Initiator::Rejected(e) => {
                        tracing::trace!(%src, error = ?e, "rejected handshake initiation");
                        self.counters.rejected += 1;
                        return;
                    }
                };
                let index = match self.peers.index_of(&key) {
                    Some(i) => i,
                    None => match self.admit(key, src, now) {
                        Some(i) => i,
                        None => return,
                    },
                };
                self.decapsulate(index, src, data, now);
            }
        }
    }

    /// Just-in-time admission of an initiator we have not met: capped, rate-limited, on probation.
    fn admit(&mut self, key: PublicKey, src: SocketAddr, now: Instant) -> Option<u32> {
        let cfg = &self.cfg.admission;
        if !cfg.enabled
            || key == self.info.public_key
            || self.peers.is_blocked(&key)
            || self.peers.pending() >= cfg.max_pending
            || !self.admission.try_take(now)
        {
            self.counters.admission_refused += 1;
            return None;
        }
        let index = self.peers.fresh_index();
        let peer = Peer::new(
            key,
            self.info.prefix.address_of(&key),
            Some(src),
            self.ident.session(&key, index),
            Admission::Pending {
                deadline: now + cfg.timeout,
            },
        );
        self.peers.insert(index, peer);
        self.counters.admitted += 1;
        tracing::debug!(peer = %key.short(), %src, "admitted unknown initiator on probation");
        Some(index)
    }

    /// Hands a datagram to its peer's session. Only what the session authenticated moves the
    /// peer's endpoint or confirms a probationary peer.
    fn decapsulate(&mut self, index: u32, src: SocketAddr, data: &[u8], now: Instant) {
        let Some(peer) = self.peers.get_mut(index) else {
            return;
        };
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(wg::SCRATCH_LEN, 0);
        let mut inner = None;
        let decap = peer.session.decapsulate(src.ip(), data, &mut buf);
        let authentic = decap.authenticated();
        let is_data = matches!(decap, Decap::Tunnel(..) | Decap::Keepalive);
        match decap {
            Decap::Network(reply) => {
                peer.handshakes += 1;
                self.underlay.send(reply, src, &mut self.counters);
                while let Some(queued) = peer.session.flush(&mut self.enc_buf) {
                    self.underlay.send(queued, src, &mut self.counters);
                }
            }
            Decap::Cookie(reply) => {
                self.counters.cookies_sent += 1;
                self.underlay.send(reply, src, &mut self.counters);
            }
            Decap::Tunnel(packet, from) => {
                let to = (packet.len() >= 40).then(|| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&packet[24..40]);
                    std::net::Ipv6Addr::from(a)
                });
                if from != peer.overlay || to != Some(self.info.overlay) {
                    self.counters.spoofed += 1;
                } else {
                    inner = Some(packet.len());
                }
            }
            Decap::Keepalive | Decap::Done => {}
            Decap::Failed(e) => {
                tracing::trace!(peer = %peer.key.short(), error = ?e, "rejected datagram");
                self.counters.rejected += 1;
            }
        }
        if authentic {
            if let Some(from) = peer.heard_from(src, now) {
                tracing::debug!(peer = %peer.key.short(), ?from, to = %src, "peer roamed");
            }
        }
        match inner {
            Some(len) => {
                buf.truncate(len);
                self.rx.push_back(buf);
            }
            None => self.pool.push(buf),
        }
        // a data packet on a session proves the initiator derived the keys, PSK included
        if is_data && self.peers.confirm(index) {
            tracing::debug!("probationary peer confirmed");
        }
    }

    fn lookup_datagram(&mut self, src: SocketAddr, data: &[u8], now: Instant) {
        match lookup::parse(data) {
            Some(LookupMsg::Request { nonce }) => {
                if self.lookup_bucket.try_take(now) {
                    self.counters.lookups_answered += 1;
                    let reply = lookup::encode_reply(nonce, &self.info.public_key);
                    self.underlay.send(&reply, src, &mut self.counters);
                } else {
                    self.counters.lookups_refused += 1;
                }
            }
            Some(LookupMsg::Reply { nonce, key }) => {
                if let Some(i) = self
                    .lookups
                    .iter()
                    .position(|l| l.nonce == nonce && l.addr == src)
                {
                    let l = self.lookups.swap_remove(i);
                    let _ = l.reply.send(Ok(key));
                }
            }
            None => self.counters.junk += 1,
        }
    }

    fn tick(&mut self, now: Instant) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(4) {
            self.ident.reset_rate_limiter();
        }
        let mut expired = Vec::new();
        for peer in self.peers.iter_mut() {
            match peer.session.tick(&mut self.enc_buf) {
                Tick::Network(d) => {
                    if let Some(ep) = peer.endpoint {
                        self.underlay.send(d, ep, &mut self.counters);
                    }
                }
                Tick::Expired if peer.admission != Admission::Configured => expired.push(peer.key),
                _ => {}
            }
            if let (true, Some(ep)) = (peer.keepalive_due(now), peer.endpoint) {
                if let Some(d) = peer.session.keepalive(&mut self.enc_buf) {
                    self.underlay.send(d, ep, &mut self.counters);
                }
            }
        }
        expired.extend(self.peers.overdue(now));
        for key in expired {
            if self.peers.remove(&key, false).is_some() {
                self.counters.admission_expired += 1;
                tracing::debug!(peer = %key.short(), "probationary peer dropped: never completed");
            }
        }
        self.expire_lookups(now);
        self.expire_connects(now);
    }

    fn expire_lookups(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.lookups.len() {
            if self.lookups[i].deadline <= now {
                let l = self.lookups.swap_remove(i);
                let _ = l.reply.send(Err(MeshError::LookupTimeout {
                    addr: l.addr,
                    after: l.after,
                }));
                continue;
            }
            if self.lookups[i].next_send <= now {
                self.lookups[i].next_send = now + lookup::LOOKUP_RETRY;
                let req = lookup::encode_request(self.lookups[i].nonce);
                let addr = self.lookups[i].addr;
                self.underlay.send(&req, addr, &mut self.counters);
            }
            i += 1;
        }
    }

    fn expire_connects(&mut self, now: Instant) {
        let overdue: Vec<SocketHandle> = self
            .streams
            .iter()
            .filter(|(_, s)| s.connect.as_ref().is_some_and(|c| c.deadline <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in overdue {
            let Some(mut entry) = self.streams.remove(&h) else {
                continue;
            };
            self.sockets.get_mut::<tcp::Socket<'_>>(h).abort();
            self.sockets.remove(h);
            let c = entry.connect.take().expect("filtered on connect");
            let after = self.cfg.connect_timeout;
            let err = match self.peers.get(c.peer) {
                Some(p) if p.session.since_handshake().is_none() => MeshError::HandshakeTimeout {
                    peer: p.key.to_base64(),
                    endpoint: p.endpoint.unwrap_or(self.info.advertise),
                    after,
                },
                _ => MeshError::ConnectTimeout {
                    addr: c.addr,
                    after,
                },
            };
            let _ = c.reply.send(Err(err));
        }
    }

    fn close_all(&mut self) {
        for (_, s) in self.streams.drain() {
            tcpx::lock(&s.shared).fail(io::ErrorKind::NotConnected, "mesh node has shut down");
        }
        for (_, l) in self.listeners.drain() {
            let mut st = l.shared.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
        for (_, (u, _)) in self.udps.drain() {
            let mut st = u.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            if let Some(w) = st.reader.take() {
                w.wake();
            }
            if let Some(w) = st.writer.take() {
                w.wake();
            }
        }
    }
}

mod commands;
mod handles;
