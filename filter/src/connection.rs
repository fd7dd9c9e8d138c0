//! Facts that belong to the downstream connection, not to the request: the peer's address, the
//! protocol, the listener's direction and the peer's mTLS identity.
//!
//! Envoy answers each with its own host call (~1.4 µs), yet a keep-alive or HTTP/2 connection
//! carries many requests, and sidecar-to-sidecar connections are long-lived and pooled. So the
//! adapter reads them on a connection's first recorded request and keeps them here, keyed by
//! Envoy's connection id; later requests pay one call (`connection.id`) instead of three to six.
//!
//! The cache is direct-mapped: Envoy numbers connections from one process-wide counter, so
//! `id % slots` spreads live connections evenly and a lookup is one compare. A collision only
//! evicts, and the evicted connection's next request reads its facts again; nothing is ever
//! served for the wrong connection because the full id is compared. Memory is bounded by the
//! slot count whatever the connection churn.

use std::rc::Rc;

/// Slots per worker: far more than a sidecar's live downstream connections, and a gateway's
/// overflow costs re-reads, never correctness.
pub const SLOTS: usize = 256;

/// Per-connection facts of type `T`, shared with the requests that use them.
#[derive(Debug)]
pub struct ConnectionCache<T> {
    slots: Vec<Option<(u64, Rc<T>)>>,
    /// Lookups answered from the cache and lookups that had to read the host.
    pub hits: u64,
    /// Lookups that read the host (the connection was not cached).
    pub misses: u64,
}

impl<T> Default for ConnectionCache<T> {
    fn default() -> Self {
        Self::with_slots(SLOTS)
    }
}

impl<T> ConnectionCache<T> {
    /// A cache of `slots` entries (at least one).
    pub fn with_slots(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| None).collect(),
            hits: 0,
            misses: 0,
        }
    }

    fn slot(&self, id: u64) -> usize {
        (id % self.slots.len() as u64) as usize
    }

    /// The facts of connection `id`, read with `read` on a miss (and then kept).
    pub fn get_or_read(&mut self, id: u64, read: impl FnOnce() -> T) -> Rc<T> {
        let i = self.slot(id);
        match &self.slots[i] {
            Some((held, facts)) if *held == id => {
                self.hits += 1;
                facts.clone()
            }
            _ => {
                self.misses += 1;
                let facts = Rc::new(read());
                self.slots[i] = Some((id, facts.clone()));
                facts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_request_on_a_connection_is_a_hit() {
        let mut c = ConnectionCache::with_slots(4);
        let mut reads = 0;
        let a = c.get_or_read(7, || {
            reads += 1;
            "10.0.0.1:5000"
        });
        let b = c.get_or_read(7, || {
            reads += 1;
            "other"
        });
        assert_eq!(
            (*a, *b, reads, c.hits, c.misses),
            ("10.0.0.1:5000", "10.0.0.1:5000", 1, 1, 1)
        );
    }

    #[test]
    fn a_colliding_connection_evicts_and_never_borrows_facts() {
        let mut c = ConnectionCache::with_slots(4);
        assert_eq!(*c.get_or_read(1, || "one"), "one");
        // 5 maps to the same slot as 1: its own facts are read, not 1's.
        assert_eq!(*c.get_or_read(5, || "five"), "five");
        assert_eq!(*c.get_or_read(1, || "one again"), "one again");
        assert_eq!((c.hits, c.misses), (0, 3));
    }

    #[test]
    fn sequential_ids_fill_distinct_slots() {
        let mut c = ConnectionCache::with_slots(SLOTS);
        for id in 1000..1000 + SLOTS as u64 {
            c.get_or_read(id, || id);
        }
        for id in 1000..1000 + SLOTS as u64 {
            assert_eq!(*c.get_or_read(id, || 0), id);
        }
        assert_eq!((c.hits, c.misses), (SLOTS as u64, SLOTS as u64));
    }

    #[test]
    fn zero_slots_is_one_slot() {
        let mut c = ConnectionCache::with_slots(0);
        assert_eq!(*c.get_or_read(u64::MAX, || 3), 3);
    }
}
