//! Redis Cluster's hash slot of a key, as `CLUSTER KEYSLOT` computes it.
//!
//! The slot is CRC16 (the XMODEM variant: polynomial 0x1021, initial value
//! 0, as in Redis's `crc16.c`) of the key modulo [`SLOTS`]. A hash tag makes
//! keys share a slot: if the key holds a `{` and, after it, a `}` with at
//! least one byte between them, only the bytes between the first `{` and the
//! first `}` after it are hashed (`{user1000}.following` and
//! `{user1000}.followers` share `user1000`'s slot). Pure; no allocation.

/// How many hash slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`, in `0..SLOTS`.
pub fn keyslot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// The bytes of `key` that decide its slot: its hash tag, or all of it.
fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = memchr::memchr(b'{', key) else {
        return key;
    };
    let after_open = &key[open + 1..];
    match memchr::memchr(b'}', after_open) {
        Some(close) if close > 0 => &after_open[..close],
        _ => key,
    }
}

/// CRC16/XMODEM of `bytes`, one table lookup per byte.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, &byte| {
        let index = usize::from((crc >> 8) as u8 ^ byte);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

/// CRC16/XMODEM's generator polynomial, x^16 + x^12 + x^5 + 1.
const CRC16_POLYNOMIAL: u16 = 0x1021;

/// The CRC of each byte value shifted into the high byte, computed at
/// compile time (it equals `crc16tab` in Redis's `crc16.c`).
static CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ CRC16_POLYNOMIAL
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_redis_crc16tab() {
        // The first, second-row and last entries of crc16tab in crc16.c.
        assert_eq!(CRC16_TABLE[..4], [0x0000, 0x1021, 0x2042, 0x3063]);
        assert_eq!(CRC16_TABLE[8..10], [0x8108, 0x9129]);
        assert_eq!(CRC16_TABLE[255], 0x1ef0);
    }

    #[test]
    fn crc16_is_the_xmodem_variant() {
        // The catalogued check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(crc16(b""), 0);
    }

    /// Each slot as `redis-cli CLUSTER KEYSLOT <key>` printed it, from
    /// redis-server 7.0.15 in cluster mode.
    const REDIS_SLOTS: [(&[u8], u16); 18] = [
        (b"foo", 12182),
        (b"bar", 5061),
        (b"hello", 866),
        (b"123456789", 12739),
        (b"", 0),
        (b"user1000", 3443),
        (b"{user1000}.following", 3443),
        (b"{user1000}.followers", 3443),
        (b"foo{}{bar}", 8363),
        (b"{", 4092),
        (b"}", 12090),
        (b"{}", 15257),
        (b"{a}", 15495),
        (b"a{b}c{d}", 3300),
        (b"{{a}}", 10276),
        (b"a{b", 13340),
        (b"a}b{c}", 7365),
        (b"{}a", 10875),
    ];

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        for (key, slot) in REDIS_SLOTS {
            assert_eq!(keyslot(key), slot, "{}", key.escape_ascii());
        }
    }

    #[test]
    fn a_hash_tag_is_the_first_braces_with_something_between() {
        assert_eq!(hashed_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hashed_part(b"a{b}c{d}"), b"b");
        assert_eq!(hashed_part(b"{{a}}"), b"{a");
        assert_eq!(hashed_part(b"a}b{c}"), b"c");
        // An empty tag, or no closing brace: the whole key.
        assert_eq!(hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hashed_part(b"a{b"), b"a{b");
        assert_eq!(keyslot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(keyslot(b"x{\xff\x00}y"), keyslot(b"\xff\x00"));
    }
}
