//! The datagram and stream formats. Hand-written and bounds-checked: every length is checked
//! before use, and anything malformed is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::coordinate::Coordinate;
use crate::member::State;

const PACKET_MAGIC: [u8; 2] = *b"VG";
const STREAM_MAGIC: [u8; 2] = *b"VS";
const VERSION: u8 = 1;
/// Bytes of each message's length prefix.
pub(crate) const PREFIX_LEN: usize = 2;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated")]
    Truncated,
    #[error("not a vantage gossip message (bad magic)")]
    Magic,
    #[error("unsupported gossip protocol version {0}; this node speaks {VERSION}")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("malformed field: {0}")]
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: SocketAddr,
    pub tags: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Accuse {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UserEvent {
    pub ltime: u64,
    pub name: String,
    pub payload: Vec<u8>,
}

impl UserEvent {
    /// The same fields in a datagram and in a push-pull's event section.
    fn write(&self, w: &mut Writer) {
        w.u64(self.ltime);
        w.str(&self.name);
        w.bytes(&self.payload);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ltime: r.u64()?,
            name: r.str()?,
            payload: r.bytes()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Msg {
    Ping {
        seq: u32,
        target: String,
    },
    IndirectPing {
        seq: u32,
        target: String,
        addr: SocketAddr,
        nack: bool,
    },
    Ack {
        seq: u32,
        coord: Option<Coordinate>,
    },
    Nack {
        seq: u32,
    },
    Alive(Alive),
    Suspect(Accuse),
    Dead(Accuse),
    User(UserEvent),
}

pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Names are at most 255 bytes (checked where names enter the system).
    pub fn str(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(255)];
        self.u8(b.len() as u8);
        self.0.extend_from_slice(b);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u16).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    pub fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.0.extend_from_slice(&a.port().to_le_bytes());
    }
}

pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn str(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Field("name is not utf-8"))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = usize::from(self.u16()?);
        Ok(self.take(n)?.to_vec())
    }
    pub fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).expect("4 bytes"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("16 bytes"),
            )),
            _ => return Err(DecodeError::Field("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

fn put_coord(w: &mut Writer, c: &Coordinate) {
    w.u8(c.vec.len() as u8);
    for v in &c.vec {
        w.f64(*v);
    }
    w.f64(c.error);
    w.f64(c.adjustment);
    w.f64(c.height);
}

fn get_coord(r: &mut Reader<'_>) -> Result<Coordinate, DecodeError> {
    let dims = usize::from(r.u8()?);
    if dims > 16 {
        return Err(DecodeError::Field("coordinate dimensionality"));
    }
    let mut vec = Vec::with_capacity(dims);
    for _ in 0..dims {
        vec.push(r.f64()?);
    }
    let error = r.f64()?;
    let adjustment = r.f64()?;
    let height = r.f64()?;
    Ok(Coordinate {
        vec,
        error,
        adjustment,
        height,
    })
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        match self {
            Msg::Ping { seq, target } => {
                w.u8(1);
                w.u32(*seq);
                w.str(target);
            }
            Msg::IndirectPing {
                seq,
                target,
                addr,
                nack,
            } => {
                w.u8(2);
                w.u32(*seq);
                w.str(target);
                w.addr(*addr);
                w.u8(u8::from(*nack));
            }
            Msg::Ack { seq, coord } => {
                w.u8(3);
                w.u32(*seq);
                match coord {
                    Some(c) => {
                        w.u8(1);
                        put_coord(&mut w, c);
                    }
                    None => w.u8(0),
                }
            }
            Msg::Nack { seq } => {
                w.u8(4);
                w.u32(*seq);
            }
            Msg::Alive(a) => {
                w.u8(5);
                w.u32(a.incarnation);
                w.str(&a.node);
                w.addr(a.addr);
                w.bytes(&a.tags);
            }
            Msg::Suspect(s) | Msg::Dead(s) => {
                w.u8(if matches!(self, Msg::Suspect(_)) {
                    6
                } else {
                    7
                });
                w.u32(s.incarnation);
                w.str(&s.node);
                w.str(&s.from);
            }
            Msg::User(e) => {
                w.u8(8);
                e.write(&mut w);
            }
        }
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Msg, DecodeError> {
        let mut r = Reader(b);
        let msg = match r.u8()? {
            1 => Msg::Ping {
                seq: r.u32()?,
                target: r.str()?,
            },
            2 => Msg::IndirectPing {
                seq: r.u32()?,
                target: r.str()?,
                addr: r.addr()?,
                nack: r.u8()? != 0,
            },
            3 => {
                let seq = r.u32()?;
                let coord = match r.u8()? {
                    0 => None,
                    _ => Some(get_coord(&mut r)?),
                };
                Msg::Ack { seq, coord }
            }
            4 => Msg::Nack { seq: r.u32()? },
            5 => Msg::Alive(Alive {
                incarnation: r.u32()?,
                node: r.str()?,
                addr: r.addr()?,
                tags: r.bytes()?,
            }),
            t @ (6 | 7) => {
                let a = Accuse {
                    incarnation: r.u32()?,
                    node: r.str()?,
                    from: r.str()?,
                };
                if t == 6 {
                    Msg::Suspect(a)
                } else {
                    Msg::Dead(a)
                }
            }
            8 => Msg::User(UserEvent::read(&mut r)?),
            t => return Err(DecodeError::Type(t)),
        };
        Ok(msg)
    }
}

/// Builds one datagram: a header naming the sender, then length-prefixed messages.
pub(crate) struct Packet {
    buf: Vec<u8>,
    count: u8,
    limit: usize,
}

impl Packet {
    pub fn new(from: &str, from_addr: SocketAddr, limit: usize) -> Self {
        let mut w = Writer(Vec::with_capacity(limit.min(2048)));
        w.0.extend_from_slice(&PACKET_MAGIC);
        w.u8(VERSION);
        w.u8(0); // message count, patched in `finish`
        w.str(from);
        w.addr(from_addr);
        Self {
            buf: w.0,
            count: 0,
            limit,
        }
    }

    /// Room left for one more message body.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.buf.len() + PREFIX_LEN)
    }

    /// Appends a message if it fits; returns whether it did.
    pub fn push(&mut self, msg: &[u8]) -> bool {
        if msg.len() > self.room() || self.count == u8::MAX {
            return false;
        }
        self.buf
            .extend_from_slice(&(msg.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(msg);
        self.count += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[3] = self.count;
        self.buf
    }
}

/// A decoded datagram: who sent it and its messages.
pub(crate) fn decode_packet(b: &[u8]) -> Result<(String, SocketAddr, Vec<Msg>), DecodeError> {
    let mut r = Reader(b);
    if r.take(2)? != PACKET_MAGIC {
        return Err(DecodeError::Magic);
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(DecodeError::Version(v));
    }
    let count = r.u8()?;
    let from = r.str()?;
    let addr = r.addr()?;
    let mut msgs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        msgs.push(Msg::decode(r.take(len)?)?);
    }
    Ok((from, addr, msgs))
}

/// One member as carried by a push-pull exchange.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PushMember {
    pub name: String,
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: State,
    pub tags: Vec<u8>,
}

/// A full-state exchange over a stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PushPull {
    pub join: bool,
    pub members: Vec<PushMember>,
    pub event_ltime: u64,
    /// Recent user events (Serf's push-pull carries its event buffer), so a member that missed
    /// them while cut off gets them at the next exchange. A trailing section: older decoders
    /// stop before it.
    pub events: Vec<UserEvent>,
}

impl PushPull {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.members.len() * 64));
        w.0.extend_from_slice(&STREAM_MAGIC);
        w.u8(VERSION);
        w.u8(u8::from(self.join));
        w.u64(self.event_ltime);
        w.u32(self.members.len() as u32);
        for m in &self.members {
            w.str(&m.name);
            w.addr(m.addr);
            w.u32(m.incarnation);
            w.u8(m.state.code());
            w.bytes(&m.tags);
        }
        w.u32(self.events.len() as u32);
        for e in &self.events {
            e.write(&mut w);
        }
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(b);
        if r.take(2)? != STREAM_MAGIC {
            return Err(DecodeError::Magic);
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(DecodeError::Version(v));
        }
        let join = r.u8()? != 0;
        let event_ltime = r.u64()?;
        let n = r.u32()? as usize;
        // each member takes at least 12 bytes: refuse counts the buffer cannot hold
        if n > r.0.len() / 12 + 1 {
            return Err(DecodeError::Field("member count"));
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(PushMember {
                name: r.str()?,
                addr: r.addr()?,
                incarnation: r.u32()?,
                state: State::from_code(r.u8()?).ok_or(DecodeError::Field("member state"))?,
                tags: r.bytes()?,
            });
        }
        let events = if r.0.is_empty() {
            Vec::new()
        } else {
            decode_events(&mut r)?
        };
        Ok(Self {
            join,
            members,
            event_ltime,
            events,
        })
    }
}

/// The push-pull's event section: at most [`MAX_PUSH_EVENTS`] events.
fn decode_events(r: &mut Reader<'_>) -> Result<Vec<UserEvent>, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_PUSH_EVENTS {
        return Err(DecodeError::Field("event count"));
    }
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(UserEvent::read(r)?);
    }
    Ok(events)
}

/// Most user events one push-pull carries: the whole de-duplication buffer.
pub(crate) const MAX_PUSH_EVENTS: usize = crate::core::EVENT_BUFFER_LEN as usize;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn samples() -> Vec<Msg> {
        let addr: SocketAddr = "[fd00::1]:7946".parse().unwrap();
        let coord = Coordinate {
            vec: vec![0.01; 8],
            error: 0.5,
            adjustment: -0.001,
            height: 1e-5,
        };
        vec![
            Msg::Ping {
                seq: 1,
                target: "sin-1".into(),
            },
            Msg::IndirectPing {
                seq: 2,
                target: "ams".into(),
                addr,
                nack: true,
            },
            Msg::Ack {
                seq: 3,
                coord: Some(coord),
            },
            Msg::Ack {
                seq: 4,
                coord: None,
            },
            Msg::Nack { seq: 5 },
            Msg::Alive(Alive {
                incarnation: 6,
                node: "a".into(),
                addr,
                tags: vec![1, b'k', 1, b'v'],
            }),
            Msg::Suspect(Accuse {
                incarnation: 7,
                node: "b".into(),
                from: "c".into(),
            }),
            Msg::Dead(Accuse {
                incarnation: 8,
                node: "b".into(),
                from: "b".into(),
            }),
            Msg::User(UserEvent {
                ltime: 9,
                name: "deploy".into(),
                payload: b"v2".to_vec(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_and_packets_respect_the_limit() {
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let mut p = Packet::new("me", addr, 1232);
        for m in samples() {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
            assert!(p.push(&m.encode()));
        }
        assert!(
            !p.push(&vec![0; 1300]),
            "a message larger than the room is refused"
        );
        let data = p.finish();
        assert!(data.len() <= 1232);
        let (from, from_addr, msgs) = decode_packet(&data).unwrap();
        assert_eq!((from.as_str(), from_addr, msgs), ("me", addr, samples()));
    }

    #[test]
    fn push_pull_carries_events_and_bounds_their_count() {
        let event = UserEvent {
            ltime: 9,
            name: "deploy".into(),
            payload: b"v2".to_vec(),
        };
        let mut pp = PushPull {
            join: true,
            members: Vec::new(),
            event_ltime: 12,
            events: vec![event; 3],
        };
        assert_eq!(PushPull::decode(&pp.encode()).unwrap(), pp);
        pp.events = vec![pp.events[0].clone(); MAX_PUSH_EVENTS + 1];
        assert_eq!(
            PushPull::decode(&pp.encode()),
            Err(DecodeError::Field("event count"))
        );
    }

    #[test]
    fn hostile_input_is_an_error_never_a_panic() {
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let mut p = Packet::new("me", addr, 1232);
        for m in samples() {
            p.push(&m.encode());
        }
        let good = p.finish();
        for cut in 0..good.len() {
            assert!(
                decode_packet(&good[..cut]).is_err(),
                "truncation at {cut} accepted"
            );
        }
        let seed = 42;
        let mut rng = Rng::new(seed);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
            }
            let _ = decode_packet(&b);
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_packet(&junk);
            let _ = PushPull::decode(&junk);
        }
        let mut huge = Writer(b"VS".to_vec());
        huge.u8(VERSION);
        huge.u8(0);
        huge.u64(0);
        huge.u32(u32::MAX);
        assert_eq!(
            PushPull::decode(&huge.0),
            Err(DecodeError::Field("member count"))
        );
    }
}
