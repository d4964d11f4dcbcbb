//! Overlay UDP sockets as the application sees them; the driver owns the smoltcp socket.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crate::tcp::Wake;

/// Datagrams buffered per direction between the handle and the driver.
pub(crate) const UDP_QUEUE: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct UdpState {
    pub(crate) rx: VecDeque<(Vec<u8>, SocketAddrV6)>,
    pub(crate) tx: VecDeque<(Vec<u8>, SocketAddrV6)>,
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
    pub(crate) dropped: bool,
    pub(crate) closed: bool,
}

pub(crate) type SharedUdp = Arc<Mutex<UdpState>>;

fn lock(s: &SharedUdp) -> std::sync::MutexGuard<'_, UdpState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "mesh node has shut down")
}

/// A UDP socket on the overlay.
#[derive(Debug)]
pub struct UdpSocket {
    shared: SharedUdp,
    wake: Wake,
    local: SocketAddrV6,
}

impl UdpSocket {
    pub(crate) fn new(shared: SharedUdp, wake: Wake, local: SocketAddrV6) -> Self {
        Self {
            shared,
            wake,
            local,
        }
    }

    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// Queues one datagram; waits only while the send queue is full. Like UDP, delivery is not
    /// guaranteed.
    pub async fn send_to(&self, data: &[u8], to: SocketAddrV6) -> io::Result<usize> {
        if data.len() > crate::MAX_OVERLAY_UDP_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "datagram of {} bytes exceeds the overlay's {} byte UDP payload limit",
                    data.len(),
                    crate::MAX_OVERLAY_UDP_PAYLOAD
                ),
            ));
        }
        let mut item = Some((data.to_vec(), to));
        std::future::poll_fn(|cx| {
            let mut st = lock(&self.shared);
            if st.closed {
                return Poll::Ready(Err(closed()));
            }
            if st.tx.len() >= UDP_QUEUE {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            st.tx
                .push_back(item.take().expect("polled after completion"));
            Poll::Ready(Ok(()))
        })
        .await?;
        self.wake.notify_one();
        Ok(data.len())
    }

    /// The next datagram; a datagram longer than `buf` is truncated, as with UDP.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV6)> {
        std::future::poll_fn(|cx| {
            let mut st = lock(&self.shared);
            if let Some((d, from)) = st.rx.pop_front() {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                return Poll::Ready(Ok((n, from)));
            }
            if st.closed {
                return Poll::Ready(Err(closed()));
            }
            st.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        lock(&self.shared).dropped = true;
        self.wake.notify_one();
    }
}
