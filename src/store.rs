//! The key-value map: bytes to bytes, in memory.
//!
//! Owns the current value of every key, and the image of the store as of
//! one write index while a snapshot takes it. Applies the operations of log
//! records (`log::Op`) but knows nothing of epochs, commits or connections:
//! the core decides when an operation is applied.
//!
//! Each pair lives in one heap allocation, `[key length: u32 LE][write index:
//! u64 LE][key][value]`, held in a `hashbrown::HashTable`: one malloc per key
//! instead of two, and a 16-byte slot instead of 32. That is most of the
//! memory a key costs. The write index is the log index of the record that
//! set the value: a read of it need wait for that record to be durable, not
//! for every write before it. The same bytes are a pair's form in a snapshot
//! file, so loading one is allocate and copy.
//!
//! Keys come from clients, so an attacker can choose them. hashbrown's default
//! hasher (foldhash) is seeded randomly per process, so colliding keys cannot be
//! precomputed (hash flooding); it is also much faster than SipHash.
//!
//! # Capturing an image while serving
//!
//! A snapshot is the store as of one write index `S`: every pair whose write
//! index is at most `S`, except those replaced or removed by a later write.
//! [`Store::begin_capture`] starts one and [`Store::capture_step`] hands out a
//! bounded slice of it per call, so the event loop never stalls, while writes
//! go on. The image stays exact, because:
//! - the scan walks the table by bucket index and hands out each pair whose
//!   write index is at most `S` (a pair written after `S` is not the image's);
//! - a pair of the image that a write replaces or removes before the scan
//!   reaches its bucket is kept aside (a *pre-image*) and handed out too;
//!   after the scan passed its bucket, it was already handed out;
//! - a pair never moves between buckets unless the table grows or rehashes
//!   on an insert; that is detected, and the scan starts over (pairs of the
//!   image are then handed out twice, which loading tolerates: the copies
//!   are equal).
//!
//! The memory a capture costs beyond the table is its pre-images: at most one
//! per pair of the image, the copy-on-write of a fork, per pair instead of
//! per page.
//!
//! # Memory accounting
//!
//! [`Store::used_bytes`] is what `--max-memory-bytes` limits: for each pair,
//! its bytes plus [`PAIR_OVERHEAD_BYTES`] for its table slot and allocation.
//! It is computed from the pairs alone, not read from the allocator, so
//! every replica that holds the same pairs counts the same number.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::log::{Batch, Op};

const KEY_LENGTH_BYTES: usize = 4;
const WRITE_INDEX_BYTES: usize = 8;
/// The fixed part of a pair's bytes: key length and write index.
pub const PAIR_HEADER_BYTES: usize = KEY_LENGTH_BYTES + WRITE_INDEX_BYTES;
const HEADER_BYTES: usize = PAIR_HEADER_BYTES;

/// What a pair costs beyond its own bytes, in the accounting of
/// `--max-memory-bytes`: its table slot (a 16-byte boxed-slice pointer and a
/// control byte, at the table's 7/8 load factor) and the allocator's header
/// and rounding (about 16 bytes per allocation with glibc's malloc).
pub const PAIR_OVERHEAD_BYTES: usize = 36;

/// A capture step examines at most this many buckets, whatever it finds.
const MAX_SCAN_BUCKETS_PER_STEP: usize = 64 * 1024;

/// The most keys one [`Store::prefetch`] warms: about what a pipelined
/// read brings, and what stays in L1 until executed.
pub const PREFETCH_BATCH: usize = 32;

/// Asks the CPU to start loading the cache line at `address`; no effect on
/// the program's state, whatever the address.
#[inline(always)]
fn prefetch_read(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, for any address, and
    // changes no state the program sees; SSE (which has it) is part of the
    // x86_64 baseline. Measured reason for it: perf/RESULTS.md, "Batched
    // lookups" (two cache misses per lookup overlapped across a pipeline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

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

    /// Replaces the value with one of the same length, set by the record
    /// at `write_index`.
    fn overwrite(&mut self, value: &[u8], write_index: u64) {
        let start = self.key_end();
        self.0[start..].copy_from_slice(value);
        self.0[KEY_LENGTH_BYTES..HEADER_BYTES].copy_from_slice(&write_index.to_le_bytes());
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

    /// The pair's bytes: `[key length][write index][key][value]`.
    pub fn encoded(&self) -> &[u8] {
        &self.0
    }

    /// A pair from its bytes, if they are well formed.
    pub fn from_encoded(bytes: &[u8]) -> Option<StoredPair> {
        let (length, _) = bytes.split_first_chunk::<KEY_LENGTH_BYTES>()?;
        let key_length = u32::from_le_bytes(*length) as usize;
        if bytes.len() < HEADER_BYTES || key_length > bytes.len() - HEADER_BYTES {
            return None;
        }
        Some(StoredPair(bytes.into()))
    }
}

/// An image of the store as of one write index, being taken (see the
/// module doc).
#[derive(Debug)]
struct Capture {
    /// Pairs written at or before this index belong to the image.
    index: u64,
    /// Buckets below this were scanned since the scan last (re)started.
    cursor: usize,
    /// Pairs of the image replaced or removed ahead of the scan.
    preimages: Vec<StoredPair>,
    preimage_bytes: usize,
    restarts: u64,
}

impl Capture {
    /// Whether `previous`, just taken out of `bucket`, must be kept aside.
    fn wants(&self, previous: &StoredPair, bucket: usize) -> bool {
        previous.write_index() <= self.index && bucket >= self.cursor
    }

    fn keep(&mut self, pair: StoredPair) {
        self.preimage_bytes += pair.encoded().len();
        self.preimages.push(pair);
    }
}

/// How a capture went, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// Times the table grew or rehashed during the capture, restarting it.
    pub restarts: u64,
}

/// The key-value map (see the module doc).
#[derive(Default)]
pub struct Store {
    table: HashTable<StoredPair>,
    hasher: DefaultHashBuilder,
    capture: Option<Capture>,
    /// The sum of [`Store::pair_cost`] over the pairs held.
    used_bytes: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("pairs", &self.table.len())
            .field("capturing", &self.capture_index())
            .finish()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with room for `pairs` without growing (loading a
    /// snapshot of known size).
    pub fn with_capacity(pairs: usize) -> Self {
        Store {
            table: HashTable::with_capacity(pairs),
            ..Store::default()
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// What a pair of a `key_bytes` key and a `value_bytes` value counts
    /// for in [`Store::used_bytes`].
    pub fn pair_cost(key_bytes: usize, value_bytes: usize) -> usize {
        PAIR_HEADER_BYTES + key_bytes + value_bytes + PAIR_OVERHEAD_BYTES
    }

    fn cost_of(pair: &StoredPair) -> usize {
        pair.encoded().len() + PAIR_OVERHEAD_BYTES
    }

    /// The memory the pairs account for (see the module doc): what
    /// `--max-memory-bytes` limits.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// How much [`Store::used_bytes`] would grow if `key` were set to a
    /// value of `value_bytes` (negative: it would shrink).
    pub fn growth_if_put(&self, key: &[u8], value_bytes: usize) -> isize {
        let new = Self::pair_cost(key.len(), value_bytes) as isize;
        let old = self
            .lookup(key)
            .map_or(0, |pair| Self::cost_of(pair) as isize);
        new - old
    }

    /// An upper bound on how much [`Store::used_bytes`] would grow if
    /// `batch` were applied: the sum of each put's growth against the
    /// store as it is, where positive. Deletes, and a key put twice, only
    /// make the true growth smaller.
    pub fn growth_if_batch(&self, batch: &Batch<'_>) -> isize {
        batch
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => self.growth_if_put(key, value.len()).max(0),
                _ => 0,
            })
            .sum()
    }

    /// Brings into the cache what looking up each of `keys` will touch,
    /// without looking anything up: the table slots their hashes probe,
    /// then the pairs those slots point to. A lookup in a large table is
    /// two dependent cache misses (slot, then pair); for a pipelined batch
    /// of requests this overlaps all of them instead of paying them one
    /// after another. At most [`PREFETCH_BATCH`] keys are used.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let mut hashes = [0u64; PREFETCH_BATCH];
        let count = keys.len().min(PREFETCH_BATCH);
        for (hash, key) in hashes.iter_mut().zip(&keys[..count]) {
            *hash = self.hash(key);
            // The probe reads only control bytes (small, cached); taking a
            // slot's address loads nothing. `false` keeps it probing every
            // candidate, as a lookup would.
            self.table.find(*hash, |slot| {
                prefetch_read(std::ptr::from_ref(slot).cast());
                false
            });
        }
        for hash in &hashes[..count] {
            self.table.find(*hash, |slot| {
                prefetch_read(slot.0.as_ptr());
                false
            });
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.lookup(key).map(StoredPair::value)
    }

    /// The pair stored under `key`, with the index of the write that set it.
    pub fn lookup(&self, key: &[u8]) -> Option<&StoredPair> {
        self.table.find(self.hash(key), |pair| pair.key() == key)
    }

    /// Sets `key` to `value`, as written by the record at `write_index`.
    ///
    /// A value of the length the key already holds is written over the old
    /// one in its allocation (no malloc, no free, no copy of the key),
    /// unless a capture still needs the old pair: the common overwrite,
    /// and a third of a PUT's instructions.
    pub fn put(&mut self, key: &[u8], value: &[u8], write_index: u64) {
        let hash = self.hash(key);
        if let Some(stored) = self.table.find_mut(hash, |stored| stored.key() == key)
            && stored.value().len() == value.len()
            && self.capture.is_none()
        {
            stored.overwrite(value, write_index);
            return;
        }
        self.replace_dropping(key, Some(StoredPair::new(key, value, write_index)));
    }

    /// Removes `key`; returns whether it was there.
    pub fn del(&mut self, key: &[u8]) -> bool {
        self.replace_dropping(key, None)
    }

    /// Adds a pair read from a snapshot; a copy of a pair already there
    /// replaces it (a capture may hand out a pair twice, equal both times).
    pub fn insert_loaded(&mut self, pair: StoredPair) {
        debug_assert!(self.capture.is_none(), "loading is not capturing");
        let hash = self.hash(pair.key());
        let hasher = &self.hasher;
        // One probe finds the key or the slot for it (loading is most of
        // start-up, and each probe is a cache miss in a large table).
        let entry = self.table.entry(
            hash,
            |stored| stored.key() == pair.key(),
            |stored| hasher.hash_one(stored.key()),
        );
        self.used_bytes += Self::cost_of(&pair);
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let previous = std::mem::replace(occupied.get_mut(), pair);
                self.used_bytes -= Self::cost_of(&previous);
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(pair);
            }
        }
    }

    /// Sets `key` to `pair` (or removes it) and returns what was there,
    /// with the bucket it was in.
    fn replace(&mut self, key: &[u8], pair: Option<StoredPair>) -> Option<(StoredPair, usize)> {
        let hash = self.hash(key);
        self.used_bytes += pair.as_ref().map_or(0, Self::cost_of);
        match self.table.find_entry(hash, |stored| stored.key() == key) {
            Ok(mut occupied) => {
                let bucket = occupied.bucket_index();
                let previous = match pair {
                    Some(pair) => std::mem::replace(occupied.get_mut(), pair),
                    None => occupied.remove().0,
                };
                self.used_bytes -= Self::cost_of(&previous);
                Some((previous, bucket))
            }
            Err(_) => {
                if let Some(pair) = pair {
                    self.insert_new(hash, pair);
                }
                None
            }
        }
    }

    /// Inserts a pair whose key is absent. An insert is the one thing that
    /// moves pairs between buckets (when the table grows or rehashes in
    /// place); a capture's scan then starts over.
    fn insert_new(&mut self, hash: u64, pair: StoredPair) {
        let growth_left = self.table.capacity() - self.table.len();
        let buckets = self.table.num_buckets();
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, pair, |stored| hasher.hash_one(stored.key()));
        let relocated = growth_left == 0
            && (self.table.num_buckets() != buckets || self.table.capacity() > self.table.len());
        if relocated && let Some(capture) = &mut self.capture {
            capture.cursor = 0;
            capture.restarts += 1;
        }
    }

    /// [`Self::replace`] when the caller drops what was there: a capture
    /// that still needs it keeps it. Returns whether something was there.
    fn replace_dropping(&mut self, key: &[u8], pair: Option<StoredPair>) -> bool {
        let Some((previous, bucket)) = self.replace(key, pair) else {
            return false;
        };
        if let Some(capture) = &mut self.capture
            && capture.wants(&previous, bucket)
        {
            capture.keep(previous);
        }
        true
    }

    /// Applies the logged operation of record `index` (on replay and on
    /// commit); each operation of a batch in order, all with write index
    /// `index`.
    pub fn apply(&mut self, index: u64, op: &Op<'_>) {
        match *op {
            Op::Put { key, value } => self.put(key, value, index),
            Op::Del { key } => {
                self.del(key);
            }
            Op::Batch(batch) => {
                for op in batch.iter() {
                    self.apply(index, &op);
                }
            }
            Op::Noop => {}
        }
    }

    /// Applies the operation of record `index` and returns what it replaced,
    /// so a leader can take back an uncommitted write if it is deposed.
    ///
    /// # Panics
    /// On a batch, which replaces one pair per operation: use
    /// [`Store::apply_batch_returning_previous`].
    pub fn apply_returning_previous(&mut self, index: u64, op: &Op<'_>) -> Option<StoredPair> {
        let (key, pair) = match *op {
            Op::Put { key, value } => (key, Some(StoredPair::new(key, value, index))),
            Op::Del { key } => (key, None),
            Op::Noop => return None,
            Op::Batch(_) => panic!("a batch replaces one pair per operation"),
        };
        self.replace_returning_previous(key, pair)
    }

    /// Applies the operations of batch record `index` in order, all with
    /// write index `index`, and hands `keep` each one's key and what it
    /// replaced, in the same order. Restoring them in reverse order (see
    /// [`Store::restore`]) takes the whole batch back, even where it writes
    /// a key twice.
    pub fn apply_batch_returning_previous(
        &mut self,
        index: u64,
        batch: Batch<'_>,
        mut keep: impl FnMut(&[u8], Option<StoredPair>),
    ) {
        for op in batch.iter() {
            let (Op::Put { key, .. } | Op::Del { key }) = op else {
                unreachable!("a batch holds only puts and dels");
            };
            keep(key, self.apply_returning_previous(index, &op));
        }
    }

    /// Sets `key` to `pair` (or removes it) and returns what was there; a
    /// capture that still needs it keeps a copy.
    fn replace_returning_previous(
        &mut self,
        key: &[u8],
        pair: Option<StoredPair>,
    ) -> Option<StoredPair> {
        let (previous, bucket) = self.replace(key, pair)?;
        if let Some(capture) = &mut self.capture
            && capture.wants(&previous, bucket)
        {
            capture.keep(previous.clone());
        }
        Some(previous)
    }

    /// Puts back what [`Self::apply_returning_previous`] returned for `key`.
    pub fn restore(&mut self, key: &[u8], previous: Option<StoredPair>) {
        // What is replaced was written after any capture's index.
        self.replace(key, previous);
    }

    /// Frees up to `max_pairs` pairs of a store that is being thrown away,
    /// from bucket `*cursor` on; returns true once it is empty. Freeing a
    /// large store at once would stall the loop for one free per key.
    pub fn free_some(&mut self, cursor: &mut usize, max_pairs: usize) -> bool {
        let mut freed = 0;
        while freed < max_pairs && *cursor < self.table.num_buckets() {
            if let Ok(entry) = self.table.get_bucket_entry(*cursor) {
                let (pair, _) = entry.remove();
                self.used_bytes -= Self::cost_of(&pair);
                freed += 1;
            }
            *cursor += 1;
        }
        self.table.is_empty()
    }

    /// Starts capturing the image as of write index `index`.
    pub fn begin_capture(&mut self, index: u64) {
        assert!(self.capture.is_none(), "one capture at a time");
        self.capture = Some(Capture {
            index,
            cursor: 0,
            preimages: Vec::new(),
            preimage_bytes: 0,
            restarts: 0,
        });
    }

    /// Adds a pair of the image that is not in the table (a leader's
    /// uncommitted write replaced it; the caller keeps it to undo).
    pub fn add_to_capture(&mut self, pair: &StoredPair) {
        let capture = self.capture.as_mut().expect("a capture is running");
        if pair.write_index() <= capture.index {
            capture.keep(pair.clone());
        }
    }

    /// Hands the next pairs of the image to `emit` (their bytes, see
    /// [`StoredPair::encoded`]) until about `max_bytes` went out or a bounded
    /// number of buckets was scanned. Returns true once the whole image has
    /// been handed out; the caller then ends the capture.
    pub fn capture_step(&mut self, max_bytes: usize, mut emit: impl FnMut(&[u8])) -> bool {
        let capture = self.capture.as_mut().expect("a capture is running");
        let mut emitted_bytes = 0;
        while emitted_bytes < max_bytes
            && let Some(pair) = capture.preimages.pop()
        {
            emit(pair.encoded());
            emitted_bytes += pair.encoded().len();
            capture.preimage_bytes -= pair.encoded().len();
        }
        let end = self.table.num_buckets();
        let scan_end = end.min(capture.cursor + MAX_SCAN_BUCKETS_PER_STEP);
        while capture.cursor < scan_end && emitted_bytes < max_bytes {
            if let Some(pair) = self.table.get_bucket(capture.cursor)
                && pair.write_index() <= capture.index
            {
                emit(pair.encoded());
                emitted_bytes += pair.encoded().len();
            }
            capture.cursor += 1;
        }
        capture.cursor == end && capture.preimages.is_empty()
    }

    /// Ends (or abandons) the capture.
    pub fn end_capture(&mut self) -> CaptureStats {
        let capture = self.capture.take().expect("a capture is running");
        CaptureStats {
            restarts: capture.restarts,
        }
    }

    /// The index of the image being captured, if one is.
    pub fn capture_index(&self) -> Option<u64> {
        self.capture.as_ref().map(|capture| capture.index)
    }

    /// Bytes of pre-images a capture holds (its memory beyond the table).
    pub fn capture_memory_bytes(&self) -> usize {
        self.capture
            .as_ref()
            .map_or(0, |capture| capture.preimage_bytes)
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
    use crate::log::BatchBuilder;

    /// What the accounting must say: the cost of every pair held.
    fn counted(store: &Store) -> usize {
        store
            .iter()
            .map(|(key, value)| Store::pair_cost(key.len(), value.len()))
            .sum()
    }

    #[test]
    fn used_bytes_follow_puts_overwrites_deletes_and_undo() {
        let mut store = Store::new();
        assert_eq!(store.used_bytes(), 0);
        store.put(b"k", b"value", 1);
        assert_eq!(
            store.used_bytes(),
            PAIR_HEADER_BYTES + 1 + 5 + PAIR_OVERHEAD_BYTES
        );
        assert_eq!(store.growth_if_put(b"k", 5), 0);
        assert_eq!(store.growth_if_put(b"k", 2), -3);
        assert_eq!(
            store.growth_if_put(b"new", 0),
            Store::pair_cost(3, 0) as isize
        );
        store.put(b"k", b"longer value", 2);
        store.put(b"other", b"", 3);
        assert_eq!(store.used_bytes(), counted(&store));
        let op = Op::Put {
            key: b"k",
            value: b"x",
        };
        let previous = store.apply_returning_previous(4, &op);
        assert_eq!(store.used_bytes(), counted(&store));
        store.restore(b"k", previous);
        assert_eq!(store.get(b"k"), Some(&b"longer value"[..]));
        assert_eq!(store.used_bytes(), counted(&store));
        assert!(store.del(b"k"));
        assert!(!store.del(b"k"));
        store.apply(5, &Op::Del { key: b"other" });
        assert_eq!(store.used_bytes(), 0);
    }

    /// Thousands of random puts, deletes and undos (while a capture runs,
    /// and after loading pairs): the count always matches the pairs held.
    #[test]
    fn used_bytes_match_the_pairs_after_random_operations() {
        let mut store = Store::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        store.begin_capture(100);
        for index in 1..5000u64 {
            let key = format!("key{}", next() % 300);
            let value = vec![b'v'; (next() % 200) as usize];
            match next() % 4 {
                0 => {
                    store.del(key.as_bytes());
                }
                1 => {
                    let op = Op::Put {
                        key: key.as_bytes(),
                        value: &value,
                    };
                    let previous = store.apply_returning_previous(index, &op);
                    if next() % 2 == 0 {
                        store.restore(key.as_bytes(), previous);
                    }
                }
                _ => store.put(key.as_bytes(), &value, index),
            }
            if index % 97 == 0 {
                store.capture_step(1024, |_| {});
            }
        }
        assert_eq!(store.used_bytes(), counted(&store));
        store.end_capture();
        let mut loaded = Store::new();
        for (key, value) in store.iter() {
            loaded.insert_loaded(StoredPair::new(key, value, 1));
            loaded.insert_loaded(StoredPair::new(key, value, 1));
        }
        assert_eq!(loaded.used_bytes(), store.used_bytes());
        let mut cursor = 0;
        while !loaded.free_some(&mut cursor, 50) {}
        assert_eq!(loaded.used_bytes(), 0);
    }

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

    /// A deterministic xorshift, for the model test.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    type Model = std::collections::BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

    fn model_of(store: &Store) -> Model {
        store
            .table
            .iter()
            .map(|pair| {
                let entry = (pair.value().to_vec(), pair.write_index());
                (pair.key().to_vec(), entry)
            })
            .collect()
    }

    /// Pairs a capture handed out; a pair handed out twice must be equal.
    fn collect(image: &mut Model, bytes: &[u8]) {
        let pair = StoredPair::from_encoded(bytes).expect("well formed");
        let entry = (pair.value().to_vec(), pair.write_index());
        if let Some(earlier) = image.insert(pair.key().to_vec(), entry.clone()) {
            assert_eq!(earlier, entry, "a pair handed out twice differs");
        }
    }

    /// One capture against a model: a leader that applies writes ahead of
    /// commit (undoably), commits some, takes back others, and inserts new
    /// keys (growing the table), while the image of its committed store is
    /// taken in small slices. The image must be exactly the store as of the
    /// capture's index.
    fn capture_while_writing(seed: u64, with_batches: bool) -> CaptureStats {
        let mut random = Random(seed | 1);
        let mut store = Store::new();
        let mut index = 0;
        let mut undo: std::collections::VecDeque<(u64, Vec<u8>, Option<StoredPair>)> =
            Default::default();
        let keyspace = 16 + random.below(3000);
        let write = |store: &mut Store,
                     undo: &mut std::collections::VecDeque<_>,
                     random: &mut Random,
                     index: &mut u64| {
            *index += 1;
            let index = *index;
            // With batches, a quarter of the records are batches of up to
            // four operations, which may write one key twice.
            let operations = if with_batches && random.below(4) == 0 {
                1 + random.below(4)
            } else {
                1
            };
            let mut batch = crate::log::BatchBuilder::new();
            for operation in 0..operations {
                // Half make new keys, so the table grows mid-capture.
                let key = if random.below(2) == 0 {
                    format!("new{index}.{operation}").into_bytes()
                } else {
                    format!("k{}", random.below(keyspace)).into_bytes()
                };
                let value = format!("v{index}").repeat(1 + random.below(4) as usize);
                if random.below(4) == 0 {
                    batch.push_del(&key);
                } else {
                    batch.push_put(&key, value.as_bytes());
                }
            }
            let keep = |key: &[u8], previous| undo.push_back((index, key.to_vec(), previous));
            match batch.op() {
                Op::Batch(batch) if operations > 1 => {
                    store.apply_batch_returning_previous(index, batch, keep)
                }
                Op::Batch(batch) => {
                    let op = batch.iter().next().expect("one operation");
                    let previous = store.apply_returning_previous(index, &op);
                    let (Op::Put { key, .. } | Op::Del { key }) = op else {
                        unreachable!("a batch holds puts and dels");
                    };
                    undo.push_back((index, key.to_vec(), previous));
                }
                op => unreachable!("a builder makes batches: {op:?}"),
            }
        };
        for _ in 0..random.below(4000) {
            write(&mut store, &mut undo, &mut random, &mut index);
        }
        // Commit all but the last few; the capture takes the committed image.
        let uncommitted = random.below(20) as usize;
        while undo.len() > uncommitted {
            commit_oldest(&mut undo);
        }
        let commit = undo.front().map_or(index, |(first, _, _)| first - 1);
        let mut committed = store_without(&store, &undo);
        let expected = model_of(&committed);
        store.begin_capture(commit);
        for (_, _, previous) in &undo {
            if let Some(previous) = previous {
                store.add_to_capture(previous);
            }
        }
        let mut image = Model::new();
        loop {
            let max_bytes = 1 + random.below(400) as usize;
            if store.capture_step(max_bytes, |bytes| collect(&mut image, bytes)) {
                break;
            }
            for _ in 0..random.below(8) {
                match random.below(10) {
                    0 => {
                        while let Some((_, key, previous)) = undo.pop_back() {
                            store.restore(&key, previous);
                        }
                    }
                    1 | 2 => commit_oldest(&mut undo),
                    _ => write(&mut store, &mut undo, &mut random, &mut index),
                }
            }
        }
        let stats = store.end_capture();
        assert!(image.values().all(|(_, at)| *at <= commit));
        assert_eq!(
            image, expected,
            "seed {seed}: the image is the store as of {commit}"
        );
        committed.begin_capture(commit);
        let mut again = Model::new();
        while !committed.capture_step(usize::MAX, |bytes| collect(&mut again, bytes)) {}
        assert_eq!(again, expected, "an undisturbed capture agrees");
        stats
    }

    /// Commits the oldest record in `undo`: every operation of it, as the
    /// core does (a batch is committed whole).
    fn commit_oldest(undo: &mut std::collections::VecDeque<(u64, Vec<u8>, Option<StoredPair>)>) {
        let Some((oldest, _, _)) = undo.pop_front() else {
            return;
        };
        while undo.front().is_some_and(|(index, _, _)| *index == oldest) {
            undo.pop_front();
        }
    }

    /// The store with the uncommitted writes in `undo` taken back.
    fn store_without(
        store: &Store,
        undo: &std::collections::VecDeque<(u64, Vec<u8>, Option<StoredPair>)>,
    ) -> Store {
        let mut copy = Store::new();
        for pair in store.table.iter() {
            copy.insert_loaded(pair.clone());
        }
        for (_, key, previous) in undo.iter().rev() {
            copy.restore(key, previous.clone());
        }
        copy
    }

    #[test]
    fn a_capture_is_exact_while_writes_undo_and_growth_go_on() {
        let mut restarts = 0;
        for seed in 1..=300 {
            restarts += capture_while_writing(seed, false).restarts;
        }
        assert!(
            restarts > 25,
            "growth during captures should restart many scans: {restarts}"
        );
    }

    /// The same with batch records among the writes: each operation is
    /// kept and taken back like a write of its own, under the batch's one
    /// index, and a batch commits whole.
    #[test]
    fn a_capture_is_exact_while_batches_undo_and_growth_go_on() {
        let mut restarts = 0;
        for seed in 1..=300 {
            restarts += capture_while_writing(seed, true).restarts;
        }
        assert!(
            restarts > 15,
            "growth during captures should restart many scans: {restarts}"
        );
    }

    #[test]
    fn a_store_is_freed_a_slice_at_a_time() {
        let mut store = Store::new();
        for index in 0..1000u32 {
            store.put(&index.to_le_bytes(), b"v", 1);
        }
        let mut cursor = 0;
        let mut steps = 0;
        while !store.free_some(&mut cursor, 100) {
            steps += 1;
            assert!(store.len() >= 1000 - 100 * steps, "at most 100 per step");
        }
        assert_eq!((store.len(), steps), (0, 9));
    }

    #[test]
    fn loading_tolerates_a_pair_handed_out_twice() {
        let mut store = Store::with_capacity(4);
        let pair = StoredPair::new(b"k", b"v", 3);
        store.insert_loaded(pair.clone());
        store.insert_loaded(pair);
        assert_eq!(store.len(), 1);
        assert_eq!(store.lookup(b"k").map(StoredPair::write_index), Some(3));
    }

    #[test]
    fn a_pair_reads_back_from_its_bytes_only_when_well_formed() {
        let pair = StoredPair::new(b"key", b"value", 9);
        assert_eq!(StoredPair::from_encoded(pair.encoded()), Some(pair.clone()));
        assert_eq!(StoredPair::from_encoded(&pair.encoded()[..5]), None);
        let mut bad = pair.encoded().to_vec();
        bad[0] = 200;
        assert_eq!(
            StoredPair::from_encoded(&bad),
            None,
            "key length past the end"
        );
    }

    #[test]
    fn a_capture_keeps_replaced_pairs_until_handed_out() {
        let mut store = Store::new();
        for index in 1..=100u64 {
            store.put(&index.to_le_bytes(), &[7; 50], index);
        }
        store.begin_capture(100);
        for index in 1..=100u64 {
            store.put(&index.to_le_bytes(), b"new", 100 + index);
        }
        assert!(
            store.capture_memory_bytes() > 100 * 50,
            "every pair kept aside"
        );
        let mut image = Model::new();
        while !store.capture_step(1000, |bytes| collect(&mut image, bytes)) {}
        store.end_capture();
        assert_eq!(image.len(), 100);
        assert!(image.values().all(|(value, _)| value == &[7; 50]));
        assert_eq!(store.capture_memory_bytes(), 0);
    }

    /// A batch of puts (a value) and dels (none), in its builder.
    fn batch_of(ops: &[(&[u8], Option<&[u8]>)]) -> BatchBuilder {
        let mut builder = BatchBuilder::new();
        for (key, value) in ops {
            match value {
                Some(value) => builder.push_put(key, value),
                None => builder.push_del(key),
            }
        }
        builder
    }

    fn pair_at(store: &Store, key: &[u8]) -> Option<(Vec<u8>, u64)> {
        let pair = store.lookup(key)?;
        Some((pair.value().to_vec(), pair.write_index()))
    }

    #[test]
    fn a_batch_applies_every_operation_with_its_index() {
        let mut store = Store::new();
        store.put(b"a", b"old", 1);
        store.put(b"gone", b"x", 2);
        store.put(b"kept", b"y", 3);
        let batch = batch_of(&[
            (b"a", Some(b"1")),
            (b"gone", None),
            (b"\r\n\x00b", Some(b"\x00\r\n")),
            (b"a", Some(b"2")),
        ]);
        store.apply(7, &batch.op());
        assert_eq!(pair_at(&store, b"a"), Some((b"2".to_vec(), 7)));
        assert_eq!(
            pair_at(&store, b"\r\n\x00b"),
            Some((b"\x00\r\n".to_vec(), 7))
        );
        assert_eq!(pair_at(&store, b"gone"), None);
        assert_eq!(pair_at(&store, b"kept"), Some((b"y".to_vec(), 3)));
        assert_eq!(store.len(), 3);
        assert_eq!(store.used_bytes(), counted(&store));
    }

    #[test]
    fn a_batch_is_taken_back_in_reverse_order() {
        let mut store = Store::new();
        store.put(b"a", b"old", 1);
        store.put(b"gone", b"x", 2);
        let before = model_of(&store);
        let used_before = store.used_bytes();
        let batch = batch_of(&[
            (b"a", Some(b"1")),
            (b"gone", None),
            (b"b", Some(b"2")),
            (b"a", Some(b"3")),
            (b"a", None),
        ]);
        let Op::Batch(batch) = batch.op() else {
            unreachable!("a builder makes batches");
        };
        let mut kept = Vec::new();
        store.apply_batch_returning_previous(7, batch, |key, previous| {
            kept.push((key.to_vec(), previous));
        });
        let replaced: Vec<_> = kept
            .iter()
            .map(|(key, previous)| {
                let previous = previous.as_ref();
                let pair = previous.map(|pair| (pair.value().to_vec(), pair.write_index()));
                (key.as_slice(), pair)
            })
            .collect();
        let expected: Vec<(&[u8], _)> = vec![
            (b"a", Some((b"old".to_vec(), 1))),
            (b"gone", Some((b"x".to_vec(), 2))),
            (b"b", None),
            (b"a", Some((b"1".to_vec(), 7))),
            (b"a", Some((b"3".to_vec(), 7))),
        ];
        assert_eq!(replaced, expected);
        assert_eq!(
            (pair_at(&store, b"a"), pair_at(&store, b"gone")),
            (None, None)
        );
        assert_eq!(pair_at(&store, b"b"), Some((b"2".to_vec(), 7)));
        while let Some((key, previous)) = kept.pop() {
            store.restore(&key, previous);
        }
        assert_eq!(model_of(&store), before);
        assert_eq!(store.used_bytes(), used_before);
    }

    #[test]
    #[should_panic(expected = "a batch replaces one pair per operation")]
    fn a_batch_is_not_applied_as_one_write_to_take_back() {
        let batch = batch_of(&[(b"k", Some(b"v"))]);
        Store::new().apply_returning_previous(1, &batch.op());
    }

    #[test]
    fn growth_if_batch_is_an_upper_bound() {
        let mut store = Store::new();
        store.put(b"a", b"12345", 1);
        store.put(b"d", b"123", 1);
        let batch = batch_of(&[
            (b"a", Some(b"1")),
            (b"n", Some(b"xyz")),
            (b"d", None),
            (b"n", Some(b"xyz")),
        ]);
        let Op::Batch(parsed) = batch.op() else {
            unreachable!("a builder makes batches");
        };
        // The shrinking put and the delete count for nothing; the new key
        // counts twice.
        let bound = 2 * Store::pair_cost(1, 3) as isize;
        assert_eq!(store.growth_if_batch(&parsed), bound);
        let used_before = store.used_bytes() as isize;
        store.apply(2, &batch.op());
        assert!(store.used_bytes() as isize - used_before <= bound);
        let only_shrinks = batch_of(&[(b"a", Some(b"")), (b"n", None)]);
        let Op::Batch(parsed) = only_shrinks.op() else {
            unreachable!("a builder makes batches");
        };
        assert_eq!(store.growth_if_batch(&parsed), 0);
    }

    /// A follower applies a committed batch while a capture of the index
    /// before it runs: the batch replaces, removes and (growing the table)
    /// adds pairs, yet the image is exactly the store before the batch.
    #[test]
    fn a_batch_applied_mid_capture_leaves_the_image_exact() {
        let mut store = Store::new();
        for index in 1..=100u64 {
            store.put(format!("k{index}").as_bytes(), &[7; 50], index);
        }
        let expected = model_of(&store);
        store.begin_capture(100);
        let mut image = Model::new();
        assert!(!store.capture_step(500, |bytes| collect(&mut image, bytes)));
        let mut batch = BatchBuilder::new();
        for index in 1..=100u64 {
            let key = format!("k{index}");
            match index % 3 {
                0 => batch.push_del(key.as_bytes()),
                _ => batch.push_put(key.as_bytes(), b"new"),
            }
        }
        for index in 0..1000u64 {
            batch.push_put(format!("grow{index}").as_bytes(), b"g");
        }
        store.apply(101, &batch.op());
        while !store.capture_step(500, |bytes| collect(&mut image, bytes)) {}
        let stats = store.end_capture();
        assert!(stats.restarts > 0, "the batch grew the table mid-capture");
        assert_eq!(image, expected);
        assert_eq!(store.len(), 100 - 33 + 1000);
    }

    #[test]
    fn a_same_length_overwrite_is_exact_in_place_and_during_a_capture() {
        let mut store = Store::new();
        store.put(b"k", b"aaa", 1);
        let used = store.used_bytes();
        store.put(b"k", b"bbb", 2);
        assert_eq!(store.get(b"k"), Some(&b"bbb"[..]));
        assert_eq!(store.lookup(b"k").map(StoredPair::write_index), Some(2));
        assert_eq!(store.used_bytes(), used);
        // A capture as of index 2 must still hand out bbb, not what a
        // later same-length write puts there.
        store.begin_capture(2);
        store.put(b"k", b"ccc", 3);
        let mut image = Vec::new();
        while !store.capture_step(1 << 20, |bytes| image.push(bytes.to_vec())) {}
        store.end_capture();
        let pairs: Vec<_> = image
            .iter()
            .map(|bytes| StoredPair::from_encoded(bytes).expect("a pair"))
            .map(|pair| (pair.value().to_vec(), pair.write_index()))
            .collect();
        assert_eq!(pairs, [(b"bbb".to_vec(), 2)]);
        assert_eq!(store.get(b"k"), Some(&b"ccc"[..]));
    }

    #[test]
    fn prefetch_takes_any_keys_and_changes_nothing() {
        let mut store = Store::new();
        store.prefetch(&[b"missing", b""]);
        for index in 0..200u64 {
            store.put(format!("k{index}").as_bytes(), b"v", index);
        }
        let names: Vec<String> = (0..100).map(|index| format!("k{}", index * 3)).collect();
        let keys: Vec<&[u8]> = names.iter().map(String::as_bytes).collect();
        store.prefetch(&keys);
        assert_eq!(store.len(), 200);
        assert_eq!(store.get(b"k3"), Some(&b"v"[..]));
        assert_eq!(
            store.lookup(b"k199").map(StoredPair::write_index),
            Some(199)
        );
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
