//! A hashed timer wheel: the event loop's deadlines (fsync interval,
//! idle-client timeouts, heartbeats, election timeouts) and its poll timeout.
//!
//! # What it owns
//!
//! Every armed timer and its value `T`. Entries live in a [`Slab`]; each one is
//! linked into exactly one intrusive doubly-linked list (previous/next slab
//! keys): either the list of wheel slot `deadline_ms % SLOT_COUNT`, or the
//! overdue list for timers whose deadline had already passed when inserted.
//! Insert and cancel are O(1) and allocate nothing once the slab has grown to
//! its working size. One slot is one millisecond; one rotation is
//! [`SLOT_COUNT`] milliseconds.
//!
//! # Invariants
//!
//! - `elapsed_ms` is the latest time given to [`TimerWheel::new`] or
//!   [`TimerWheel::expire`]; every timer with a deadline at or before it has
//!   fired, except those in the overdue list.
//! - A wheel entry has `deadline_ms > elapsed_ms` and sits in slot
//!   `deadline_ms & SLOT_MASK`; an overdue entry has `deadline_ms <= elapsed_ms`.
//!   Timers more than a rotation ahead keep their absolute deadline and are
//!   skipped by each pass over their slot until the pass in which they are due.
//! - Bit `s` of `occupied_slots` is set exactly when slot `s`'s list is non-empty.
//! - `overdue_earliest_ms` is at most every overdue deadline (`u64::MAX` when
//!   the overdue list is empty).
//! - A [`TimerId`] carries the generation of the timer it named; generations
//!   are never reused, so a stale id cannot touch a timer in a reused slab slot.
//!
//! # Time
//!
//! This module never reads a clock. Time is the caller's `now_ms`: monotonic
//! milliseconds. A `now_ms` earlier than one already seen is treated as the
//! one already seen.

use std::fmt;

use slab::Slab;

/// Number of one-millisecond slots in the wheel: one rotation is this many ms.
pub const SLOT_COUNT: usize = 512;
const SLOT_MASK: usize = SLOT_COUNT - 1;
const BITMAP_WORD_BITS: usize = 64;
const BITMAP_WORDS: usize = SLOT_COUNT / BITMAP_WORD_BITS;
/// Index of the overdue list in `list_heads`, after the wheel slots.
const OVERDUE_LIST: usize = SLOT_COUNT;

const _: () = assert!(SLOT_COUNT.is_power_of_two() && SLOT_COUNT.is_multiple_of(BITMAP_WORD_BITS));

/// Names one armed timer. Stays invalid forever once that timer has fired or
/// been cancelled, even after its slab slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    generation: u64,
}

struct Entry<T> {
    deadline_ms: u64,
    generation: u64,
    /// A slot index, or `OVERDUE_LIST`.
    list: usize,
    previous: Option<usize>,
    next: Option<usize>,
    value: T,
}

/// A hashed timer wheel with millisecond resolution. See the module docs.
pub struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    /// First entry of each slot's list, then of the overdue list.
    list_heads: [Option<usize>; SLOT_COUNT + 1],
    occupied_slots: [u64; BITMAP_WORDS],
    elapsed_ms: u64,
    overdue_earliest_ms: u64,
    next_generation: u64,
}

fn slot_of(time_ms: u64) -> usize {
    // Truncation is intended: only the low bits select the slot.
    time_ms as usize & SLOT_MASK
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose time starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// An empty wheel with room for `capacity` timers before it allocates.
    pub fn with_capacity(now_ms: u64, capacity: usize) -> Self {
        Self {
            entries: Slab::with_capacity(capacity),
            list_heads: [None; SLOT_COUNT + 1],
            occupied_slots: [0; BITMAP_WORDS],
            elapsed_ms: now_ms,
            overdue_earliest_ms: u64::MAX,
            next_generation: 0,
        }
    }

    /// Arms a timer. O(1). A deadline at or before the wheel's current time
    /// fires on the next [`expire`](Self::expire), whatever its `now_ms`.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let list = if deadline_ms <= self.elapsed_ms {
            self.overdue_earliest_ms = self.overdue_earliest_ms.min(deadline_ms);
            OVERDUE_LIST
        } else {
            slot_of(deadline_ms)
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let key = self.entries.insert(Entry {
            deadline_ms,
            generation,
            list,
            previous: None,
            next: None,
            value,
        });
        self.link_at_front(key);
        TimerId { key, generation }
    }

    /// Disarms a timer and returns its value. O(1). `None` if it already
    /// fired, was cancelled, or `id` is stale.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.entry(id)?;
        Some(self.unlink_and_remove(id.key))
    }

    /// The deadline of an armed timer; `None` if it fired or was cancelled.
    pub fn deadline_ms(&self, id: TimerId) -> Option<u64> {
        self.entry(id).map(|entry| entry.deadline_ms)
    }

    /// A lower bound on the earliest armed deadline, for the poll timeout:
    /// never later than the true earliest deadline, exact when that timer is
    /// less than a rotation ahead and alone in the first non-empty slot.
    /// With only far-future timers it is the next pass over their slot, at
    /// most one rotation ahead. `None` when no timer is armed.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.list_heads[OVERDUE_LIST].is_some() {
            return Some(self.overdue_earliest_ms);
        }
        // Every wheel deadline is after `elapsed_ms` and in an occupied slot,
        // so the first such time with an occupied slot is no later than it.
        let first_slot = slot_of(self.elapsed_ms.wrapping_add(1));
        let distance = self.first_occupied_distance(first_slot)?;
        Some(self.elapsed_ms.saturating_add(1 + distance as u64))
    }

    /// Moves the wheel's time to `now_ms` and pushes onto `fired` the value of
    /// every timer with deadline <= `now_ms`, each exactly once. Order is
    /// overdue timers first, then by slot; not strictly by deadline. Visits
    /// at most one rotation of slots however far `now_ms` jumps, and only the
    /// occupied ones.
    pub fn expire(&mut self, now_ms: u64, fired: &mut Vec<T>) {
        self.fire_overdue(fired);
        if now_ms <= self.elapsed_ms {
            return;
        }
        // Times elapsed_ms+1 ..= now_ms. If that spans a rotation or more,
        // every slot is visited once, firing whatever in it is due.
        let span_slots = (now_ms - self.elapsed_ms).min(SLOT_COUNT as u64) as usize;
        let first_slot = slot_of(self.elapsed_ms + 1);
        let mut offset = 0;
        while offset < span_slots {
            let position = (first_slot + offset) & SLOT_MASK;
            let Some(distance) = self.first_occupied_distance(position) else {
                break;
            };
            offset += distance;
            if offset >= span_slots {
                break;
            }
            self.fire_slot((first_slot + offset) & SLOT_MASK, now_ms, fired);
            offset += 1;
        }
        self.elapsed_ms = now_ms;
    }

    /// The latest time the wheel has been moved to.
    pub fn now_ms(&self) -> u64 {
        self.elapsed_ms
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&self, id: TimerId) -> Option<&Entry<T>> {
        self.entries
            .get(id.key)
            .filter(|entry| entry.generation == id.generation)
    }

    fn fire_overdue(&mut self, fired: &mut Vec<T>) {
        while let Some(key) = self.list_heads[OVERDUE_LIST] {
            fired.push(self.unlink_and_remove(key));
        }
    }

    /// Fires the due entries of one slot; later rotations stay linked.
    fn fire_slot(&mut self, slot: usize, now_ms: u64, fired: &mut Vec<T>) {
        let mut cursor = self.list_heads[slot];
        while let Some(key) = cursor {
            let entry = &self.entries[key];
            cursor = entry.next;
            if entry.deadline_ms <= now_ms {
                fired.push(self.unlink_and_remove(key));
            }
        }
    }

    fn link_at_front(&mut self, key: usize) {
        let list = self.entries[key].list;
        let old_head = self.list_heads[list];
        self.entries[key].next = old_head;
        if let Some(old_head) = old_head {
            self.entries[old_head].previous = Some(key);
        }
        self.list_heads[list] = Some(key);
        if list != OVERDUE_LIST {
            self.occupied_slots[list / BITMAP_WORD_BITS] |= 1 << (list % BITMAP_WORD_BITS);
        }
    }

    fn unlink_and_remove(&mut self, key: usize) -> T {
        let entry = self.entries.remove(key);
        match entry.previous {
            Some(previous) => self.entries[previous].next = entry.next,
            None => self.list_heads[entry.list] = entry.next,
        }
        if let Some(next) = entry.next {
            self.entries[next].previous = entry.previous;
        }
        if self.list_heads[entry.list].is_none() {
            self.mark_list_empty(entry.list);
        }
        entry.value
    }

    fn mark_list_empty(&mut self, list: usize) {
        if list == OVERDUE_LIST {
            self.overdue_earliest_ms = u64::MAX;
        } else {
            self.occupied_slots[list / BITMAP_WORD_BITS] &= !(1 << (list % BITMAP_WORD_BITS));
        }
    }

    /// How many slots forward from `start_slot` (0 = itself, wrapping) the
    /// first occupied slot is; `None` if every slot is empty.
    fn first_occupied_distance(&self, start_slot: usize) -> Option<usize> {
        let start_word = start_slot / BITMAP_WORD_BITS;
        let start_bit = start_slot % BITMAP_WORD_BITS;
        let at_or_after_start = self.occupied_slots[start_word] & (u64::MAX << start_bit);
        if at_or_after_start != 0 {
            return Some(at_or_after_start.trailing_zeros() as usize - start_bit);
        }
        // The last step revisits the start word, whose bits from start_bit on
        // are known to be clear: only the wrapped-around ones can be set.
        for step in 1..=BITMAP_WORDS {
            let word_index = (start_word + step) % BITMAP_WORDS;
            let word = self.occupied_slots[word_index];
            if word != 0 {
                let slot = word_index * BITMAP_WORD_BITS + word.trailing_zeros() as usize;
                return Some((slot + SLOT_COUNT - start_slot) & SLOT_MASK);
            }
        }
        None
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TimerWheel")
            .field("len", &self.len())
            .field("elapsed_ms", &self.elapsed_ms)
            .field("next_deadline_ms", &self.next_deadline_ms())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const ROTATION_MS: u64 = SLOT_COUNT as u64;

    fn expire_sorted<T: Ord>(wheel: &mut TimerWheel<T>, now_ms: u64) -> Vec<T> {
        let mut fired = Vec::new();
        wheel.expire(now_ms, &mut fired);
        fired.sort();
        fired
    }

    #[test]
    fn timers_fire_exactly_at_their_deadlines() {
        let mut wheel = TimerWheel::new(0);
        let deadlines_ms = [10, 3, 7, 7, 500, 511, 512, 1_000];
        for (label, &deadline_ms) in deadlines_ms.iter().enumerate() {
            wheel.insert(deadline_ms, label);
        }
        let mut fire_times_ms = vec![None; deadlines_ms.len()];
        for now_ms in 0..=1_200 {
            for label in expire_sorted(&mut wheel, now_ms) {
                assert_eq!(fire_times_ms[label], None, "timer {label} fired twice");
                fire_times_ms[label] = Some(now_ms);
            }
        }
        let expected: Vec<_> = deadlines_ms.iter().map(|&ms| Some(ms)).collect();
        assert_eq!(fire_times_ms, expected);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_timer_does_not_fire_before_its_deadline_and_fires_at_it() {
        let mut wheel = TimerWheel::new(1_000);
        wheel.insert(1_100, "fsync");
        assert_eq!(wheel.next_deadline_ms(), Some(1_100));
        assert!(expire_sorted(&mut wheel, 1_099).is_empty());
        assert_eq!(wheel.len(), 1);
        assert_eq!(expire_sorted(&mut wheel, 1_100), vec!["fsync"]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline_ms(), None);
    }

    #[test]
    fn cancel_before_firing_returns_the_value_and_it_never_fires() {
        let mut wheel = TimerWheel::new(0);
        let idle = wheel.insert(50, "idle");
        let keep = wheel.insert(50, "keep");
        assert_eq!(wheel.deadline_ms(idle), Some(50));
        assert_eq!(wheel.cancel(idle), Some("idle"));
        assert_eq!(wheel.deadline_ms(idle), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(expire_sorted(&mut wheel, 10_000), vec!["keep"]);
        assert_eq!(wheel.cancel(keep), None);
    }

    #[test]
    fn cancel_after_firing_or_twice_returns_none() {
        let mut wheel = TimerWheel::new(0);
        let heartbeat = wheel.insert(5, 1);
        assert_eq!(expire_sorted(&mut wheel, 5), vec![1]);
        assert_eq!(wheel.cancel(heartbeat), None);
        let election = wheel.insert(9, 2);
        assert_eq!(wheel.cancel(election), Some(2));
        assert_eq!(wheel.cancel(election), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_stale_id_does_not_cancel_the_timer_reusing_its_slot() {
        let mut wheel = TimerWheel::new(0);
        let old = wheel.insert(20, "old");
        assert_eq!(wheel.cancel(old), Some("old"));
        let new = wheel.insert(20, "new");
        assert_eq!(new.key, old.key, "the slab should reuse the freed slot");
        assert_ne!(new, old);
        assert_eq!(wheel.cancel(old), None);
        assert_eq!(wheel.deadline_ms(old), None);
        assert_eq!(wheel.len(), 1);

        let fired = wheel.insert(3, "fired");
        assert_eq!(expire_sorted(&mut wheel, 3), vec!["fired"]);
        let reuser = wheel.insert(30, "reuser");
        assert_eq!(reuser.key, fired.key);
        assert_eq!(wheel.cancel(fired), None);
        assert_eq!(expire_sorted(&mut wheel, 30), vec!["new", "reuser"]);
    }

    /// Drives the wheel like the event loop: sleep until `next_deadline_ms`,
    /// then expire. Checks the lower bound at every step and that every timer
    /// fires at exactly its deadline.
    fn drive_by_next_deadline(wheel: &mut TimerWheel<u64>, mut remaining_ms: Vec<u64>) {
        remaining_ms.sort_unstable();
        while let Some(next_ms) = wheel.next_deadline_ms() {
            assert!(
                next_ms <= remaining_ms[0],
                "{next_ms} > {}",
                remaining_ms[0]
            );
            assert!(next_ms > wheel.now_ms(), "no progress at {next_ms}");
            for deadline_ms in expire_sorted(wheel, next_ms) {
                assert_eq!(deadline_ms, next_ms, "fired at the wrong time");
                assert_eq!(remaining_ms.remove(0), deadline_ms);
            }
        }
        assert!(remaining_ms.is_empty());
    }

    #[test]
    fn timers_many_rotations_ahead_fire_exactly_at_their_deadlines() {
        let start_ms = 1_000;
        let ten_minutes_ms = 10 * 60 * 1_000;
        let mut wheel = TimerWheel::new(start_ms);
        let deadlines_ms = vec![
            start_ms + ten_minutes_ms,
            start_ms + ten_minutes_ms + 1,
            start_ms + ten_minutes_ms + ROTATION_MS,
            start_ms + 10 * ROTATION_MS,
            start_ms + ROTATION_MS,
            start_ms + ROTATION_MS - 1,
            start_ms + 2,
        ];
        for &deadline_ms in &deadlines_ms {
            wheel.insert(deadline_ms, deadline_ms);
        }
        drive_by_next_deadline(&mut wheel, deadlines_ms);
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_timers_do_not_fire_early_when_time_moves_in_steps() {
        let mut wheel = TimerWheel::new(0);
        let deadline_ms = 7 * ROTATION_MS + 13;
        wheel.insert(deadline_ms, ());
        for now_ms in (0..deadline_ms).step_by(97) {
            assert!(
                expire_sorted(&mut wheel, now_ms).is_empty(),
                "early at {now_ms}"
            );
            assert!(wheel.next_deadline_ms().unwrap() <= deadline_ms);
        }
        assert!(expire_sorted(&mut wheel, deadline_ms - 1).is_empty());
        assert_eq!(expire_sorted(&mut wheel, deadline_ms), vec![()]);
    }

    #[test]
    fn a_jump_of_hours_fires_everything_due_exactly_once() {
        let hour_ms = 3_600_000;
        let mut wheel = TimerWheel::new(0);
        // Deadlines spread over three hours, in every slot and many rotations.
        let deadlines_ms: Vec<u64> = (0..3_000u64)
            .map(|i| 1 + i * 3_599 % (3 * hour_ms))
            .collect();
        for &deadline_ms in &deadlines_ms {
            wheel.insert(deadline_ms, deadline_ms);
        }
        let mut expected_due: Vec<u64> = deadlines_ms
            .iter()
            .copied()
            .filter(|&ms| ms <= 2 * hour_ms)
            .collect();
        expected_due.sort_unstable();
        assert_eq!(expire_sorted(&mut wheel, 2 * hour_ms), expected_due);
        assert_eq!(wheel.len(), deadlines_ms.len() - expected_due.len());
        assert!(expire_sorted(&mut wheel, 2 * hour_ms).is_empty());
        assert!(wheel.next_deadline_ms().unwrap() <= 2 * hour_ms + ROTATION_MS);
        let rest = expire_sorted(&mut wheel, 5 * hour_ms);
        assert_eq!(rest.len() + expected_due.len(), deadlines_ms.len());
        assert!(rest.iter().all(|&ms| ms > 2 * hour_ms));
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_expire() {
        let mut wheel = TimerWheel::new(0);
        wheel.expire(1_000, &mut Vec::new());
        wheel.insert(1_200, "future");
        wheel.insert(5, "long past");
        wheel.insert(1_000, "now");
        assert_eq!(wheel.next_deadline_ms(), Some(5));
        // Even an expire at the same (or an earlier) time fires them.
        assert_eq!(expire_sorted(&mut wheel, 999), vec!["long past", "now"]);
        assert_eq!(wheel.next_deadline_ms(), Some(1_200));
        let cancelled = wheel.insert(7, "cancelled");
        assert_eq!(wheel.cancel(cancelled), Some("cancelled"));
        assert_eq!(wheel.next_deadline_ms(), Some(1_200));
    }

    #[test]
    fn deadlines_near_the_end_of_time_do_not_overflow() {
        let mut wheel = TimerWheel::new(u64::MAX - 10);
        wheel.insert(u64::MAX, "last");
        wheel.insert(u64::MAX - 20, "past");
        assert_eq!(wheel.next_deadline_ms(), Some(u64::MAX - 20));
        assert_eq!(expire_sorted(&mut wheel, u64::MAX - 1), vec!["past"]);
        assert_eq!(wheel.next_deadline_ms(), Some(u64::MAX));
        assert_eq!(expire_sorted(&mut wheel, u64::MAX), vec!["last"]);
        assert_eq!(wheel.next_deadline_ms(), None);
    }

    /// xorshift64: enough randomness for a reproducible model test.
    struct XorShift(u64);

    impl XorShift {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next_u64() % bound.max(1)
        }
    }

    /// The model: armed timers keyed by (deadline, label), with their ids.
    struct Model {
        wheel: TimerWheel<u64>,
        armed: BTreeMap<(u64, u64), TimerId>,
        dead_ids: Vec<TimerId>,
        now_ms: u64,
        next_label: u64,
    }

    impl Model {
        fn insert(&mut self, random: &mut XorShift) {
            let deadline_ms = match random.below(10) {
                0 => self.now_ms.saturating_sub(random.below(2_000)),
                1..=6 => self.now_ms + random.below(2 * ROTATION_MS),
                7 | 8 => self.now_ms + random.below(20 * ROTATION_MS),
                _ => self.now_ms + random.below(3_600_000),
            };
            let label = self.next_label;
            self.next_label += 1;
            let id = self.wheel.insert(deadline_ms, label);
            self.armed.insert((deadline_ms, label), id);
        }

        fn cancel(&mut self, random: &mut XorShift) {
            if random.below(4) == 0 && !self.dead_ids.is_empty() {
                let stale = self.dead_ids[random.below(self.dead_ids.len() as u64) as usize];
                assert_eq!(self.wheel.cancel(stale), None);
                return;
            }
            let Some(index) =
                (!self.armed.is_empty()).then(|| random.below(self.armed.len() as u64))
            else {
                return;
            };
            let (&(deadline_ms, label), &id) = self.armed.iter().nth(index as usize).unwrap();
            assert_eq!(self.wheel.cancel(id), Some(label));
            self.armed.remove(&(deadline_ms, label));
            self.dead_ids.push(id);
        }

        fn expire(&mut self, random: &mut XorShift) {
            self.now_ms += match random.below(20) {
                0 => 0,
                1..=15 => random.below(20),
                16..=18 => random.below(3 * ROTATION_MS),
                _ => random.below(10_000_000),
            };
            let still_armed = self.armed.split_off(&(self.now_ms + 1, 0));
            let due = std::mem::replace(&mut self.armed, still_armed);
            let mut expected: Vec<u64> = due.keys().map(|&(_, label)| label).collect();
            expected.sort_unstable();
            assert_eq!(
                expire_sorted(&mut self.wheel, self.now_ms),
                expected,
                "at {}",
                self.now_ms
            );
            self.dead_ids.extend(due.values());
        }

        fn check(&self) {
            assert_eq!(self.wheel.len(), self.armed.len());
            assert_eq!(self.wheel.is_empty(), self.armed.is_empty());
            let earliest_ms = self
                .armed
                .keys()
                .next()
                .map(|&(deadline_ms, _)| deadline_ms);
            match (self.wheel.next_deadline_ms(), earliest_ms) {
                (None, None) => {}
                (Some(bound_ms), Some(earliest_ms)) => assert!(bound_ms <= earliest_ms),
                (bound, earliest) => panic!("next_deadline_ms {bound:?}, earliest {earliest:?}"),
            }
        }
    }

    #[test]
    fn matches_a_brute_force_model_under_random_operations() {
        for seed in [0x9E37_79B9_7F4A_7C15u64, 1, 0xDEAD_BEEF, 42] {
            let mut random = XorShift(seed);
            let now_ms = random.below(1 << 40);
            let mut model = Model {
                wheel: TimerWheel::new(now_ms),
                armed: BTreeMap::new(),
                dead_ids: Vec::new(),
                now_ms,
                next_label: 0,
            };
            for _ in 0..10_000 {
                match random.below(100) {
                    0..45 => model.insert(&mut random),
                    45..65 => model.cancel(&mut random),
                    _ => model.expire(&mut random),
                }
                model.check();
            }
        }
    }
}
