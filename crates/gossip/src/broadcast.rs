//! Piggybacked dissemination: each broadcast is sent a limited number of times, fewest-sent first,
//! and a newer broadcast about the same subject replaces the older one (memberlist's
//! `TransmitLimitedQueue`).

/// `mult × ceil(log10(n + 1))`.
pub(crate) fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
    mult * scale
}

#[derive(Debug, Clone)]
struct Item {
    /// What the broadcast is about (a member's name, or a user event's id).
    subject: String,
    msg: Vec<u8>,
    transmits: u32,
    /// Insertion order, so newer broadcasts go first among equals.
    id: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    items: Vec<Item>,
    next_id: u64,
}

impl Broadcasts {
    /// Queues `msg`, replacing any queued broadcast about the same subject.
    pub(crate) fn push(&mut self, subject: &str, msg: Vec<u8>) {
        self.items.retain(|i| i.subject != subject);
        self.next_id += 1;
        self.items.push(Item {
            subject: subject.to_owned(),
            msg,
            transmits: 0,
            id: self.next_id,
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes as many broadcasts as fit `room` (each costs its length plus `overhead`), fewest
    /// transmits first, and retires those that reached `limit`.
    pub(crate) fn take(&mut self, mut room: usize, overhead: usize, limit: u32) -> Vec<Vec<u8>> {
        self.items
            .sort_by(|a, b| a.transmits.cmp(&b.transmits).then(b.id.cmp(&a.id)));
        let mut out = Vec::new();
        for item in &mut self.items {
            let cost = item.msg.len() + overhead;
            if cost > room {
                continue;
            }
            room -= cost;
            item.transmits += 1;
            out.push(item.msg.clone());
        }
        self.items.retain(|i| i.transmits < limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_replaces_and_packs() {
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 999), 12);
        let mut q = Broadcasts::default();
        q.push("a", vec![1; 10]);
        q.push("b", vec![2; 10]);
        q.push("a", vec![3; 10]);
        assert_eq!(q.len(), 2);
        let first = q.take(100, 2, 2);
        assert_eq!(first, vec![vec![3; 10], vec![2; 10]]);
        assert_eq!(q.take(12, 2, 2).len(), 1, "only one fits");
        let rest = q.take(100, 2, 2);
        assert_eq!(rest.len(), 1);
        assert_eq!(q.len(), 0, "all reached the limit");
    }
}
