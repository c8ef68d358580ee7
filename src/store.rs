//! The key-value map: bytes to bytes, in memory.
//!
//! Owns the current value of every key. Knows nothing of logs, epochs or
//! connections: the core decides when an operation is applied.
//!
//! Each pair lives in one heap allocation, `[key length: u32 LE][write index:
//! u64 LE][key][value]`, held in a `hashbrown::HashTable`: one malloc per key
//! instead of two, and a 16-byte slot instead of 32. That is most of the
//! memory a key costs. The write index is the log index of the record that
//! set the value: a read of it need wait for that record to be durable, not
//! for every write before it.
//!
//! Keys come from clients, so an attacker can choose them. hashbrown's default
//! hasher (foldhash) is seeded randomly per process, so colliding keys cannot be
//! precomputed (hash flooding); it is also much faster than SipHash.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::log::Op;

const KEY_LENGTH_BYTES: usize = 4;
const WRITE_INDEX_BYTES: usize = 8;
const HEADER_BYTES: usize = KEY_LENGTH_BYTES + WRITE_INDEX_BYTES;

/// One pair in its single allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPair(Box<[u8]>);

impl StoredPair {
    fn new(key: &[u8], value: &[u8], write_index: u64) -> Self {
        // Keys are bounded by the line limit, far below 4 GiB.
        let key_length = u32::try_from(key.len()).expect("key length fits in u32");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + key.len() + value.len());
        bytes.extend_from_slice(&key_length.to_le_bytes());
        bytes.extend_from_slice(&write_index.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        StoredPair(bytes.into_boxed_slice())
    }

    fn key_end(&self) -> usize {
        let mut length = [0u8; KEY_LENGTH_BYTES];
        length.copy_from_slice(&self.0[..KEY_LENGTH_BYTES]);
        HEADER_BYTES + u32::from_le_bytes(length) as usize
    }

    pub fn key(&self) -> &[u8] {
        &self.0[HEADER_BYTES..self.key_end()]
    }

    /// The log index of the record that set this value.
    pub fn write_index(&self) -> u64 {
        let mut index = [0u8; WRITE_INDEX_BYTES];
        index.copy_from_slice(&self.0[KEY_LENGTH_BYTES..HEADER_BYTES]);
        u64::from_le_bytes(index)
    }

    pub fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }
}

#[derive(Default)]
pub struct Store {
    table: HashTable<StoredPair>,
    hasher: DefaultHashBuilder,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.lookup(key).map(StoredPair::value)
    }

    /// The pair stored under `key`, with the index of the write that set it.
    pub fn lookup(&self, key: &[u8]) -> Option<&StoredPair> {
        self.table.find(self.hash(key), |pair| pair.key() == key)
    }

    /// Sets `key` to `value`, as written by the record at `write_index`.
    pub fn put(&mut self, key: &[u8], value: &[u8], write_index: u64) {
        self.replace(key, Some(StoredPair::new(key, value, write_index)));
    }

    /// Removes `key`; returns whether it was there.
    pub fn del(&mut self, key: &[u8]) -> bool {
        self.replace(key, None).is_some()
    }

    /// Sets `key` to `pair` (or removes it) and returns what was there.
    fn replace(&mut self, key: &[u8], pair: Option<StoredPair>) -> Option<StoredPair> {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        match self.table.find_entry(hash, |stored| stored.key() == key) {
            Ok(mut occupied) => match pair {
                Some(pair) => Some(std::mem::replace(occupied.get_mut(), pair)),
                None => Some(occupied.remove().0),
            },
            Err(_) => {
                if let Some(pair) = pair {
                    self.table
                        .insert_unique(hash, pair, |stored| hasher.hash_one(stored.key()));
                }
                None
            }
        }
    }

    /// Applies the logged operation of record `index` (on replay and on commit).
    pub fn apply(&mut self, index: u64, op: &Op<'_>) {
        self.apply_returning_previous(index, op);
    }

    /// Applies the operation of record `index` and returns what it replaced,
    /// so a leader can take back an uncommitted write if it is deposed.
    pub fn apply_returning_previous(&mut self, index: u64, op: &Op<'_>) -> Option<StoredPair> {
        match *op {
            Op::Put { key, value } => self.replace(key, Some(StoredPair::new(key, value, index))),
            Op::Del { key } => self.replace(key, None),
            Op::Noop => None,
        }
    }

    /// Puts back what [`Self::apply_returning_previous`] returned for `key`.
    pub fn restore(&mut self, key: &[u8], previous: Option<StoredPair>) {
        self.replace(key, previous);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every pair, in no particular order (for comparing replicas in tests).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table.iter().map(|pair| (pair.key(), pair.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_overwrite_delete() {
        let mut store = Store::new();
        assert_eq!(store.get(b"k"), None);
        store.put(b"k", b"v1", 1);
        store.put(b"k", b"v2", 1);
        assert_eq!(store.get(b"k"), Some(&b"v2"[..]));
        assert_eq!(store.len(), 1);
        assert!(store.del(b"k"));
        assert!(!store.del(b"k"));
        assert!(store.is_empty());
    }

    #[test]
    fn keys_and_values_of_any_bytes_and_lengths_stay_apart() {
        let mut store = Store::new();
        store.put(b"", b"empty key", 1);
        store.put(b"ab", b"", 1);
        store.put(b"a", b"b", 1);
        store.put(b"\x00\xff", b"\x02\x00\x00\x00ab", 1);
        assert_eq!(store.get(b""), Some(&b"empty key"[..]));
        assert_eq!(store.get(b"ab"), Some(&b""[..]));
        assert_eq!(store.get(b"a"), Some(&b"b"[..]));
        assert_eq!(store.get(b"\x00\xff"), Some(&b"\x02\x00\x00\x00ab"[..]));
        let mut pairs: Vec<_> = store.iter().collect();
        pairs.sort();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0], (&b""[..], &b"empty key"[..]));
    }

    #[test]
    fn a_pair_remembers_the_write_that_set_it() {
        let mut store = Store::new();
        store.put(b"k", b"v", 7);
        assert_eq!(store.lookup(b"k").map(StoredPair::write_index), Some(7));
        store.apply(
            9,
            &Op::Put {
                key: b"k",
                value: b"w",
            },
        );
        let pair = store.lookup(b"k").unwrap();
        assert_eq!((pair.value(), pair.write_index()), (&b"w"[..], 9));
    }

    #[test]
    fn many_keys_survive_growth() {
        let mut store = Store::new();
        for index in 0..10_000u32 {
            store.put(&index.to_le_bytes(), &index.to_be_bytes(), 1);
        }
        for index in 0..10_000u32 {
            assert_eq!(
                store.get(&index.to_le_bytes()),
                Some(&index.to_be_bytes()[..])
            );
        }
        for index in (0..10_000u32).step_by(2) {
            assert!(store.del(&index.to_le_bytes()));
        }
        assert_eq!(store.len(), 5_000);
        assert_eq!(
            store.get(&1u32.to_le_bytes()),
            Some(&1u32.to_be_bytes()[..])
        );
    }

    #[test]
    fn an_applied_operation_can_be_taken_back() {
        let mut store = Store::new();
        store.put(b"a", b"1", 1);
        let put = Op::Put {
            key: b"a",
            value: b"2",
        };
        let previous = store.apply_returning_previous(2, &put);
        let created = store.apply_returning_previous(
            2,
            &Op::Put {
                key: b"b",
                value: b"x",
            },
        );
        let deleted = store.apply_returning_previous(2, &Op::Del { key: b"a" });
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
        store.apply(
            3,
            &Op::Put {
                key: b"\xff",
                value: b"",
            },
        );
        assert_eq!(store.get(b"\xff"), Some(&b""[..]));
        store.apply(3, &Op::Noop);
        store.apply(3, &Op::Del { key: b"\xff" });
        assert_eq!(store.get(b"\xff"), None);
    }
}
