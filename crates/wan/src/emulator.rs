//! The UDP relay: one socket per attached node, one delivery task with a timer heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::matrix::Matrix;

/// Link behaviour beyond the matrix.
#[derive(Debug, Clone)]
pub struct WanConfig {
    /// Uniform jitter added to each one-way delay: a value in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a datagram is lost, 0.0–1.0.
    pub loss: f64,
    /// Round-trip time between two nodes in the same region (the matrix diagonal is 0).
    pub same_region_rtt: Duration,
    /// Seeds loss and jitter, so runs reproduce.
    pub seed: u64,
}

impl Default for WanConfig {
    fn default() -> Self {
        Self {
            jitter: Duration::ZERO,
            loss: 0.0,
            same_region_rtt: Duration::from_micros(500),
            seed: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WanError {
    #[error("unknown region `{region}`; the matrix has: {known}")]
    UnknownRegion { region: String, known: String },
    #[error("a node named `{0}` is already attached")]
    Duplicate(String),
    #[error("no node named `{0}` is attached")]
    UnknownNode(String),
    #[error("loss must be within 0.0–1.0, got {0}")]
    Loss(f64),
    #[error("cannot bind emulator endpoint for `{name}`: {source}")]
    Bind {
        name: String,
        source: std::io::Error,
    },
}

/// Per-direction counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub delivered: u64,
    pub lost: u64,
    pub cut: u64,
    /// Datagrams from an address that is no attached node's real socket.
    pub unknown_source: u64,
}

struct NodeEntry {
    name: String,
    region: usize,
    real: SocketAddr,
    /// The advertised endpoint's socket, for sending (the relay task receives on a clone).
    sender: Arc<std::net::UdpSocket>,
    advertised: SocketAddr,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeEntry>,
    by_real: HashMap<SocketAddr, usize>,
    cut: HashSet<(usize, usize)>,
}

struct Shared {
    matrix: Matrix,
    config: WanConfig,
    state: RwLock<State>,
    stats: Mutex<LinkStats>,
}

struct Due {
    at: Instant,
    seq: u64,
    from: Arc<std::net::UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A running emulator. Dropping it stops all relaying.
pub struct Wan {
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Schedule {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl std::fmt::Debug for Wan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wan")
            .field("regions", &self.shared.matrix.regions().len())
            .finish()
    }
}

impl Wan {
    /// Starts an emulator; must be called inside a tokio runtime.
    pub fn new(matrix: Matrix, config: WanConfig) -> Result<Self, WanError> {
        if !(0.0..=1.0).contains(&config.loss) {
            return Err(WanError::Loss(config.loss));
        }
        let shared = Arc::new(Shared {
            matrix,
            config,
            state: RwLock::default(),
            stats: Mutex::default(),
        });
        let schedule = Arc::new(Schedule::default());
        let s = schedule.clone();
        std::thread::Builder::new()
            .name("wan-deliver".into())
            .spawn(move || deliver(&s))
            .map_err(|source| WanError::Bind {
                name: "delivery thread".into(),
                source,
            })?;
        Ok(Self {
            shared,
            schedule,
            tasks: Vec::new(),
        })
    }

    pub fn matrix(&self) -> &Matrix {
        &self.shared.matrix
    }

    /// Attaches a node in `region` whose real socket is `real`, and returns the endpoint it should
    /// advertise. The emulator endpoint binds the loopback address of `real`'s family.
    pub fn attach(
        &mut self,
        name: &str,
        region: &str,
        real: SocketAddr,
    ) -> Result<SocketAddr, WanError> {
        let bind = if real.is_ipv4() {
            IpAddr::from(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::from(Ipv6Addr::LOCALHOST)
        };
        self.attach_on(name, region, real, bind)
    }

    /// Like [`Wan::attach`], with the emulator endpoint bound on `bind` (port chosen). Binding the
    /// unspecified address serves nodes in other network namespaces over veth links: each sees
    /// the endpoint at this host's address on its own link.
    pub fn attach_on(
        &mut self,
        name: &str,
        region: &str,
        real: SocketAddr,
        bind: IpAddr,
    ) -> Result<SocketAddr, WanError> {
        let region_idx =
            self.shared
                .matrix
                .index(region)
                .ok_or_else(|| WanError::UnknownRegion {
                    region: region.to_owned(),
                    known: self.shared.matrix.regions().join(" "),
                })?;
        let bind = SocketAddr::new(bind, 0);
        let bind_err = |source| WanError::Bind {
            name: name.to_owned(),
            source,
        };
        let std_sock = std::net::UdpSocket::bind(bind)
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(bind_err)?;
        deepen_queue(&std_sock);
        let sender = Arc::new(std_sock.try_clone().map_err(bind_err)?);
        let socket = UdpSocket::from_std(std_sock).map_err(bind_err)?;
        let advertised = socket.local_addr().map_err(bind_err)?;
        let idx = {
            let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            if st.nodes.iter().any(|n| n.name == name) {
                return Err(WanError::Duplicate(name.to_owned()));
            }
            st.nodes.push(NodeEntry {
                name: name.to_owned(),
                region: region_idx,
                real,
                sender,
                advertised,
            });
            let idx = st.nodes.len() - 1;
            st.by_real.insert(real, idx);
            idx
        };
        let seed = self.shared.config.seed ^ (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.tasks.push(tokio::spawn(relay(
            self.shared.clone(),
            idx,
            socket,
            self.schedule.clone(),
            seed,
        )));
        Ok(advertised)
    }

    /// Tells the emulator that a node's real socket moved (it roamed).
    pub fn set_real(&self, name: &str, real: SocketAddr) -> Result<(), WanError> {
        let mut st = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
        let idx = st
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| WanError::UnknownNode(name.to_owned()))?;
        let old = st.nodes[idx].real;
        st.by_real.remove(&old);
        st.nodes[idx].real = real;
        st.by_real.insert(real, idx);
        Ok(())
    }

    /// The advertised endpoint of an attached node.
    pub fn advertised(&self, name: &str) -> Option<SocketAddr> {
        let st = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        st.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.advertised)
    }

    fn pair(&self, a: &str, b: &str) -> Result<(usize, usize), WanError> {
        let st = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        let find = |n: &str| {
            st.nodes
                .iter()
                .position(|e| e.name == n)
                .ok_or_else(|| WanError::UnknownNode(n.to_owned()))
        };
        let (i, j) = (find(a)?, find(b)?);
        Ok((i.min(j), i.max(j)))
    }

    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the link between two nodes, both directions.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), WanError> {
        let p = self.pair(a, b)?;
        self.state().cut.insert(p);
        Ok(())
    }

    /// Restores the link between two nodes.
    pub fn heal(&self, a: &str, b: &str) -> Result<(), WanError> {
        let p = self.pair(a, b)?;
        self.state().cut.remove(&p);
        Ok(())
    }

    /// Cuts every link between the two groups.
    pub fn partition(&self, left: &[&str], right: &[&str]) -> Result<(), WanError> {
        for a in left {
            for b in right {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    pub fn heal_all(&self) {
        self.shared
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .cut
            .clear();
    }

    pub fn stats(&self) -> LinkStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.schedule.stop.store(true, Ordering::Relaxed);
        self.schedule.changed.notify_one();
    }
}

/// Socket buffer bytes per emulator endpoint.
const QUEUE_BYTES: usize = 4 << 20;

/// The endpoint's socket buffers are the emulated link's queue. The kernel default (about 208 KiB,
/// some 90 full-sized datagrams) would drop an unpaced sender's burst long before a WAN's
/// bandwidth-delay product is in flight: loss the emulator was not asked for. The kernel caps the
/// request at `net.core.rmem_max`/`wmem_max`.
fn deepen_queue(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(QUEUE_BYTES);
    let _ = s.set_send_buffer_size(QUEUE_BYTES);
}

/// splitmix64: loss and jitter need reproducibility, not quality.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f64 {
    (next(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// Receives what nodes send to node `dst`'s advertised endpoint and schedules its delivery.
async fn relay(
    shared: Arc<Shared>,
    dst: usize,
    socket: UdpSocket,
    schedule: Arc<Schedule>,
    mut rng: u64,
) {
    let mut buf = vec![0u8; 65536];
    let mut seq = (dst as u64) << 40;
    loop {
        let Ok((n, src)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        let cfg = &shared.config;
        let routed = {
            let st = shared.state.read().unwrap_or_else(|e| e.into_inner());
            match st.by_real.get(&src) {
                None => Err(false),
                Some(&from) if st.cut.contains(&(from.min(dst), from.max(dst))) => Err(true),
                Some(&from) => {
                    let (a, b) = (&st.nodes[from], &st.nodes[dst]);
                    let rtt = if a.region == b.region {
                        cfg.same_region_rtt
                    } else {
                        shared.matrix.rtt_at(a.region, b.region)
                    };
                    Ok((a.sender.clone(), b.real, rtt / 2))
                }
            }
        };
        let stats =
            |f: fn(&mut LinkStats)| f(&mut shared.stats.lock().unwrap_or_else(|e| e.into_inner()));
        match routed {
            Err(false) => stats(|s| s.unknown_source += 1),
            Err(true) => stats(|s| s.cut += 1),
            Ok(_) if cfg.loss > 0.0 && unit(&mut rng) < cfg.loss => stats(|s| s.lost += 1),
            Ok((from, to, one_way)) => {
                let jitter = if cfg.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    cfg.jitter.mul_f64(unit(&mut rng))
                };
                seq += 1;
                let due = Due {
                    at: now + one_way + jitter,
                    seq,
                    from,
                    to,
                    data: buf[..n].to_vec(),
                };
                schedule
                    .heap
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Reverse(due));
                schedule.changed.notify_one();
                stats(|s| s.delivered += 1);
            }
        }
    }
}

/// Sends every scheduled datagram when it falls due.
fn deliver(schedule: &Schedule) {
    let mut heap = schedule.heap.lock().unwrap_or_else(|e| e.into_inner());
    let mut ready = Vec::new();
    while !schedule.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.0.at <= now) {
            ready.push(heap.pop().expect("peeked").0);
        }
        if !ready.is_empty() {
            drop(heap);
            for d in ready.drain(..) {
                // a full socket buffer drops the datagram, as a congested router would
                let _ = d.from.send_to(&d.data, d.to);
            }
            heap = schedule.heap.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        heap = match heap.peek().map(|d| d.0.at) {
            Some(at) => {
                schedule
                    .changed
                    .wait_timeout(heap, at - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => schedule
                .changed
                .wait(heap)
                .unwrap_or_else(|e| e.into_inner()),
        };
    }
}
