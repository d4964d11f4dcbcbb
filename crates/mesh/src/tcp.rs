//! Overlay TCP streams and listeners as the application sees them.
//!
//! The driver task owns the smoltcp sockets. A stream handle and the driver meet only in a small
//! per-stream buffer pair behind its own mutex; the handle wakes the driver through [`Wake`] and the
//! driver wakes the handle through the stored wakers. No lock ever covers the protocol state.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV6;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How the handles tell the driver there is work.
pub(crate) type Wake = Arc<Notify>;

/// Bytes buffered on each side of the handle/driver boundary, per direction.
pub(crate) const STREAM_BUF: usize = 256 * 1024;

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// Received and not yet read by the application.
    pub(crate) rx: VecDeque<u8>,
    /// The peer sent FIN and everything before it is in `rx`.
    pub(crate) rx_eof: bool,
    /// Written by the application, not yet taken by the TCP socket.
    pub(crate) tx: VecDeque<u8>,
    /// The application shut down its write half.
    pub(crate) tx_shutdown: bool,
    /// The handle was dropped.
    pub(crate) dropped: bool,
    /// The connection failed (reset, timeout, node gone).
    pub(crate) error: Option<(io::ErrorKind, &'static str)>,
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
}

impl StreamState {
    pub(crate) fn wake_all(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    pub(crate) fn fail(&mut self, kind: io::ErrorKind, why: &'static str) {
        if self.error.is_none() {
            self.error = Some((kind, why));
        }
        self.wake_all();
    }
}

pub(crate) type SharedStream = Arc<Mutex<StreamState>>;

pub(crate) fn lock(s: &SharedStream) -> MutexGuard<'_, StreamState> {
    // a panic while holding this lock leaves plain buffers behind, which are still consistent
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP connection over the overlay. Implements tokio's `AsyncRead` and `AsyncWrite`, so hyper,
/// tungstenite and friends run over it unchanged.
#[derive(Debug)]
pub struct TcpStream {
    shared: SharedStream,
    wake: Wake,
    local: SocketAddrV6,
    peer: SocketAddrV6,
}

impl TcpStream {
    pub(crate) fn new(
        shared: SharedStream,
        wake: Wake,
        local: SocketAddrV6,
        peer: SocketAddrV6,
    ) -> Self {
        Self {
            shared,
            wake,
            local,
            peer,
        }
    }

    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddrV6 {
        self.peer
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        if !st.rx.is_empty() {
            let was_full = st.rx.len() >= STREAM_BUF;
            let (a, b) = st.rx.as_slices();
            let n = a.len().min(buf.remaining());
            buf.put_slice(&a[..n]);
            let m = b.len().min(buf.remaining());
            buf.put_slice(&b[..m]);
            st.rx.drain(..n + m);
            drop(st);
            if was_full {
                self.wake.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if st.rx_eof {
            return Poll::Ready(Ok(()));
        }
        if let Some((kind, why)) = st.error {
            return Poll::Ready(Err(io::Error::new(kind, why)));
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.shared);
        if let Some((kind, why)) = st.error {
            return Poll::Ready(Err(io::Error::new(kind, why)));
        }
        if st.tx_shutdown {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write half is shut down",
            )));
        }
        let room = STREAM_BUF.saturating_sub(st.tx.len());
        if room == 0 {
            st.writer = Some(cx.waker().clone());
            drop(st);
            self.wake.notify_one();
            return Poll::Pending;
        }
        let n = room.min(data.len());
        st.tx.extend(&data[..n]);
        drop(st);
        self.wake.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        if let Some((kind, why)) = st.error {
            return Poll::Ready(Err(io::Error::new(kind, why)));
        }
        if st.tx.is_empty() {
            return Poll::Ready(Ok(()));
        }
        st.writer = Some(cx.waker().clone());
        drop(st);
        self.wake.notify_one();
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared);
        st.tx_shutdown = true;
        if st.error.is_some() || st.tx.is_empty() {
            drop(st);
            self.wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        st.writer = Some(cx.waker().clone());
        drop(st);
        self.wake.notify_one();
        Poll::Pending
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        lock(&self.shared).dropped = true;
        self.wake.notify_one();
    }
}

#[derive(Debug, Default)]
pub(crate) struct ListenerState {
    pub(crate) ready: VecDeque<TcpStream>,
    pub(crate) waker: Option<Waker>,
    pub(crate) dropped: bool,
    pub(crate) closed: bool,
}

pub(crate) type SharedListener = Arc<Mutex<ListenerState>>;

/// Accepts overlay TCP connections on one port.
#[derive(Debug)]
pub struct TcpListener {
    shared: SharedListener,
    wake: Wake,
    local: SocketAddrV6,
}

impl TcpListener {
    pub(crate) fn new(shared: SharedListener, wake: Wake, local: SocketAddrV6) -> Self {
        Self {
            shared,
            wake,
            local,
        }
    }

    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// The next established connection. Fails only when the node has shut down.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV6)> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = st.ready.pop_front() {
                let peer = s.peer_addr();
                return Poll::Ready(Ok((s, peer)));
            }
            if st.closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "mesh node has shut down",
                )));
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dropped = true;
        self.wake.notify_one();
    }
}
