//! What the log says about a configured peer's link: a peer that goes down
//! is reported once, and while it stays down at most once every
//! [`PEER_DOWN_REPORT_INTERVAL_MS`], not on every reconnect attempt (those
//! are `DEBUG` lines); coming back is reported once. Changes up and down
//! are logged in bursts of at most [`TRANSITION_BURST`], then at most one a
//! second (a token bucket), so a restart is told whole while a peer that
//! flaps cannot flood the log; the lines say how many changes were not
//! logged, and the state a link settles in is always reported
//! ([`PeerHealth::tick`], from the reactor's sweep).
//!
//! Pure bookkeeping over times the reactor passes in, so it is tested
//! without sockets; the reactor writes the lines (`peering`).

use super::throttle::LOG_INTERVAL_MS;

/// While a peer stays down, a reminder at most this often.
pub const PEER_DOWN_REPORT_INTERVAL_MS: u64 = 60_000;
/// Changes up or down logged one after the other before the limit of one
/// a second applies.
pub const TRANSITION_BURST: u64 = 4;

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected since the server started.
    NeverUp {
        attempts: u64,
        /// When to say it is still unreachable (`None`: at the first failure).
        next_report_ms: Option<u64>,
    },
    Up,
    Down {
        since_ms: u64,
        attempts: u64,
        next_report_ms: u64,
    },
}

/// What to log about a link, beyond the `DEBUG` line of each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A peer never reached since start failed its first attempt.
    Unreachable,
    /// A peer that was up is gone; `suppressed` changes were not logged.
    Lost { suppressed: u64 },
    /// Still down, for `down_ms` (since start if it never came up), after
    /// `attempts` failed attempts.
    StillDown { down_ms: u64, attempts: u64 },
    /// Up, after `down_ms` down (`None`: first time since start, or after
    /// flapping) and `attempts` failed attempts.
    Connected {
        down_ms: Option<u64>,
        attempts: u64,
        suppressed: u64,
    },
}

/// One configured peer's link, as the log tells it.
#[derive(Debug)]
pub struct PeerHealth {
    state: State,
    /// Lost and connected lines: milliseconds of credit, a line costs
    /// [`LOG_INTERVAL_MS`], at most [`TRANSITION_BURST`] lines' worth.
    credit_ms: u64,
    credited_at_ms: u64,
    /// Changes not logged since the last line.
    suppressed: u64,
    /// A change of state was not logged: the state it ends in is due.
    unreported: bool,
    /// The last failure reported was a refusal.
    reported_refused: bool,
}

impl Default for PeerHealth {
    fn default() -> Self {
        PeerHealth {
            state: State::NeverUp {
                attempts: 0,
                next_report_ms: None,
            },
            credit_ms: TRANSITION_BURST * LOG_INTERVAL_MS,
            credited_at_ms: 0,
            suppressed: 0,
            unreported: false,
            reported_refused: false,
        }
    }
}

impl PeerHealth {
    /// The link's handshake completed at `now_ms`.
    pub fn connected(&mut self, now_ms: u64) -> Option<Notice> {
        let (down_ms, attempts) = match self.state {
            State::NeverUp { attempts, .. } => (None, attempts),
            State::Down {
                since_ms, attempts, ..
            } => (Some(now_ms.saturating_sub(since_ms)), attempts),
            State::Up => return None,
        };
        self.state = State::Up;
        self.reported_refused = false;
        let suppressed = self.admit(now_ms)?;
        Some(Notice::Connected {
            down_ms,
            attempts,
            suppressed,
        })
    }

    /// The link, which was up, went down at `now_ms`.
    pub fn lost(&mut self, now_ms: u64) -> Option<Notice> {
        let notice = self
            .admit(now_ms)
            .map(|suppressed| Notice::Lost { suppressed });
        // A loss not logged (flapping) is said soon: at the first failed
        // attempt a second on, or by `tick`.
        let wait_ms = match notice {
            Some(_) => PEER_DOWN_REPORT_INTERVAL_MS,
            None => LOG_INTERVAL_MS,
        };
        self.state = State::Down {
            since_ms: now_ms,
            attempts: 0,
            next_report_ms: now_ms + wait_ms,
        };
        self.reported_refused = false;
        notice
    }

    /// An attempt to (re)connect failed at `now_ms`; `refused`: the peer
    /// is up but refused us (its proof or id is wrong). Returns how many
    /// have failed in a row, and what to log beyond the attempt's own line.
    /// A peer that starts refusing us is reported at once, whenever the
    /// last report was of another kind: a configuration to fix is news.
    pub fn attempt_failed(&mut self, now_ms: u64, refused: bool) -> (u64, Option<Notice>) {
        let news = refused && !self.reported_refused;
        let (attempts, notice) = match &mut self.state {
            State::NeverUp {
                attempts,
                next_report_ms,
            } => {
                *attempts += 1;
                let notice = match *next_report_ms {
                    None => Some(Notice::Unreachable),
                    Some(due_ms) if now_ms >= due_ms || news => Some(Notice::StillDown {
                        down_ms: now_ms,
                        attempts: *attempts,
                    }),
                    Some(_) => None,
                };
                if notice.is_some() {
                    *next_report_ms = Some(now_ms + PEER_DOWN_REPORT_INTERVAL_MS);
                }
                (*attempts, notice)
            }
            State::Down {
                since_ms,
                attempts,
                next_report_ms,
            } => {
                *attempts += 1;
                let notice = (now_ms >= *next_report_ms || news).then(|| Notice::StillDown {
                    down_ms: now_ms.saturating_sub(*since_ms),
                    attempts: *attempts,
                });
                if notice.is_some() {
                    *next_report_ms = now_ms + PEER_DOWN_REPORT_INTERVAL_MS;
                }
                (*attempts, notice)
            }
            State::Up => {
                // Its loss is reported by `lost`; count it as down.
                self.state = State::Down {
                    since_ms: now_ms,
                    attempts: 1,
                    next_report_ms: now_ms + PEER_DOWN_REPORT_INTERVAL_MS,
                };
                return (1, None);
            }
        };
        if notice.is_some() {
            // Whatever flapped before, this says where it stands.
            self.unreported = false;
            self.reported_refused = refused;
        }
        (attempts, notice)
    }

    /// Called about once a second: after a change that was not logged, the
    /// state the link settled in, once the throttle allows.
    pub fn tick(&mut self, now_ms: u64) -> Option<Notice> {
        if !self.unreported {
            return None;
        }
        let notice = match self.state {
            State::NeverUp { .. } => return None,
            State::Up => Notice::Connected {
                down_ms: None,
                attempts: 0,
                suppressed: 0,
            },
            State::Down { .. } => Notice::Lost { suppressed: 0 },
        };
        let suppressed = self.admit(now_ms)?;
        Some(match notice {
            Notice::Connected { .. } => Notice::Connected {
                down_ms: None,
                attempts: 0,
                suppressed,
            },
            _ => Notice::Lost { suppressed },
        })
    }

    /// Whether a change may be logged now; if so, how many were not.
    fn admit(&mut self, now_ms: u64) -> Option<u64> {
        let earned_ms = now_ms.saturating_sub(self.credited_at_ms);
        self.credited_at_ms = self.credited_at_ms.max(now_ms);
        self.credit_ms = (self.credit_ms + earned_ms).min(TRANSITION_BURST * LOG_INTERVAL_MS);
        if self.credit_ms < LOG_INTERVAL_MS {
            self.suppressed += 1;
            self.unreported = true;
            return None;
        }
        self.credit_ms -= LOG_INTERVAL_MS;
        self.unreported = false;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts every `every_ms` from `from_ms` until `until_ms`; returns
    /// the notices they produced.
    fn attempts(
        health: &mut PeerHealth,
        from_ms: u64,
        until_ms: u64,
        every_ms: u64,
    ) -> Vec<Notice> {
        (from_ms..until_ms)
            .step_by(every_ms as usize)
            .filter_map(|now_ms| health.attempt_failed(now_ms, false).1)
            .collect()
    }

    #[test]
    fn a_peer_that_stays_down_is_reported_once_then_every_minute() {
        let mut health = PeerHealth::default();
        assert!(health.connected(5).is_some());
        assert_eq!(health.lost(1_000), Some(Notice::Lost { suppressed: 0 }));
        // Three minutes of attempts every 500 ms: 360 attempts, 3 reminders.
        let notices = attempts(&mut health, 1_020, 181_021, 500);
        assert_eq!(
            notices,
            [
                Notice::StillDown {
                    down_ms: 60_020,
                    attempts: 121
                },
                Notice::StillDown {
                    down_ms: 120_020,
                    attempts: 241
                },
                Notice::StillDown {
                    down_ms: 180_020,
                    attempts: 361
                },
            ]
        );
        assert_eq!(health.tick(181_050), None, "nothing left unsaid");
        let back = health.connected(181_100);
        assert_eq!(
            back,
            Some(Notice::Connected {
                down_ms: Some(180_100),
                attempts: 361,
                suppressed: 0
            })
        );
    }

    #[test]
    fn a_peer_not_up_at_start_is_reported_at_its_first_failure_only() {
        let mut health = PeerHealth::default();
        let notices = attempts(&mut health, 0, 3_000, 100);
        assert_eq!(notices, [Notice::Unreachable]);
        assert_eq!(
            health.connected(3_000),
            Some(Notice::Connected {
                down_ms: None,
                attempts: 30,
                suppressed: 0
            })
        );
    }

    /// The notices of a link going up and down every 100 ms for 2 s,
    /// ending `up` or down, then of ticks once a second.
    fn flap(up: bool) -> Vec<Notice> {
        let mut health = PeerHealth::default();
        let mut notices = Vec::new();
        for step in 0..20u64 {
            let now_ms = step * 100;
            notices.extend(health.connected(now_ms));
            if step < 19 || !up {
                notices.extend(health.lost(now_ms + 50));
            }
        }
        for now_ms in (2_000..10_000).step_by(1_000) {
            notices.extend(health.tick(now_ms));
        }
        notices
    }

    /// Every change a notice stands for: itself and those it says were not
    /// logged.
    fn changes(notices: &[Notice]) -> u64 {
        notices
            .iter()
            .map(|notice| match notice {
                Notice::Lost { suppressed } | Notice::Connected { suppressed, .. } => {
                    suppressed + 1
                }
                _ => 1,
            })
            .sum()
    }

    #[test]
    fn a_flapping_peer_is_reported_in_a_short_burst_and_where_it_settles() {
        let notices = flap(true);
        // The burst, one on the credit earned in 2 s, and where it settled.
        assert_eq!(notices.len() as u64, TRANSITION_BURST + 2, "{notices:?}");
        assert!(matches!(notices.last(), Some(Notice::Connected { .. })));
        // 39 changes, and the settled state said once more.
        assert_eq!(changes(&notices), 39 + 1);
        let notices = flap(false);
        assert!(matches!(notices.last(), Some(Notice::Lost { .. })));
        assert_eq!(changes(&notices), 40 + 1);
    }

    #[test]
    fn a_peer_that_starts_refusing_us_is_reported_at_once_and_once() {
        let mut health = PeerHealth::default();
        assert_eq!(health.attempt_failed(0, false).1, Some(Notice::Unreachable));
        assert_eq!(health.attempt_failed(100, false).1, None);
        // It came up with another secret.
        let refused = Some(Notice::StillDown {
            down_ms: 300,
            attempts: 3,
        });
        assert_eq!(health.attempt_failed(300, true).1, refused);
        let later: Vec<_> = (400..30_000)
            .step_by(500)
            .enumerate()
            .filter_map(|(n, now_ms)| health.attempt_failed(now_ms, n % 2 == 0).1)
            .collect();
        assert_eq!(later, [], "neither every refusal nor every change of kind");
    }

    #[test]
    fn a_restart_is_told_whole() {
        let mut health = PeerHealth::default();
        assert!(health.connected(10).is_some());
        assert_eq!(health.lost(200), Some(Notice::Lost { suppressed: 0 }));
        assert_eq!(health.attempt_failed(220, false).1, None);
        let back = health.connected(400);
        assert_eq!(
            back,
            Some(Notice::Connected {
                down_ms: Some(200),
                attempts: 1,
                suppressed: 0
            })
        );
    }
}
