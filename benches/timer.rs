//! Timer wheel costs on the event loop's hot paths.
//!
//! - `rearm_idle_timeout`: cancel + insert of one client's idle timer, the
//!   work done on every request, with 10,000 other clients' timers armed.
//! - `insert_then_expire_10k/<spread_ms>`: arm 10,000 timers spread over
//!   `spread_ms`, then expire them all by stepping time to `next_deadline_ms`
//!   like the poll loop. 500 ms fits in one rotation; 30 s is ~59 rotations,
//!   so far-future timers are revisited once per rotation until due.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kvstore::timer::{TimerId, TimerWheel};

const TIMER_COUNT: u64 = 10_000;
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// Deadlines spread over `spread_ms`, hitting every slot.
fn spread_deadline_ms(start_ms: u64, index: u64, spread_ms: u64) -> u64 {
    start_ms + 1 + index * 7_919 % spread_ms
}

fn rearm_idle_timeout(criterion: &mut Criterion) {
    let mut wheel = TimerWheel::with_capacity(0, TIMER_COUNT as usize + 1);
    let mut ids: Vec<TimerId> = (0..TIMER_COUNT)
        .map(|client| wheel.insert(spread_deadline_ms(0, client, IDLE_TIMEOUT_MS), client))
        .collect();
    let mut now_ms = 0;
    let mut client = 0;
    criterion.bench_function("timer/rearm_idle_timeout", |bencher| {
        bencher.iter(|| {
            now_ms += 1;
            client = (client + 1) % TIMER_COUNT;
            let index = client as usize;
            let value = wheel.cancel(ids[index]).unwrap_or(client);
            ids[index] = wheel.insert(black_box(now_ms + IDLE_TIMEOUT_MS), value);
        })
    });
}

fn insert_then_expire_10k(criterion: &mut Criterion) {
    for spread_ms in [500, IDLE_TIMEOUT_MS] {
        let name = format!("timer/insert_then_expire_10k/{spread_ms}");
        criterion.bench_function(&name, |bencher| {
            bencher.iter_batched_ref(
                || {
                    (
                        TimerWheel::with_capacity(0, TIMER_COUNT as usize),
                        Vec::new(),
                    )
                },
                |(wheel, fired)| {
                    for index in 0..TIMER_COUNT {
                        wheel.insert(spread_deadline_ms(0, index, spread_ms), index);
                    }
                    while let Some(next_ms) = wheel.next_deadline_ms() {
                        wheel.expire(next_ms, fired);
                    }
                    assert_eq!(fired.len(), TIMER_COUNT as usize);
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, rearm_idle_timeout, insert_then_expire_10k);
criterion_main!(benches);
