//! Rate-limited log lines: a peer or client that misbehaves in a loop must
//! not be able to fill the disk through stderr, and an operator must still
//! learn that it happens and how often.

/// At most one line per kind in this many milliseconds.
pub const LOG_INTERVAL_MS: u64 = 1000;

/// One kind of log line, throttled on its own.
#[derive(Debug, Default)]
pub struct Throttle {
    last_logged_ms: Option<u64>,
    suppressed: u64,
}

impl Throttle {
    /// Whether a line may be logged at `now_ms`; if so, returns how many
    /// were suppressed since the last one (for a "(N more)" note).
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        let due = self
            .last_logged_ms
            .is_none_or(|last_ms| now_ms >= last_ms + LOG_INTERVAL_MS);
        if !due {
            self.suppressed += 1;
            return None;
        }
        self.last_logged_ms = Some(now_ms);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The note to append for `suppressed` lines not logged.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more like it not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.admit(5), Some(0));
        assert_eq!(throttle.admit(6), None);
        assert_eq!(throttle.admit(5 + LOG_INTERVAL_MS - 1), None);
        assert_eq!(throttle.admit(5 + LOG_INTERVAL_MS), Some(2));
        assert_eq!(throttle.admit(5 + 2 * LOG_INTERVAL_MS), Some(0));
    }

    #[test]
    fn the_note_says_how_many_were_dropped() {
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 more like it not logged)");
    }
}
