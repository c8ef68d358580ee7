//! Linearizability checker for the key-value histories the simulator records.
//!
//! # What it checks
//!
//! A [`History`] is every client operation of a run: when it was invoked,
//! when (and whether) it completed, and what it returned. [`check`] decides
//! whether some total order of those operations exists that respects real
//! time (an operation that completed before another was invoked comes first)
//! and in which every result is the one a single in-memory map would have
//! given. If so the cluster behaved, as far as these clients can tell, like
//! one correct server; if not, the [`Verdict`] names the key and the smallest
//! window of operations on it that no such order can explain.
//!
//! # Model
//!
//! The store is a map, and operations on different keys never interact, so
//! linearizability is checked key by key (it is compositional: Herlihy & Wing
//! 1990; "P-compositionality", Horn & Kroening 2015). Each key is a register
//! holding `Option<value>`, initially absent:
//!
//! - `Put` sets the value and returns `Ok`;
//! - `Get` returns `Value(v)` or `NotFound` and changes nothing;
//! - `Del` returns `Ok` if the key was present, `NotFound` if not, and leaves
//!   it absent;
//! - `Incr` (Redis's `INCR`) reads the value as a decimal integer (absent
//!   counts as 0), stores that plus one and returns the sum: it linearizes
//!   only where the register holds the returned number minus one. On a
//!   value that is not an integer it would fail and change nothing.
//!
//! A value that is a decimal integer in Redis's strict form (`string2ll`:
//! no `+`, no leading zeros, no `-0`) is the same value whether a `Get`
//! returned its digits or an `Incr` its number.
//!
//! A request on several keys (`MSET`, a `MULTI`/`EXEC` block) is recorded
//! as one event per key operation, all with the request's interval: each
//! key's history sees its own part. That is weaker than the request's
//! atomicity (another client's operation may be placed between two parts),
//! never stronger, so it cannot reject a correct history; atomicity is
//! checked apart, on the committed log (`checks::GroupWrite`).
//!
//! An operation whose outcome is [`Outcome::Unknown`] (timed out, connection
//! lost, node crashed) may have taken effect at any moment after its
//! invocation, or never: its response time is +infinity and the search may
//! leave it out. An unknown `Get` constrains nothing and is dropped. Outcomes
//! that certainly did not happen (`NOT_LEADER`, `ERR`) must not be recorded.
//!
//! Two intervals that merely touch (one completes at the very tick the other
//! is invoked) count as concurrent: the virtual clock cannot order them.
//!
//! # Algorithm
//!
//! Wing & Gong's depth-first search ("Testing and verifying concurrent
//! objects", J. Parallel Distrib. Comput. 17, 1993) with Lowe's memoization
//! ("Testing for linearizability", Concurrency and Computation 29(4), 2017),
//! as in Porcupine (github.com/anishathalye/porcupine) and Knossos. The search
//! extends a partial linearization one operation at a time. The candidates are
//! the operations not yet linearized that were invoked no later than the
//! earliest response among the not-yet-linearized *completed* operations
//! (anything invoked later must come after that one). A candidate is taken if
//! the model accepts its result; the search backtracks when no candidate
//! fits. Every (set of linearized operations, register value) pair reached is
//! remembered, values interned to small integers, so no configuration is
//! explored twice. The search succeeds when every completed operation is
//! linearized; unknown ones left over never took effect.
//!
//! The search is exponential in the worst case, so it is bounded by
//! [`STEP_LIMIT_PER_KEY`]; beyond it the verdict is [`Verdict::Inconclusive`].
//! Simulations should keep per-key histories small enough never to reach it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hashbrown::{HashMap, HashSet};

/// How many candidate operations the search may try on one key before giving
/// up: far more than a per-key history of a few hundred operations with
/// modest concurrency needs, while the memo of visited configurations stays
/// in the order of 100 MB.
pub const STEP_LIMIT_PER_KEY: u64 = 2_000_000;

/// A per-key history no longer than this is explained in full even when a
/// shorter window would do: it is read at a glance either way.
const SMALL_HISTORY: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Del {
        key: Vec<u8>,
    },
    /// Adds one to the key's integer (absent: 0) and returns the sum.
    Incr {
        key: Vec<u8>,
    },
}

impl Operation {
    pub fn key(&self) -> &[u8] {
        match self {
            Operation::Put { key, .. }
            | Operation::Get { key }
            | Operation::Del { key }
            | Operation::Incr { key } => key,
        }
    }

    /// Whether it may change the store.
    pub fn writes(&self) -> bool {
        !matches!(self, Operation::Get { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Put acknowledged; Del that deleted a present key.
    Ok,
    /// Get of a missing key; Del of a missing key.
    NotFound,
    /// Get result.
    Value(Vec<u8>),
    /// Incr result: the sum it stored.
    Integer(i64),
    /// Never completed, or failed in a way that leaves open whether it
    /// happened.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub client: u64,
    pub operation: Operation,
    pub invoked_at: u64,
    /// `None` if the client never saw a response.
    pub completed_at: Option<u64>,
    pub outcome: Outcome,
    /// The multi-key request this operation was part of (`MSET #12`), if
    /// any, for explanations.
    pub part_of: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub events: Vec<Event>,
}

#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    NotLinearizable { key: Vec<u8>, explanation: String },
    Inconclusive { key: Vec<u8>, reason: String },
}

/// Checks `history` with the default search bound, [`STEP_LIMIT_PER_KEY`].
pub fn check(history: &History) -> Verdict {
    check_with_step_limit(history, STEP_LIMIT_PER_KEY)
}

/// Checks every key, in key order. A key that is not linearizable wins over
/// one whose search gave up: a definite failure is the more useful report.
pub fn check_with_step_limit(history: &History, step_limit: u64) -> Verdict {
    let mut first_inconclusive = None;
    for (key, event_indices) in partition_by_key(history) {
        match check_key(history, key, &event_indices, step_limit) {
            Verdict::Linearizable => {}
            failure @ Verdict::NotLinearizable { .. } => return failure,
            inconclusive @ Verdict::Inconclusive { .. } => {
                first_inconclusive.get_or_insert(inconclusive);
            }
        }
    }
    first_inconclusive.unwrap_or(Verdict::Linearizable)
}

fn partition_by_key(history: &History) -> BTreeMap<&[u8], Vec<usize>> {
    let mut partitions: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, event) in history.events.iter().enumerate() {
        partitions
            .entry(event.operation.key())
            .or_default()
            .push(index);
    }
    partitions
}

fn check_key(history: &History, key: &[u8], event_indices: &[usize], step_limit: u64) -> Verdict {
    let entries = prepare_entries(history, event_indices);
    match search(&entries, Register::Absent, step_limit) {
        SearchResult::Linearizable => Verdict::Linearizable,
        SearchResult::NotLinearizable => Verdict::NotLinearizable {
            key: key.to_vec(),
            explanation: explain(history, key, &entries, step_limit),
        },
        SearchResult::Exhausted => Verdict::Inconclusive {
            key: key.to_vec(),
            reason: exhausted_reason(key, &entries, step_limit),
        },
    }
}

fn exhausted_reason(key: &[u8], entries: &[Entry], step_limit: u64) -> String {
    let unknown = entries.iter().filter(|entry| !entry.is_required()).count();
    format!(
        "key {}: the search gave up after {step_limit} steps over {} operations \
         ({unknown} with unknown outcome); spread the workload over more keys or shorten the run",
        quoted(key),
        entries.len(),
    )
}

// ---------------------------------------------------------------------------
// The model: one register per key.

/// A value as the search sees it: a decimal integer as its number (`Incr`
/// adds to it), anything else interned per key to a small number, so that
/// search states are cheap to hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Value {
    Interned(u32),
    Integer(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Register {
    Absent,
    Holds(Value),
    /// Any value at all, or absent: fixed by the first operation that looks.
    /// Only used to check a window of a history cut out of its middle.
    Unconstrained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Put(Value),
    Get,
    Del,
    Incr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    Ok,
    NotFound,
    /// What a Get read, or the sum an Incr stored.
    Value(Value),
    Unknown,
}

/// The register after `action` returned `response`, or `None` if it cannot
/// have returned that from `register`.
fn apply(register: Register, action: Action, response: Response) -> Option<Register> {
    use Register::{Absent, Holds, Unconstrained};
    match (action, response) {
        (Action::Put(value), Response::Ok | Response::Unknown) => Some(Holds(value)),
        (Action::Get, Response::Value(seen)) => match register {
            Holds(value) if value == seen => Some(register),
            Unconstrained => Some(Holds(seen)),
            _ => None,
        },
        (Action::Get | Action::Del, Response::NotFound) => match register {
            Absent | Unconstrained => Some(Absent),
            Holds(_) => None,
        },
        (Action::Get, Response::Unknown) => Some(register),
        (Action::Del, Response::Ok) => match register {
            Holds(_) | Unconstrained => Some(Absent),
            Absent => None,
        },
        (Action::Del, Response::Unknown) => Some(Absent),
        (Action::Incr, Response::Value(Value::Integer(sum))) => match register {
            Absent => (sum == 1).then_some(Holds(Value::Integer(1))),
            Holds(Value::Integer(before)) => {
                (before.checked_add(1) == Some(sum)).then_some(Holds(Value::Integer(sum)))
            }
            Holds(Value::Interned(_)) => None,
            Unconstrained => Some(Holds(Value::Integer(sum))),
        },
        (Action::Incr, Response::Unknown) => match register {
            Absent => Some(Holds(Value::Integer(1))),
            Holds(Value::Integer(before)) => {
                before.checked_add(1).map(|sum| Holds(Value::Integer(sum)))
            }
            // It failed and changed nothing: the search may leave it out.
            Holds(Value::Interned(_)) => None,
            // Some integer: "any value" is looser, which only makes a
            // window that still fails a weaker witness, never a wrong one.
            Unconstrained => Some(Unconstrained),
        },
        // Results no key-value store gives: Put NotFound, Get Ok, Del Value,
        // Incr anything but a number.
        _ => None,
    }
}

/// Why an entry's outcome was set aside while explaining a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    AsRecorded,
    /// It completed after the response being explained: treated as unknown.
    RespondedAfterCut,
    /// It was in flight when the window opens: treated as unknown.
    BeganBeforeWindow,
}

/// One operation of a single key's history, as the search sees it.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into `History::events`, for explanations.
    event: usize,
    action: Action,
    response: Response,
    invoked_at: u64,
    /// `u64::MAX` (+infinity) when the response is unknown.
    responded_at: u64,
    treatment: Treatment,
}

impl Entry {
    /// Whether this operation certainly took effect, and so must be placed.
    fn is_required(&self) -> bool {
        self.response != Response::Unknown
    }

    /// The same operation with its outcome forgotten, or `None` for a Get,
    /// which then constrains nothing.
    fn as_unknown(&self, treatment: Treatment) -> Option<Entry> {
        if self.action == Action::Get {
            return None;
        }
        let treatment = if self.is_required() {
            treatment
        } else {
            self.treatment
        };
        Some(Entry {
            response: Response::Unknown,
            responded_at: u64::MAX,
            treatment,
            ..self.clone()
        })
    }
}

/// The key's events as entries sorted by invocation, unknown Gets dropped.
fn prepare_entries(history: &History, event_indices: &[usize]) -> Vec<Entry> {
    let mut values = ValueInterner::default();
    let mut entries: Vec<Entry> = event_indices
        .iter()
        .map(|&index| entry_for(&history.events[index], index, &mut values))
        .filter(|entry| entry.is_required() || entry.action != Action::Get)
        .collect();
    entries.sort_by_key(|entry| entry.invoked_at);
    entries
}

fn entry_for(event: &Event, index: usize, values: &mut ValueInterner) -> Entry {
    let action = match &event.operation {
        Operation::Put { value, .. } => Action::Put(values.intern(value)),
        Operation::Get { .. } => Action::Get,
        Operation::Del { .. } => Action::Del,
        Operation::Incr { .. } => Action::Incr,
    };
    let response = match &event.outcome {
        Outcome::Ok => Response::Ok,
        Outcome::NotFound => Response::NotFound,
        Outcome::Value(value) => Response::Value(values.intern(value)),
        Outcome::Integer(sum) => Response::Value(Value::Integer(*sum)),
        Outcome::Unknown => Response::Unknown,
    };
    let responded_at = match response {
        Response::Unknown => u64::MAX,
        _ => event.completed_at.unwrap_or(u64::MAX),
    };
    Entry {
        event: index,
        action,
        response,
        invoked_at: event.invoked_at,
        responded_at,
        treatment: Treatment::AsRecorded,
    }
}

#[derive(Default)]
struct ValueInterner {
    ids: HashMap<Vec<u8>, u32>,
}

impl ValueInterner {
    fn intern(&mut self, value: &[u8]) -> Value {
        if let Some(number) = redis_integer(value) {
            return Value::Integer(number);
        }
        let next = u32::try_from(self.ids.len()).expect("fewer than 2^32 values per key");
        Value::Interned(*self.ids.entry_ref(value).or_insert(next))
    }
}

/// `bytes` as Redis's `string2ll` reads an integer: an optional `-`, then
/// digits without leading zeros, within 64 bits; `-0` is not one. Each
/// integer has exactly one such spelling.
fn redis_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || bytes == b"0");
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// The search.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchResult {
    Linearizable,
    NotLinearizable,
    Exhausted,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset {
    words: Box<[u64]>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn contains(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }
}

/// One level of the depth-first search.
struct Frame {
    candidates: Vec<usize>,
    next_candidate: usize,
    /// The entry linearized to reach this level and the register before it.
    entered_by: Option<(usize, Register)>,
}

struct Search<'a> {
    entries: &'a [Entry],
    linearized: Bitset,
    register: Register,
    required_remaining: usize,
    visited: HashSet<(Bitset, Register)>,
    stack: Vec<Frame>,
    steps: u64,
}

/// Whether `entries` (sorted by invocation) can be linearized starting from
/// `initial`.
fn search(entries: &[Entry], initial: Register, step_limit: u64) -> SearchResult {
    let required_remaining = entries.iter().filter(|entry| entry.is_required()).count();
    if required_remaining == 0 {
        return SearchResult::Linearizable;
    }
    let mut search = Search {
        entries,
        linearized: Bitset::new(entries.len()),
        register: initial,
        required_remaining,
        visited: HashSet::new(),
        stack: Vec::new(),
        steps: 0,
    };
    search.push_frame(None);
    search.run(step_limit)
}

impl Search<'_> {
    fn run(&mut self, step_limit: u64) -> SearchResult {
        while !self.stack.is_empty() {
            let Some(index) = self.next_candidate() else {
                self.backtrack();
                continue;
            };
            self.steps += 1;
            if self.steps > step_limit {
                return SearchResult::Exhausted;
            }
            if self.try_linearize(index) && self.required_remaining == 0 {
                return SearchResult::Linearizable;
            }
        }
        SearchResult::NotLinearizable
    }

    fn next_candidate(&mut self) -> Option<usize> {
        let frame = self.stack.last_mut()?;
        let candidate = frame.candidates.get(frame.next_candidate).copied();
        frame.next_candidate += 1;
        candidate
    }

    /// Linearizes `index` next and descends, unless the model rejects its
    /// result or the resulting configuration was already explored.
    fn try_linearize(&mut self, index: usize) -> bool {
        let entry = &self.entries[index];
        let Some(next) = apply(self.register, entry.action, entry.response) else {
            return false;
        };
        self.linearized.insert(index);
        if !self.visited.insert((self.linearized.clone(), next)) {
            self.linearized.remove(index);
            return false;
        }
        if entry.is_required() {
            self.required_remaining -= 1;
        }
        self.push_frame(Some((index, self.register)));
        self.register = next;
        true
    }

    fn backtrack(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if let Some((index, previous)) = frame.entered_by {
            self.linearized.remove(index);
            self.register = previous;
            if self.entries[index].is_required() {
                self.required_remaining += 1;
            }
        }
    }

    fn push_frame(&mut self, entered_by: Option<(usize, Register)>) {
        let candidates = self.candidates();
        self.stack.push(Frame {
            candidates,
            next_candidate: 0,
            entered_by,
        });
    }

    /// The entries that may be linearized next: not yet linearized, and
    /// invoked no later than the earliest pending response.
    fn candidates(&self) -> Vec<usize> {
        let pending = |&(index, _): &(usize, &Entry)| !self.linearized.contains(index);
        let horizon = self
            .entries
            .iter()
            .enumerate()
            .filter(pending)
            .filter(|(_, entry)| entry.is_required())
            .map(|(_, entry)| entry.responded_at)
            .min()
            .unwrap_or(u64::MAX);
        self.entries
            .iter()
            .enumerate()
            .take_while(|(_, entry)| entry.invoked_at <= horizon)
            .filter(pending)
            .map(|(index, _)| index)
            .collect()
    }
}

/// `search` definitely found no linearization (giving up does not count).
fn fails(entries: &[Entry], initial: Register, step_limit: u64) -> bool {
    search(entries, initial, step_limit) == SearchResult::NotLinearizable
}

// ---------------------------------------------------------------------------
// Explaining a failure: the smallest window that still cannot be linearized.

/// A sub-history that cannot be linearized, for the report.
struct Witness {
    entries: Vec<Entry>,
    /// The entry whose response first makes the history impossible.
    culprit_event: usize,
    /// `None`: from the start, key absent. `Some(t)`: from time `t`, any value.
    window_start: Option<u64>,
}

fn explain(history: &History, key: &[u8], entries: &[Entry], step_limit: u64) -> String {
    let (prefix, culprit_event) = shortest_failing_prefix(entries, step_limit);
    let witness = if prefix.len() <= SMALL_HISTORY {
        Witness {
            entries: prefix,
            culprit_event,
            window_start: None,
        }
    } else {
        latest_failing_window(prefix, culprit_event, step_limit)
    };
    format_witness(history, key, &witness)
}

/// The history cut just after the earliest response that makes it impossible
/// (found by bisection: linearizability is closed under taking prefixes), and
/// that response's event. Operations still in flight at the cut become unknown.
fn shortest_failing_prefix(entries: &[Entry], step_limit: u64) -> (Vec<Entry>, usize) {
    let mut responses: Vec<usize> = (0..entries.len())
        .filter(|&index| entries[index].is_required())
        .collect();
    responses.sort_by_key(|&index| entries[index].responded_at);
    // The empty prefix is linearizable; the whole history is not.
    let (mut passing, mut failing) = (0, responses.len());
    while failing - passing > 1 {
        let middle = (passing + failing) / 2;
        if fails(
            &cut(entries, &responses[..middle]),
            Register::Absent,
            step_limit,
        ) {
            failing = middle;
        } else {
            passing = middle;
        }
    }
    let culprit_event = entries[responses[failing - 1]].event;
    (cut(entries, &responses[..failing]), culprit_event)
}

/// The history as it stood right after the last of `responses` (indices into
/// `entries`, in response order).
fn cut(entries: &[Entry], responses: &[usize]) -> Vec<Entry> {
    let Some(&last) = responses.last() else {
        return Vec::new();
    };
    let cut_at = entries[last].responded_at;
    let mut responded = Bitset::new(entries.len());
    responses.iter().for_each(|&index| responded.insert(index));
    entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.invoked_at <= cut_at)
        .filter_map(|(index, entry)| {
            if responded.contains(index) {
                Some(entry.clone())
            } else {
                entry.as_unknown(Treatment::RespondedAfterCut)
            }
        })
        .collect()
}

/// The shortest tail of `prefix` that fails whatever value the key held when
/// it begins, or all of `prefix` from an absent key if no tail does.
fn latest_failing_window(prefix: Vec<Entry>, culprit_event: usize, step_limit: u64) -> Witness {
    let culprit_invoked_at = prefix
        .iter()
        .find(|entry| entry.event == culprit_event)
        .map_or(u64::MAX, |entry| entry.invoked_at);
    let mut starts: Vec<u64> = prefix
        .iter()
        .map(|entry| entry.invoked_at)
        .filter(|&start| start <= culprit_invoked_at)
        .collect();
    starts.dedup();
    let window_fails =
        |start: u64| fails(&window(&prefix, start), Register::Unconstrained, step_limit);
    if starts.is_empty() || !window_fails(starts[0]) {
        return Witness {
            entries: prefix,
            culprit_event,
            window_start: None,
        };
    }
    // Later starts only relax the problem, so failure is monotone: bisect.
    let (mut failing, mut passing) = (0, starts.len());
    while passing - failing > 1 {
        let middle = (failing + passing) / 2;
        if window_fails(starts[middle]) {
            failing = middle;
        } else {
            passing = middle;
        }
    }
    Witness {
        entries: window(&prefix, starts[failing]),
        culprit_event,
        window_start: Some(starts[failing]),
    }
}

/// The operations of `entries` from time `start` on. Those that completed
/// before it are left out; those in flight at `start` become unknown: they may
/// have taken effect before the window, inside it, or never. Sound with an
/// unconstrained initial register: any linearization of the whole history,
/// cut after its last left-out operation, linearizes the window.
fn window(entries: &[Entry], start: u64) -> Vec<Entry> {
    entries
        .iter()
        .filter(|entry| entry.responded_at >= start)
        .filter_map(|entry| {
            if entry.invoked_at < start {
                entry.as_unknown(Treatment::BeganBeforeWindow)
            } else {
                Some(entry.clone())
            }
        })
        .collect()
}

fn format_witness(history: &History, key: &[u8], witness: &Witness) -> String {
    let count = witness.entries.len();
    let mut text = match witness.window_start {
        None => format!(
            "key {}: no linearization of these {count} operations exists, \
             starting from the key absent:\n",
            quoted(key)
        ),
        Some(start) => format!(
            "key {}: no linearization of these {count} operations exists, \
             whatever the key held at t={start} (operations that completed \
             earlier are left out):\n",
            quoted(key)
        ),
    };
    for entry in &witness.entries {
        let event = &history.events[entry.event];
        let _ = write!(text, "  {}", format_event(event));
        let _ = match (entry.treatment, entry.event == witness.culprit_event) {
            (_, true) => write!(text, "   <- this response cannot be explained"),
            (Treatment::AsRecorded, false) => Ok(()),
            (Treatment::RespondedAfterCut, false) => {
                write!(text, "   (responded later: treated as unknown)")
            }
            (Treatment::BeganBeforeWindow, false) => {
                write!(
                    text,
                    "   (in flight when the window opens: treated as unknown)"
                )
            }
        };
        text.push('\n');
    }
    text
}

fn format_event(event: &Event) -> String {
    let completed = event
        .completed_at
        .map_or_else(|| "inf".to_string(), |time| time.to_string());
    let operation = match &event.operation {
        Operation::Put { value, .. } => format!("put {}", quoted(value)),
        Operation::Get { .. } => "get".to_string(),
        Operation::Del { .. } => "del".to_string(),
        Operation::Incr { .. } => "incr".to_string(),
    };
    let outcome = match &event.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::NotFound => "not found".to_string(),
        Outcome::Value(value) => quoted(value),
        Outcome::Integer(sum) => sum.to_string(),
        Outcome::Unknown => "unknown".to_string(),
    };
    let part_of = event
        .part_of
        .as_ref()
        .map_or_else(String::new, |request| format!("  (in {request})"));
    format!(
        "client {:<4} [{:>8}, {:>8}]  {operation:<20} -> {outcome}{part_of}",
        event.client, event.invoked_at, completed
    )
}

fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

// ---------------------------------------------------------------------------

mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn put(key: &str, value: &str) -> Operation {
        Operation::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn get(key: &str) -> Operation {
        Operation::Get { key: key.into() }
    }

    fn del(key: &str) -> Operation {
        Operation::Del { key: key.into() }
    }

    fn incr(key: &str) -> Operation {
        Operation::Incr { key: key.into() }
    }

    fn value(value: &str) -> Outcome {
        Outcome::Value(value.into())
    }

    /// An operation that completed at `completed_at` with `outcome`.
    fn done(client: u64, operation: Operation, times: (u64, u64), outcome: Outcome) -> Event {
        Event {
            client,
            operation,
            invoked_at: times.0,
            completed_at: Some(times.1),
            outcome,
            part_of: None,
        }
    }

    /// An operation that never completed.
    fn lost(client: u64, operation: Operation, invoked_at: u64) -> Event {
        Event {
            client,
            operation,
            invoked_at,
            completed_at: None,
            outcome: Outcome::Unknown,
            part_of: None,
        }
    }

    fn assert_linearizable(events: Vec<Event>) {
        let verdict = check(&History { events });
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
    }

    /// Asserts the failure is reported on `expected_key`; returns the
    /// explanation.
    fn assert_not_linearizable(events: Vec<Event>, expected_key: &str) -> String {
        match check(&History { events }) {
            Verdict::NotLinearizable { key, explanation } => {
                assert_eq!(key, expected_key.as_bytes(), "{explanation}");
                explanation
            }
            verdict => panic!("expected NotLinearizable, got {verdict:?}"),
        }
    }

    // -- Linearizable --------------------------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(Vec::new());
    }

    #[test]
    fn sequential_put_then_get() {
        assert_linearizable(vec![
            done(1, get("k"), (0, 1), Outcome::NotFound),
            done(1, put("k", "a"), (2, 3), Outcome::Ok),
            done(2, get("k"), (4, 5), value("a")),
            done(1, put("k", "b"), (6, 7), Outcome::Ok),
            done(2, get("k"), (8, 9), value("b")),
        ]);
    }

    #[test]
    fn get_concurrent_with_put_may_return_old_or_new() {
        for seen in ["old", "new"] {
            assert_linearizable(vec![
                done(1, put("k", "old"), (0, 1), Outcome::Ok),
                done(1, put("k", "new"), (10, 20), Outcome::Ok),
                done(2, get("k"), (12, 18), value(seen)),
            ]);
        }
    }

    #[test]
    fn concurrent_puts_then_gets_agree_on_either_winner() {
        for winner in ["a", "b"] {
            assert_linearizable(vec![
                done(1, put("k", "a"), (0, 10), Outcome::Ok),
                done(2, put("k", "b"), (1, 9), Outcome::Ok),
                done(3, get("k"), (20, 21), value(winner)),
                done(1, get("k"), (22, 23), value(winner)),
            ]);
        }
    }

    #[test]
    fn del_then_get_not_found() {
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 1), Outcome::Ok),
            done(1, del("k"), (2, 3), Outcome::Ok),
            done(2, get("k"), (4, 5), Outcome::NotFound),
        ]);
    }

    #[test]
    fn del_of_missing_key_is_not_found() {
        assert_linearizable(vec![
            done(1, del("k"), (0, 1), Outcome::NotFound),
            done(1, put("k", "a"), (2, 3), Outcome::Ok),
            done(1, del("k"), (4, 5), Outcome::Ok),
            done(2, del("k"), (6, 7), Outcome::NotFound),
        ]);
    }

    #[test]
    fn unknown_put_observed_later() {
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 1), Outcome::Ok),
            lost(1, put("k", "b"), 2),
            done(2, get("k"), (3, 4), value("a")),
            done(2, get("k"), (50, 51), value("b")),
        ]);
    }

    #[test]
    fn unknown_put_never_observed() {
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 1), Outcome::Ok),
            lost(1, put("k", "b"), 2),
            done(2, get("k"), (3, 4), value("a")),
            done(2, get("k"), (50, 51), value("a")),
        ]);
    }

    #[test]
    fn failed_put_with_unknown_outcome_may_take_effect_after_its_reply() {
        // The error came back at 3, yet the write may still land later.
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 1), Outcome::Ok),
            done(1, put("k", "b"), (2, 3), Outcome::Unknown),
            done(2, get("k"), (4, 5), value("a")),
            done(2, get("k"), (6, 7), value("b")),
        ]);
    }

    #[test]
    fn unknown_del_may_or_may_not_have_deleted() {
        for seen in [value("a"), Outcome::NotFound] {
            assert_linearizable(vec![
                done(1, put("k", "a"), (0, 1), Outcome::Ok),
                lost(1, del("k"), 2),
                done(2, get("k"), (10, 11), seen),
            ]);
        }
    }

    #[test]
    fn unknown_get_constrains_nothing() {
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 1), Outcome::Ok),
            lost(2, get("k"), 2),
            done(1, get("k"), (3, 4), value("a")),
        ]);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        assert_linearizable(vec![
            done(1, put("k", "a"), (0, 5), Outcome::Ok),
            done(2, get("k"), (5, 6), Outcome::NotFound),
        ]);
    }

    #[test]
    fn overlapping_operations_across_many_keys() {
        let mut events = Vec::new();
        for (number, key) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
            let client = number as u64;
            let value_a = format!("{key}1");
            let value_b = format!("{key}2");
            events.push(done(client, put(key, &value_a), (0, 10), Outcome::Ok));
            events.push(done(client + 10, put(key, &value_b), (2, 12), Outcome::Ok));
            events.push(done(client + 20, get(key), (5, 15), value(&value_a)));
            events.push(done(client, get(key), (16, 20), value(&value_b)));
            events.push(done(client + 10, del(key), (18, 25), Outcome::Ok));
            events.push(done(client + 20, get(key), (19, 22), value(&value_b)));
            events.push(done(client, get(key), (26, 27), Outcome::NotFound));
        }
        assert_linearizable(events);
    }

    // -- Not linearizable ----------------------------------------------------

    #[test]
    fn get_of_a_value_never_written() {
        let explanation = assert_not_linearizable(
            vec![
                done(1, put("k", "a"), (0, 1), Outcome::Ok),
                done(2, get("k"), (2, 3), value("ghost")),
            ],
            "k",
        );
        assert!(explanation.contains("\"ghost\""), "{explanation}");
        assert!(explanation.contains("cannot be explained"), "{explanation}");
    }

    #[test]
    fn stale_read_after_completed_put() {
        assert_not_linearizable(
            vec![
                done(1, put("k", "old"), (0, 1), Outcome::Ok),
                done(1, put("k", "new"), (2, 3), Outcome::Ok),
                done(2, get("k"), (4, 5), value("old")),
            ],
            "k",
        );
    }

    #[test]
    fn reads_going_back_in_time() {
        assert_not_linearizable(
            vec![
                done(1, put("k", "v1"), (0, 1), Outcome::Ok),
                done(1, put("k", "v2"), (2, 30), Outcome::Ok),
                done(2, get("k"), (3, 4), value("v2")),
                done(3, get("k"), (5, 6), value("v1")),
            ],
            "k",
        );
    }

    #[test]
    fn get_sees_a_put_invoked_after_it_completed() {
        assert_not_linearizable(
            vec![
                done(2, get("k"), (0, 1), value("future")),
                done(1, put("k", "future"), (2, 3), Outcome::Ok),
            ],
            "k",
        );
    }

    #[test]
    fn del_acknowledged_on_an_absent_key() {
        assert_not_linearizable(
            vec![
                done(1, put("k", "a"), (0, 1), Outcome::Ok),
                done(1, del("k"), (2, 3), Outcome::Ok),
                done(2, del("k"), (4, 5), Outcome::Ok),
            ],
            "k",
        );
    }

    #[test]
    fn lost_acknowledged_write() {
        assert_not_linearizable(
            vec![
                done(1, put("k", "a"), (0, 1), Outcome::Ok),
                done(2, get("k"), (2, 3), Outcome::NotFound),
            ],
            "k",
        );
    }

    #[test]
    fn split_brain_readers_disagree() {
        // Two leaders each acknowledge a write; after both, readers see
        // different values, and one of them flips back.
        assert_not_linearizable(
            vec![
                done(1, put("k", "x"), (0, 10), Outcome::Ok),
                done(2, put("k", "y"), (0, 10), Outcome::Ok),
                done(3, get("k"), (20, 30), value("x")),
                done(4, get("k"), (20, 30), value("y")),
            ],
            "k",
        );
        assert_not_linearizable(
            vec![
                done(1, put("k", "x"), (0, 10), Outcome::Ok),
                done(2, put("k", "y"), (0, 10), Outcome::Ok),
                done(3, get("k"), (20, 30), value("x")),
                done(4, get("k"), (40, 50), value("y")),
                done(3, get("k"), (60, 70), value("x")),
            ],
            "k",
        );
    }

    #[test]
    fn impossible_results_are_not_linearizable() {
        assert_not_linearizable(vec![done(1, put("k", "a"), (0, 1), Outcome::NotFound)], "k");
        assert_not_linearizable(vec![done(1, get("k"), (0, 1), Outcome::Ok)], "k");
    }

    #[test]
    fn failure_on_one_key_is_reported_among_good_keys() {
        assert_not_linearizable(
            vec![
                done(1, put("a", "1"), (0, 1), Outcome::Ok),
                done(1, put("b", "1"), (0, 1), Outcome::Ok),
                done(2, get("a"), (2, 3), value("1")),
                done(2, get("b"), (2, 3), Outcome::NotFound),
            ],
            "b",
        );
    }

    #[test]
    fn explanation_narrows_to_a_window() {
        // A long clean history, then a stale read at the end.
        let mut events = Vec::new();
        for round in 0..40 {
            let time = round * 10;
            events.push(done(
                1,
                put("k", &format!("v{round}")),
                (time, time + 2),
                Outcome::Ok,
            ));
            events.push(done(
                2,
                get("k"),
                (time + 3, time + 4),
                value(&format!("v{round}")),
            ));
        }
        events.push(done(3, get("k"), (500, 501), value("v38")));
        let explanation = assert_not_linearizable(events, "k");
        let lines = explanation.lines().count();
        assert!(lines <= 6, "window too wide:\n{explanation}");
        assert!(explanation.contains("\"v38\""), "{explanation}");
    }

    #[test]
    fn search_bound_gives_inconclusive() {
        // Many concurrent unknown writes and an impossible read: the search
        // must try every subset before giving up.
        let mut events: Vec<Event> = (0..20)
            .map(|client| lost(client, put("k", &format!("v{client}")), 0))
            .collect();
        events.push(done(99, get("k"), (1, 2), value("never")));
        events.push(done(98, get("k"), (3, 4), Outcome::NotFound));
        match check_with_step_limit(&History { events }, 1_000) {
            Verdict::Inconclusive { key, reason } => {
                assert_eq!(key, b"k");
                assert!(reason.contains("1000 steps"), "{reason}");
            }
            verdict => panic!("expected Inconclusive, got {verdict:?}"),
        }
    }

    // -- Counters (INCR) -----------------------------------------------------

    #[test]
    fn increments_count_from_an_absent_key() {
        assert_linearizable(vec![
            done(1, incr("n"), (0, 1), Outcome::Integer(1)),
            done(2, incr("n"), (2, 3), Outcome::Integer(2)),
            done(1, get("n"), (4, 5), value("2")),
        ]);
    }

    #[test]
    fn concurrent_increments_return_each_sum_once_in_either_order() {
        for (first, second) in [(1, 2), (2, 1)] {
            assert_linearizable(vec![
                done(1, incr("n"), (0, 10), Outcome::Integer(first)),
                done(2, incr("n"), (1, 9), Outcome::Integer(second)),
                done(3, get("n"), (11, 12), value("2")),
            ]);
        }
    }

    #[test]
    fn an_increment_that_skipped_a_value_is_caught() {
        let explanation = assert_not_linearizable(
            vec![
                done(1, incr("n"), (0, 1), Outcome::Integer(1)),
                done(2, incr("n"), (2, 3), Outcome::Integer(3)),
            ],
            "n",
        );
        assert!(explanation.contains("incr"), "{explanation}");
    }

    #[test]
    fn two_increments_returning_the_same_sum_are_caught() {
        assert_not_linearizable(
            vec![
                done(1, incr("n"), (0, 10), Outcome::Integer(1)),
                done(2, incr("n"), (1, 9), Outcome::Integer(1)),
            ],
            "n",
        );
    }

    #[test]
    fn a_lost_increment_may_account_for_a_skipped_value() {
        assert_linearizable(vec![
            done(1, incr("n"), (0, 1), Outcome::Integer(1)),
            lost(1, incr("n"), 2),
            done(2, incr("n"), (5, 6), Outcome::Integer(3)),
        ]);
        // ... but not for one skipped before it was invoked.
        assert_not_linearizable(
            vec![
                done(1, incr("n"), (0, 1), Outcome::Integer(1)),
                done(2, incr("n"), (2, 3), Outcome::Integer(3)),
                lost(1, incr("n"), 4),
            ],
            "n",
        );
    }

    #[test]
    fn an_increment_after_a_read_of_its_sum_is_caught() {
        assert_not_linearizable(
            vec![
                done(1, incr("n"), (0, 1), Outcome::Integer(1)),
                done(2, get("n"), (2, 3), value("1")),
                done(1, incr("n"), (4, 5), Outcome::Integer(1)),
            ],
            "n",
        );
    }

    #[test]
    fn only_the_strict_spelling_of_a_number_is_that_number() {
        assert_linearizable(vec![
            done(1, incr("n"), (0, 1), Outcome::Integer(1)),
            done(2, get("n"), (2, 3), value("1")),
        ]);
        assert_not_linearizable(
            vec![
                done(1, incr("n"), (0, 1), Outcome::Integer(1)),
                done(2, get("n"), (2, 3), value("01")),
            ],
            "n",
        );
        assert_eq!(redis_integer(b"-12"), Some(-12));
        for not_canonical in [
            &b"-0"[..],
            b"007",
            b"+1",
            b"",
            b"-",
            b"1 ",
            b"99999999999999999999",
        ] {
            assert_eq!(redis_integer(not_canonical), None);
        }
    }

    #[test]
    fn an_increment_of_a_value_that_is_no_number_cannot_succeed() {
        assert_not_linearizable(
            vec![
                done(1, put("n", "abc"), (0, 1), Outcome::Ok),
                done(2, incr("n"), (2, 3), Outcome::Integer(1)),
            ],
            "n",
        );
        // Had it been tried, it failed and changed nothing.
        assert_linearizable(vec![
            done(1, put("n", "abc"), (0, 1), Outcome::Ok),
            lost(2, incr("n"), 2),
            done(1, get("n"), (4, 5), value("abc")),
        ]);
    }

    #[test]
    fn the_parts_of_a_multi_key_request_are_each_checked_on_their_key() {
        let part = |event: Event| Event {
            part_of: Some("MSET #1".to_string()),
            ..event
        };
        let explanation = assert_not_linearizable(
            vec![
                part(done(1, put("a", "t1"), (0, 5), Outcome::Ok)),
                part(done(1, put("b", "t1"), (0, 5), Outcome::Ok)),
                done(2, get("a"), (6, 7), value("t1")),
                done(2, get("b"), (6, 7), Outcome::NotFound),
            ],
            "b",
        );
        assert!(explanation.contains("(in MSET #1)"), "{explanation}");
    }

    // -- Performance ----------------------------------------------------------

    struct Xorshift(u64);

    impl Xorshift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// An event and the moment it took effect in the reference store.
    struct Planned {
        event: Event,
        effective_at: u64,
        takes_effect: bool,
    }

    /// Runs `clients` clients, each issuing operations one after another
    /// with random durations, against a sequential map; each operation takes
    /// effect at a random instant inside its interval. One in forty is lost
    /// (unknown outcome), and half of those never take effect.
    ///
    /// With `counters`, one operation in four is instead an `Incr` or a
    /// `Get` of one of that many counter keys.
    fn generate_history(
        seed: u64,
        clients: u64,
        keys: u64,
        counters: u64,
        operations: u64,
    ) -> History {
        let mut random = Xorshift(seed);
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut clock = random.below(10);
            for number in 0..operations / clients {
                let invoked_at = clock + random.below(5);
                let completed_at = invoked_at + 1 + random.below(30);
                let key = format!("key-{}", random.below(keys));
                let operation = match random.below(20) {
                    _ if counters > 0 && random.below(4) == 0 => {
                        let counter = format!("counter-{}", random.below(counters));
                        if random.below(3) == 0 {
                            get(&counter)
                        } else {
                            incr(&counter)
                        }
                    }
                    0..=8 => get(&key),
                    9..=16 => put(&key, &format!("value-{client}-{number}")),
                    _ => del(&key),
                };
                let lost = random.below(40) == 0;
                planned.push(Planned {
                    event: Event {
                        client,
                        operation,
                        invoked_at,
                        completed_at: (!lost).then_some(completed_at),
                        outcome: Outcome::Unknown,
                        part_of: None,
                    },
                    effective_at: invoked_at + random.below(completed_at - invoked_at + 1),
                    takes_effect: !lost || random.below(2) == 0,
                });
                clock = completed_at;
            }
        }
        run_reference_store(planned)
    }

    fn run_reference_store(mut planned: Vec<Planned>) -> History {
        planned.sort_by_key(|plan| plan.effective_at);
        let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut events = Vec::new();
        for mut plan in planned {
            if plan.takes_effect {
                let outcome = execute(&mut store, &plan.event.operation);
                if plan.event.completed_at.is_some() {
                    plan.event.outcome = outcome;
                }
            }
            events.push(plan.event);
        }
        events.sort_by_key(|event| event.invoked_at);
        History { events }
    }

    fn execute(store: &mut HashMap<Vec<u8>, Vec<u8>>, operation: &Operation) -> Outcome {
        match operation {
            Operation::Put { key, value } => {
                store.insert(key.clone(), value.clone());
                Outcome::Ok
            }
            Operation::Get { key } => store
                .get(key)
                .map_or(Outcome::NotFound, |value| Outcome::Value(value.clone())),
            Operation::Del { key } => match store.remove(key) {
                Some(_) => Outcome::Ok,
                None => Outcome::NotFound,
            },
            Operation::Incr { key } => {
                let before = store.get(key).map_or(Some(0), |value| redis_integer(value));
                let sum = before.expect("counters hold integers") + 1;
                store.insert(key.clone(), sum.to_string().into_bytes());
                Outcome::Integer(sum)
            }
        }
    }

    /// Makes the last eligible completed Get return a value that was certainly overwritten
    /// before it began: an acknowledged Put of a value written only once,
    /// then a completed Put or Del on the key, both before the Get's
    /// invocation. Returns the key.
    fn make_one_read_stale(history: &mut History) -> Vec<u8> {
        let events = &history.events;
        let precedes = |first: &Event, second: &Event| {
            first
                .completed_at
                .is_some_and(|time| time < second.invoked_at)
        };
        for (reader, read) in events.iter().enumerate().rev() {
            if read.completed_at.is_none() || !matches!(read.operation, Operation::Get { .. }) {
                continue;
            }
            let key = read.operation.key();
            let same_key = |event: &&Event| event.operation.key() == key;
            let overwrites = events
                .iter()
                .filter(same_key)
                .filter(|event| event.outcome != Outcome::Unknown)
                .filter(|event| !matches!(event.operation, Operation::Get { .. }))
                .filter(|event| precedes(event, read));
            for overwrite in overwrites {
                let old_write = events.iter().filter(same_key).find(|event| {
                    event.outcome == Outcome::Ok
                        && matches!(event.operation, Operation::Put { .. })
                        && precedes(event, overwrite)
                });
                if let Some(Event {
                    operation: Operation::Put { value, .. },
                    ..
                }) = old_write
                {
                    let (key, stale) = (key.to_vec(), Outcome::Value(value.clone()));
                    history.events[reader].outcome = stale;
                    return key;
                }
            }
        }
        panic!("the generated history has no read that can be made stale");
    }

    /// How many pairs of completed operations on the same key overlap in time.
    fn overlapping_pairs(history: &History) -> usize {
        let events = &history.events;
        let overlap =
            |(first, second): (&Event, &Event)| match (first.completed_at, second.completed_at) {
                (Some(first_end), Some(second_end)) => {
                    first.operation.key() == second.operation.key()
                        && first.invoked_at <= second_end
                        && second.invoked_at <= first_end
                }
                _ => false,
            };
        (0..events.len())
            .flat_map(|first| (first + 1..events.len()).map(move |second| (first, second)))
            .filter(|&(first, second)| overlap((&events[first], &events[second])))
            .count()
    }

    #[test]
    fn large_generated_history_is_linearizable_and_fast() {
        let history = generate_history(0x9E37_79B9_7F4A_7C15, 10, 20, 0, 2_000);
        assert_eq!(history.events.len(), 2_000);
        assert!(overlapping_pairs(&history) > 200, "too little concurrency");
        let started = Instant::now();
        let verdict = check(&history);
        let elapsed = started.elapsed();
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    }

    #[test]
    fn large_generated_history_with_counters_is_linearizable_and_fast() {
        let history = generate_history(0x2545_F491_4F6C_DD1D, 10, 20, 3, 2_000);
        let increments = history
            .events
            .iter()
            .filter(|event| matches!(event.operation, Operation::Incr { .. }))
            .count();
        assert!(increments > 200, "too few increments: {increments}");
        let started = Instant::now();
        let verdict = check(&history);
        let elapsed = started.elapsed();
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    }

    #[test]
    fn large_generated_history_with_one_repeated_count_is_caught() {
        let mut history = generate_history(0x2545_F491_4F6C_DD1D, 10, 20, 3, 2_000);
        // The last completed increment returns the sum of one on its
        // counter that completed before it began: as if the count between
        // had been lost.
        let events = &history.events;
        let counted = |event: &Event| {
            matches!(event.operation, Operation::Incr { .. })
                && matches!(event.outcome, Outcome::Integer(_))
        };
        let last = (0..events.len())
            .rev()
            .find(|&index| counted(&events[index]))
            .expect("a completed increment");
        let earlier = (0..last)
            .rev()
            .find(|&index| {
                counted(&events[index])
                    && events[index].operation == events[last].operation
                    && events[index].completed_at < Some(events[last].invoked_at)
            })
            .expect("an earlier increment of the same counter");
        history.events[last].outcome = events[earlier].outcome.clone();
        let counter = history.events[last].operation.key().to_vec();
        match check(&history) {
            Verdict::NotLinearizable { key, explanation } => {
                assert_eq!(key, counter, "{explanation}");
            }
            verdict => panic!("expected NotLinearizable, got {verdict:?}"),
        }
    }

    #[test]
    fn large_generated_history_with_one_stale_read_is_caught() {
        let mut history = generate_history(0x9E37_79B9_7F4A_7C15, 10, 20, 0, 2_000);
        let stale_key = make_one_read_stale(&mut history);
        match check(&history) {
            Verdict::NotLinearizable { key, explanation } => {
                assert_eq!(key, stale_key, "{explanation}");
                assert!(explanation.contains("cannot be explained"), "{explanation}");
            }
            verdict => panic!("expected NotLinearizable, got {verdict:?}"),
        }
    }
}
