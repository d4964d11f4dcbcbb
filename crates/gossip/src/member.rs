//! Members as the rest of the program sees them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Largest encoded tag set, in bytes.
pub const MAX_TAGS: usize = 512;

/// Where a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl State {
    pub(crate) fn code(self) -> u8 {
        match self {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
            State::Left => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Dead,
            3 => State::Left,
            _ => return None,
        })
    }

    /// Alive or suspect: still taking part.
    pub fn is_live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

/// Key/value metadata carried with a member (region, role, keys, load, …).
pub type Tags = BTreeMap<String, String>;

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: State,
    pub tags: Tags,
}

/// Encodes tags as `u8 key length, key, u8 value length, value` pairs.
pub fn encode_tags(tags: &Tags) -> Result<Vec<u8>, crate::GossipError> {
    let mut out = Vec::new();
    for (k, v) in tags {
        if k.len() > 255 || v.len() > 255 {
            return Err(crate::GossipError::TagsTooLarge(k.len().max(v.len())));
        }
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    if out.len() > MAX_TAGS {
        return Err(crate::GossipError::TagsTooLarge(out.len()));
    }
    Ok(out)
}

pub(crate) fn decode_tags(mut b: &[u8]) -> Option<Tags> {
    let mut tags = Tags::new();
    while !b.is_empty() {
        let (k, rest) = take_str(b)?;
        let (v, rest) = take_str(rest)?;
        tags.insert(k, v);
        b = rest;
    }
    Some(tags)
}

fn take_str(b: &[u8]) -> Option<(String, &[u8])> {
    let (&len, rest) = b.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let s = std::str::from_utf8(&rest[..len]).ok()?.to_owned();
    Some((s, &rest[len..]))
}
