//! The underlay key lookup: how a node learns a seed's public key from its `host:port`.
//!
//! It is unauthenticated on purpose (the PSK gates everything after it). WireGuard messages start
//! with a little-endian type 1..=4 followed by three zero bytes; these start with ASCII `VNTK`, so
//! the two never collide. A reply is exactly as long as the request, so the lookup cannot amplify.

use std::time::{Duration, Instant};

use crate::keys::PublicKey;

/// Bytes in a request and in a reply.
pub const LOOKUP_LEN: usize = 64;
const REQUEST_MAGIC: &[u8; 8] = b"VNTKREQ1";
const REPLY_MAGIC: &[u8; 8] = b"VNTKRSP1";
const NONCE_LEN: usize = 24;

/// A parsed lookup message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupMsg {
    Request {
        nonce: [u8; NONCE_LEN],
    },
    Reply {
        nonce: [u8; NONCE_LEN],
        key: PublicKey,
    },
}

/// Whether `datagram` claims to be a lookup message (cheap test before parsing).
pub fn is_lookup(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && &datagram[..4] == b"VNTK"
}

pub fn encode_request(nonce: [u8; NONCE_LEN]) -> [u8; LOOKUP_LEN] {
    let mut out = [0u8; LOOKUP_LEN];
    out[..8].copy_from_slice(REQUEST_MAGIC);
    out[8..8 + NONCE_LEN].copy_from_slice(&nonce);
    out
}

pub fn encode_reply(nonce: [u8; NONCE_LEN], key: &PublicKey) -> [u8; LOOKUP_LEN] {
    let mut out = [0u8; LOOKUP_LEN];
    out[..8].copy_from_slice(REPLY_MAGIC);
    out[8..8 + NONCE_LEN].copy_from_slice(&nonce);
    out[8 + NONCE_LEN..].copy_from_slice(key.as_bytes());
    out
}

/// Parses a lookup message; anything not exactly [`LOOKUP_LEN`] bytes is rejected, which keeps the
/// reply from ever being larger than what caused it.
pub fn parse(datagram: &[u8]) -> Option<LookupMsg> {
    if datagram.len() != LOOKUP_LEN {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&datagram[8..8 + NONCE_LEN]);
    let tail = &datagram[8 + NONCE_LEN..];
    match &datagram[..8] {
        m if m == REQUEST_MAGIC && tail.iter().all(|&b| b == 0) => {
            Some(LookupMsg::Request { nonce })
        }
        m if m == REPLY_MAGIC => {
            let key: [u8; 32] = tail.try_into().ok()?;
            Some(LookupMsg::Reply {
                nonce,
                key: PublicKey::from_bytes(key),
            })
        }
        _ => None,
    }
}

/// A token bucket; time comes in as a parameter.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long a lookup waits for its reply before it is retried.
pub const LOOKUP_RETRY: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_amplification() {
        let req = encode_request([9; NONCE_LEN]);
        assert_eq!(
            parse(&req),
            Some(LookupMsg::Request {
                nonce: [9; NONCE_LEN]
            })
        );
        let key = PublicKey::from_bytes([3; 32]);
        let rep = encode_reply([9; NONCE_LEN], &key);
        assert_eq!(rep.len(), req.len());
        assert_eq!(
            parse(&rep),
            Some(LookupMsg::Reply {
                nonce: [9; NONCE_LEN],
                key
            })
        );
        assert_eq!(parse(&req[..40]), None);
        // WireGuard handshake initiation (type 1, reserved zeros) is never a lookup
        let mut wg = [0u8; 148];
        wg[0] = 1;
        assert!(!is_lookup(&wg));
        let mut bad = req;
        bad[60] = 1;
        assert_eq!(parse(&bad), None, "requests must carry zero padding");
    }

    #[test]
    fn bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
    }
}
