//! What to send: key names, the seeded PRNG that picks keys and operations,
//! and the [`Source`] each phase draws its requests from.
//!
//! Nothing here allocates per request: a key is formatted into a fixed-size
//! array, and a draw is two xorshift steps.

/// Every key starts with this.
pub const KEY_PREFIX: &[u8] = b"key:";
/// Decimal digits after the prefix, zero-padded: `key:00001234`.
pub const KEY_DIGITS: usize = 8;
/// The length of every key, in bytes.
pub const KEY_LENGTH: usize = KEY_PREFIX.len() + KEY_DIGITS;
/// The largest keyspace the fixed-width key names can cover.
pub const MAX_KEYSPACE: u64 = 100_000_000;

/// A request kind the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
}

/// The name of key number `index`, e.g. `key:00001234`, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; KEY_LENGTH]);

impl Key {
    /// Formats key `index`; `index` must be below [`MAX_KEYSPACE`].
    pub fn new(index: u64) -> Key {
        debug_assert!(index < MAX_KEYSPACE, "key index {index} out of range");
        let mut bytes = [b'0'; KEY_LENGTH];
        bytes[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX);
        let mut rest = index;
        for digit in bytes[KEY_PREFIX.len()..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A xorshift64 generator: fast, tiny, and deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Xorshift {
    state: u64,
}

impl Xorshift {
    /// The generator of connection `stream` for `seed`: every connection
    /// draws its own reproducible sequence.
    pub fn new(seed: u64, stream: u64) -> Xorshift {
        let mixed = splitmix64(seed ^ splitmix64(stream));
        // Zero is xorshift's one fixed point.
        Xorshift {
            state: if mixed == 0 {
                ZERO_STATE_REPLACEMENT
            } else {
                mixed
            },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut state = self.state;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.state = state;
        state
    }

    /// A value in `0..bound` (multiply-shift: no division, bias below 2^-32
    /// for any bound this tool accepts).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

const ZERO_STATE_REPLACEMENT: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: spreads nearby seeds over the whole state space.
fn splitmix64(value: u64) -> u64 {
    let mut mixed = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

/// The random mix of the measured run: which operation, which key.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// A draw below this (out of 2^64) is a GET.
    get_threshold: u128,
    keyspace: u64,
}

impl Mix {
    /// `get_ratio` in `0.0..=1.0`; `keyspace` in `1..=MAX_KEYSPACE`.
    pub fn new(get_ratio: f64, keyspace: u64) -> Mix {
        let scale = (u64::MAX as f64) + 1.0;
        Mix {
            get_threshold: (get_ratio.clamp(0.0, 1.0) * scale) as u128,
            keyspace,
        }
    }

    pub fn draw(&self, random: &mut Xorshift) -> (Operation, u64) {
        let operation = if u128::from(random.next_u64()) < self.get_threshold {
            Operation::Get
        } else {
            Operation::Put
        };
        (operation, random.below(self.keyspace))
    }
}

/// Where a phase's requests come from, shared by every connection.
#[derive(Debug)]
pub enum Source {
    /// A PUT of every key in `next..end`, in order (the preload).
    Sequential { next: u64, end: u64 },
    /// Random draws from `mix` until stopped, or until `remaining` runs out.
    Mixed {
        mix: Mix,
        remaining: Option<u64>,
        stopped: bool,
    },
}

impl Source {
    pub fn preload(keyspace: u64) -> Source {
        Source::Sequential {
            next: 0,
            end: keyspace,
        }
    }

    /// Random requests, `limit` of them or, with `None`, until [`Source::stop`].
    pub fn mixed(mix: Mix, limit: Option<u64>) -> Source {
        Source::Mixed {
            mix,
            remaining: limit,
            stopped: false,
        }
    }

    /// The next request to send, or `None` once the phase sends no more.
    pub fn next(&mut self, random: &mut Xorshift) -> Option<(Operation, u64)> {
        match self {
            Source::Sequential { next, end } => {
                if next >= end {
                    return None;
                }
                let key = *next;
                *next += 1;
                Some((Operation::Put, key))
            }
            Source::Mixed {
                mix,
                remaining,
                stopped,
            } => {
                if *stopped {
                    return None;
                }
                if let Some(left) = remaining {
                    if *left == 0 {
                        return None;
                    }
                    *left -= 1;
                }
                Some(mix.draw(random))
            }
        }
    }

    /// Sends nothing more (the phase's time is up).
    pub fn stop(&mut self) {
        match self {
            Source::Sequential { next, end } => *next = *end,
            Source::Mixed { stopped, .. } => *stopped = true,
        }
    }

    pub fn is_exhausted(&self) -> bool {
        match self {
            Source::Sequential { next, end } => next >= end,
            Source::Mixed {
                remaining, stopped, ..
            } => *stopped || *remaining == Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_to_a_fixed_width() {
        assert_eq!(Key::new(0).as_bytes(), b"key:00000000");
        assert_eq!(Key::new(1234).as_bytes(), b"key:00001234");
        assert_eq!(Key::new(MAX_KEYSPACE - 1).as_bytes(), b"key:99999999");
    }

    #[test]
    fn the_same_seed_and_stream_give_the_same_sequence() {
        let mut first = Xorshift::new(42, 3);
        let mut second = Xorshift::new(42, 3);
        let drawn: Vec<u64> = (0..100).map(|_| first.next_u64()).collect();
        let again: Vec<u64> = (0..100).map(|_| second.next_u64()).collect();
        assert_eq!(drawn, again);
    }

    #[test]
    fn seeds_and_streams_give_different_sequences() {
        let reference = Xorshift::new(42, 3).next_u64();
        assert_ne!(Xorshift::new(43, 3).next_u64(), reference);
        assert_ne!(Xorshift::new(42, 4).next_u64(), reference);
    }

    #[test]
    fn a_draw_below_a_bound_stays_below_it_and_covers_it() {
        let mut random = Xorshift::new(7, 0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let value = random.below(10);
            assert!(value < 10);
            seen[value as usize] = true;
        }
        assert!(seen.iter().all(|&hit| hit));
    }

    #[test]
    fn the_mix_is_deterministic_and_follows_the_ratio() {
        let mix = Mix::new(0.25, 1000);
        let draws = |seed| {
            let mut random = Xorshift::new(seed, 0);
            (0..10_000)
                .map(|_| mix.draw(&mut random))
                .collect::<Vec<_>>()
        };
        let first = draws(9);
        assert_eq!(first, draws(9));
        assert_ne!(first, draws(10));
        let gets = first.iter().filter(|(op, _)| *op == Operation::Get).count();
        assert!((2200..2800).contains(&gets), "{gets} GETs of 10000");
        assert!(first.iter().all(|(_, key)| *key < 1000));
    }

    #[test]
    fn ratios_zero_and_one_are_exact() {
        let mut random = Xorshift::new(1, 0);
        let only_puts = Mix::new(0.0, 10);
        let only_gets = Mix::new(1.0, 10);
        for _ in 0..1000 {
            assert_eq!(only_puts.draw(&mut random).0, Operation::Put);
            assert_eq!(only_gets.draw(&mut random).0, Operation::Get);
        }
    }

    #[test]
    fn the_preload_puts_every_key_once_in_order() {
        let mut random = Xorshift::new(1, 0);
        let mut source = Source::preload(3);
        let sent: Vec<_> = std::iter::from_fn(|| source.next(&mut random)).collect();
        assert_eq!(
            sent,
            [
                (Operation::Put, 0),
                (Operation::Put, 1),
                (Operation::Put, 2)
            ]
        );
        assert!(source.is_exhausted());
    }

    #[test]
    fn a_counted_source_sends_exactly_its_limit() {
        let mut random = Xorshift::new(1, 0);
        let mut source = Source::mixed(Mix::new(0.5, 10), Some(5));
        assert_eq!(std::iter::from_fn(|| source.next(&mut random)).count(), 5);
        assert!(source.is_exhausted());
    }

    #[test]
    fn a_stopped_source_sends_nothing_more() {
        let mut random = Xorshift::new(1, 0);
        let mut source = Source::mixed(Mix::new(0.5, 10), None);
        assert!(source.next(&mut random).is_some());
        assert!(!source.is_exhausted());
        source.stop();
        assert!(source.is_exhausted());
        assert_eq!(source.next(&mut random), None);
    }
}
