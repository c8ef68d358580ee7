//! The key-value map: bytes to bytes, in memory.
//!
//! Owns the current value of every key. Knows nothing of logs, epochs or
//! connections: the core decides when an operation is applied.
//!
//! Keys come from clients, so an attacker can choose them. hashbrown's default
//! hasher (foldhash) is seeded randomly per process, so colliding keys cannot be
//! precomputed (hash flooding); it is also faster than SipHash.

use hashbrown::HashMap;

use crate::log::Op;

#[derive(Default)]
pub struct Store {
    map: HashMap<Box<[u8]>, Box<[u8]>>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|value| &**value)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        // Look up first so that overwriting a key does not allocate a key.
        match self.map.get_mut(key) {
            Some(existing) => *existing = value.into(),
            None => {
                self.map.insert(key.into(), value.into());
            }
        }
    }

    /// Removes `key`; returns whether it was there.
    pub fn del(&mut self, key: &[u8]) -> bool {
        self.map.remove(key).is_some()
    }

    /// Applies `op` and returns what it replaced, so a leader can take back
    /// an uncommitted write if it loses its leadership.
    pub fn apply_returning_previous(&mut self, op: &Op<'_>) -> Option<Box<[u8]>> {
        match *op {
            Op::Put { key, value } => match self.map.get_mut(key) {
                Some(existing) => Some(std::mem::replace(existing, value.into())),
                None => {
                    self.map.insert(key.into(), value.into());
                    None
                }
            },
            Op::Del { key } => self.map.remove(key),
            Op::Noop => None,
        }
    }

    /// Puts back what [`Self::apply_returning_previous`] returned.
    pub fn restore(&mut self, key: &[u8], previous: Option<Box<[u8]>>) {
        match previous {
            Some(value) => {
                self.map.insert(key.into(), value);
            }
            None => {
                self.map.remove(key);
            }
        }
    }

    /// Applies a logged operation (on replay and on commit).
    pub fn apply(&mut self, op: &Op<'_>) {
        match *op {
            Op::Put { key, value } => self.put(key, value),
            Op::Del { key } => {
                self.del(key);
            }
            Op::Noop => {}
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every pair, in no particular order (for comparing replicas in tests).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(key, value)| (&**key, &**value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_overwrite_delete() {
        let mut store = Store::new();
        assert_eq!(store.get(b"k"), None);
        store.put(b"k", b"v1");
        store.put(b"k", b"v2");
        assert_eq!(store.get(b"k"), Some(&b"v2"[..]));
        assert_eq!(store.len(), 1);
        assert!(store.del(b"k"));
        assert!(!store.del(b"k"));
        assert!(store.is_empty());
    }

    #[test]
    fn an_applied_operation_can_be_taken_back() {
        let mut store = Store::new();
        store.put(b"a", b"1");
        let put = Op::Put {
            key: b"a",
            value: b"2",
        };
        let previous = store.apply_returning_previous(&put);
        let created = store.apply_returning_previous(&Op::Put {
            key: b"b",
            value: b"x",
        });
        let deleted = store.apply_returning_previous(&Op::Del { key: b"a" });
        store.restore(b"a", deleted);
        store.restore(b"b", created);
        store.restore(b"a", previous);
        assert_eq!(store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(store.get(b"b"), None);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn applies_logged_operations() {
        let mut store = Store::new();
        store.apply(&Op::Put {
            key: b"\xff",
            value: b"",
        });
        assert_eq!(store.get(b"\xff"), Some(&b""[..]));
        store.apply(&Op::Noop);
        store.apply(&Op::Del { key: b"\xff" });
        assert_eq!(store.get(b"\xff"), None);
    }
}
