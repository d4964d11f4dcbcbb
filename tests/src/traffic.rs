//! The traffic the interop tests and the mesh benchmark send, generic over any async stream so the
//! same code measures the Vantage overlay and kernel TCP over wireguard-go.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Echoes everything until EOF.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

/// Sends `msg` and expects it back.
pub async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> std::io::Result<()> {
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::other("echo returned different bytes"));
    }
    Ok(())
}

/// Bulk receiver: reads until EOF, then answers with one byte so the sender can stop its clock.
pub async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.write_all(&[1]).await?;
    s.shutdown().await?;
    Ok(total)
}

/// Sends `bytes` to a [`sink`] and returns the throughput in Mbit/s (until the sink confirms).
pub async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> std::io::Result<f64> {
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(bytes as f64 * 8.0 / secs / 1e6)
}

/// `count` ping-pongs of a `size`-byte message through an [`echo`]; returns sorted RTTs.
pub async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    size: usize,
    count: usize,
) -> std::io::Result<Vec<Duration>> {
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    Ok(rtts)
}

/// The `q`-quantile of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Reads for `window` from the first byte on and returns the goodput in Mbit/s. The stream is
/// then dropped: a slow sender's backlog is not waited for.
pub async fn goodput_sink<S: AsyncRead + Unpin>(
    mut s: S,
    window: Duration,
) -> std::io::Result<f64> {
    let mut buf = vec![0u8; 256 * 1024];
    let first = s.read(&mut buf).await?;
    let start = Instant::now();
    let mut total = first as u64;
    let deadline = tokio::time::Instant::from_std(start + window);
    while let Ok(n) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        match n? {
            0 => break,
            n => total += n as u64,
        }
    }
    Ok(total as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6)
}

/// Writes until `done` is set (by the [`goodput_sink`] side); errors after that are the receiver
/// going away and end the send quietly.
pub async fn send_until<S: AsyncWrite + Unpin>(
    mut s: S,
    done: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let chunk = vec![0x5au8; 64 * 1024];
    while !done.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await {
            Ok(Err(e)) if !done.load(Ordering::Relaxed) => return Err(e),
            Ok(Err(_)) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Runs `f` on a new current-thread runtime (for threads inside a network namespace).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
