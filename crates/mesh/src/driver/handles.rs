//! Moving bytes and state between smoltcp sockets and the application's handles.

use std::io;
use std::net::SocketAddrV6;
use std::sync::Arc;

use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpAddress;

use super::{Driver, StreamEntry};
use crate::tcp::{self as tcpx, StreamState, TcpStream, Wake, STREAM_BUF};
use crate::udp::UDP_QUEUE;
use crate::MeshError;

fn v6(addr: IpAddress, port: u16) -> SocketAddrV6 {
    match addr {
        IpAddress::Ipv6(a) => SocketAddrV6::new(a, port, 0, 0),
    }
}

impl Driver {
    /// Returns whether any bytes or states moved.
    pub(super) fn service_handles(&mut self) -> bool {
        let mut progress = self.service_listeners();
        progress |= self.service_streams();
        progress |= self.service_udp();
        progress
    }

    fn service_streams(&mut self) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        for (h, entry) in self.streams.iter_mut() {
            let sock = self.sockets.get_mut::<tcp::Socket<'_>>(*h);
            if let Some(done) = connect_outcome(sock, entry, &self.wake) {
                progress = true;
                if !done {
                    finished.push(*h);
                }
            }
            progress |= pump(sock, entry);
            let st = tcpx::lock(&entry.shared);
            let closed = matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait);
            if st.dropped && (closed || st.error.is_some()) {
                finished.push(*h);
            }
        }
        for h in finished {
            if self.streams.remove(&h).is_some() {
                self.sockets.remove(h);
            }
        }
        progress
    }

    fn service_listeners(&mut self) -> bool {
        let mut progress = false;
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            let entry = self.listeners.get_mut(&port).expect("key from map");
            let dropped = entry
                .shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dropped;
            if dropped {
                let entry = self.listeners.remove(&port).expect("present");
                for h in entry.sockets {
                    self.sockets.remove(h);
                }
                continue;
            }
            let mut keep = Vec::with_capacity(entry.sockets.len());
            let mut accepted = Vec::new();
            for h in entry.sockets.drain(..) {
                let s = self.sockets.get_mut::<tcp::Socket<'_>>(h);
                match s.state() {
                    tcp::State::Listen | tcp::State::SynReceived => keep.push(h),
                    tcp::State::Closed => {
                        self.sockets.remove(h);
                    }
                    _ => accepted.push(h),
                }
            }
            // a socket in SYN-RECEIVED takes no SYN: refill by those still in LISTEN
            let listening = keep
                .iter()
                .filter(|h| self.sockets.get::<tcp::Socket<'_>>(**h).state() == tcp::State::Listen)
                .count();
            let half_open = keep.len() - listening;
            entry.sockets = keep;
            let shared = entry.shared.clone();
            for h in accepted {
                progress = true;
                let s = self.sockets.get::<tcp::Socket<'_>>(h);
                let (Some(l), Some(r)) = (s.local_endpoint(), s.remote_endpoint()) else {
                    self.sockets.remove(h);
                    continue;
                };
                let state = Arc::new(std::sync::Mutex::new(StreamState::default()));
                let stream = TcpStream::new(
                    state.clone(),
                    self.wake.clone(),
                    v6(l.addr, l.port),
                    v6(r.addr, r.port),
                );
                self.streams.insert(
                    h,
                    StreamEntry {
                        shared: state,
                        fin_sent: false,
                        established: true,
                        connect: None,
                    },
                );
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                st.ready.push_back(stream);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
            let mut fresh = Vec::new();
            let room = super::HALF_OPEN.saturating_sub(half_open);
            for _ in listening..super::BACKLOG.min(listening + room) {
                fresh.extend(self.new_listen_socket(port));
            }
            if let Some(entry) = self.listeners.get_mut(&port) {
                entry.sockets.extend(fresh);
                debug_assert_eq!(entry.port, port);
            }
        }
        progress
    }

    fn service_udp(&mut self) -> bool {
        let mut progress = false;
        let mut gone = Vec::new();
        for (h, (shared, _port)) in self.udps.iter() {
            let sock = self.sockets.get_mut::<udp::Socket<'_>>(*h);
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            if st.dropped {
                gone.push(*h);
                continue;
            }
            let was_full = st.tx.len() >= UDP_QUEUE;
            while let Some((data, to)) = st.tx.front() {
                let ep = (IpAddress::Ipv6(*to.ip()), to.port());
                match sock.send_slice(data, ep) {
                    Ok(()) => {
                        st.tx.pop_front();
                        progress = true;
                    }
                    Err(udp::SendError::BufferFull) => break,
                    Err(_) => {
                        st.tx.pop_front();
                    }
                }
            }
            if was_full && st.tx.len() < UDP_QUEUE {
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
            }
            let mut got = false;
            while let Ok((data, meta)) = sock.recv() {
                if st.rx.len() >= UDP_QUEUE {
                    // like a full kernel socket buffer: newest datagrams are dropped
                    continue;
                }
                st.rx
                    .push_back((data.to_vec(), v6(meta.endpoint.addr, meta.endpoint.port)));
                got = true;
            }
            if got {
                progress = true;
                if let Some(w) = st.reader.take() {
                    w.wake();
                }
            }
        }
        for h in gone {
            self.udps.remove(&h);
            self.sockets.remove(h);
        }
        progress
    }
}

/// Moves bytes both ways between one smoltcp socket and its handle. Returns whether any moved.
fn pump(sock: &mut tcp::Socket<'_>, entry: &mut StreamEntry) -> bool {
    let mut st = tcpx::lock(&entry.shared);
    let mut moved = false;
    // application → TCP
    let before = st.tx.len();
    while !st.tx.is_empty() && sock.can_send() {
        let (a, _) = st.tx.as_slices();
        match sock.send_slice(a) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                st.tx.drain(..n);
            }
        }
    }
    if st.tx.len() != before {
        moved = true;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }
    if (st.tx_shutdown || st.dropped) && st.tx.is_empty() && !entry.fin_sent && entry.established {
        sock.close();
        entry.fin_sent = true;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }
    // TCP → application
    let mut got = false;
    while sock.can_recv() && st.rx.len() < STREAM_BUF {
        let room = STREAM_BUF - st.rx.len();
        let rx = &mut st.rx;
        match sock.recv(|b| {
            let n = b.len().min(room);
            rx.extend(&b[..n]);
            (n, n)
        }) {
            Ok(n) if n > 0 => got = true,
            _ => break,
        }
    }
    if entry.established
        && !st.rx_eof
        && st.error.is_none()
        && !sock.may_recv()
        && sock.recv_queue() == 0
    {
        // a FIN leads through CloseWait (or TimeWait); arriving at Closed without one is a reset
        // or a retransmission timeout
        if sock.state() == tcp::State::Closed {
            st.fail(
                io::ErrorKind::ConnectionReset,
                "overlay connection reset or timed out",
            );
        } else {
            st.rx_eof = true;
        }
        got = true;
    }
    if got {
        moved = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }
    moved
}

/// Resolves a pending connect. `Some(true)` when it just succeeded, `Some(false)` when it failed
/// (the entry must go), `None` when nothing changed.
fn connect_outcome(
    sock: &mut tcp::Socket<'_>,
    entry: &mut StreamEntry,
    wake: &Wake,
) -> Option<bool> {
    entry.connect.as_ref()?;
    match sock.state() {
        tcp::State::SynSent | tcp::State::SynReceived => None,
        tcp::State::Closed => {
            let c = entry.connect.take().expect("checked");
            let _ = c.reply.send(Err(MeshError::ConnectionRefused(c.addr)));
            Some(false)
        }
        _ => {
            let c = entry.connect.take().expect("checked");
            entry.established = true;
            let remote = sock
                .remote_endpoint()
                .map(|r| v6(r.addr, r.port))
                .unwrap_or(c.addr);
            let stream = TcpStream::new(entry.shared.clone(), wake.clone(), c.local, remote);
            if let Err(Ok(stream)) = c.reply.send(Ok(stream)) {
                // the caller gave up waiting; dropping the stream closes the connection
                drop(stream);
            }
            Some(true)
        }
    }
}
