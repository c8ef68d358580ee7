//! The key commands over RESP (`GET`, `SET`, `INCR`, `MSET`, ...), and
//! how their writes become log records.
//!
//! The leader turns every write command into its effects, puts and deletes
//! of whole values (`INCR` becomes a put of the new number), applies them
//! at once (later commands of the same `EXEC` see them; replies wait for
//! the commit as every write's do), and logs them as ONE record: a plain
//! `Put`/`Del` for one effect, a `Batch` for several, which replays
//! all-or-nothing. Followers and replay apply records and never interpret
//! a command, so replicas cannot diverge on how one is computed.

use crate::log::{BatchBuilder, Entry, Op};
use crate::protocol::command_table::CommandSpec;
use crate::protocol::resp::Args;
use crate::protocol::resp_reply as wire;
use crate::protocol::{ErrorReply, Reply};

use super::commands::{Call, NOT_AN_INTEGER, SYNTAX_ERROR, is_write, parse_i64, wrong_arity};
use super::session::Session;
use super::{Gate, Node, Undo};

/// The fixed part of a record's body (epoch, index, commit, op, key length).
const BODY_FIXED_BYTES: usize =
    crate::log::MAX_RECORD_BODY_BYTES - crate::log::MAX_KEY_AND_VALUE_BYTES;

/// Writes of the command (or `EXEC` block) being executed: they share one
/// log index, reserved when the first is applied.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Commands are executing between `open_effects` and `close_effects`.
    open: bool,
    index: u64,
    builder: BatchBuilder,
    /// The command that opened them writes at most one pair: its effect
    /// goes into the log at once as a plain Put or Del record, without
    /// the batch's copy of key and value (a fifth of a RESP SET's
    /// instructions went to the batch and to taking it apart again).
    single: bool,
}

/// Why a command refuses to write.
enum Refusal {
    OutOfMemory,
    TooLarge,
    /// Redis allows `""` as a key; kvstore's store and line protocol do not.
    EmptyKey,
}

impl Node {
    /// Routes a key command: to the leader (a redirect from a follower),
    /// then to its implementation.
    pub(super) fn key_command(
        &mut self,
        spec: &CommandSpec,
        args: &Args<'_>,
        session: &mut Session,
        call: &mut Call<'_>,
    ) {
        let key = args.get(spec.first_key as usize);
        if let Some(refusal) = self.redirect(is_write(spec), key) {
            return call.error(&refusal);
        }
        let opened = self.open_effects();
        // A command of one key writes at most that key's pair (Redis's key
        // positions say so: first key = last key); MSET, DEL k1 k2 and EXEC
        // blocks keep the batch and its one-record atomicity.
        self.effects.single = opened && spec.first_key == spec.last_key;
        match spec.name {
            "get" => self.get(key, call),
            "set" => self.set(args, call),
            "setnx" => self.set_if_missing(args, call),
            "getset" => self.get_and_set(args, call),
            "getdel" => self.get_and_delete(key, call),
            "del" | "unlink" => self.delete_keys(args, call),
            "exists" => self.exists(args, call),
            "mget" => self.multi_get(args, call),
            "mset" => self.multi_set(args, call, false),
            "msetnx" => self.multi_set(args, call, true),
            "strlen" => self.strlen(key, call),
            "append" => self.append(args, call),
            "incr" => self.increment(key, Ok(1), call),
            "decr" => self.increment(key, Ok(-1), call),
            "incrby" => self.increment(key, parse_i64(args.get(2)).ok_or(()), call),
            "decrby" => {
                let delta = match parse_i64(args.get(2)) {
                    Some(i64::MIN) => Err(()),
                    Some(delta) => Ok(-delta),
                    None => Err(()),
                };
                self.increment(key, delta, call)
            }
            "type" => self.key_type(key, call),
            "watch" => self.watch(args, session, call),
            _ => call.error(&format!("ERR command '{}' is not implemented", spec.name)),
        }
        if opened {
            self.close_effects();
        }
    }

    /// Starts collecting effects unless a block (`EXEC`) already does;
    /// returns whether this call opened it (and must close it).
    pub(super) fn open_effects(&mut self) -> bool {
        if self.effects.open || !self.is_serving_leader() {
            return false;
        }
        debug_assert_eq!(self.applied_index, self.log.last_index());
        debug_assert!(self.effects.builder.is_empty());
        self.effects.open = true;
        self.effects.index = self.log.last_index() + 1;
        true
    }

    /// Logs the effects collected since [`Self::open_effects`] as one
    /// record (none if there were none).
    pub(super) fn close_effects(&mut self) {
        self.effects.open = false;
        self.effects.single = false;
        if self.effects.builder.is_empty() {
            return;
        }
        let index = self.effects.index;
        let batch = self.effects.builder.op();
        let op = match batch {
            Op::Batch(batch) if self.effects.builder.count() == 1 => {
                batch.iter().next().unwrap_or(Op::Noop)
            }
            op => op,
        };
        self.log.append(&Entry {
            epoch: self.promised_epoch,
            index,
            commit: self.commit_index,
            op,
        });
        self.applied_index = index;
        self.effects.builder.clear();
    }

    /// The gate of a reply that depends on the effects applied so far.
    fn write_gate(&self) -> Gate {
        Gate {
            index: self.effects.index,
            round: 0,
        }
    }

    /// Applies one effect now, under the reserved index, keeping what it
    /// replaced (in a cluster) to take it back if this leader is deposed.
    fn apply_effect(&mut self, op: Op<'_>) {
        debug_assert!(self.effects.open);
        let index = self.effects.index;
        let key = match op {
            Op::Put { key, .. } | Op::Del { key } => key,
            _ => return,
        };
        if matches!(op, Op::Del { .. }) {
            self.last_delete_index = index;
        }
        if self.effects.single {
            // One record at the reserved index, now; a second effect of
            // the same command would need the same index: a bug.
            assert!(
                self.applied_index < index,
                "a single-pair write made a second effect"
            );
            self.log.append(&Entry {
                epoch: self.promised_epoch,
                index,
                commit: self.commit_index,
                op,
            });
            self.applied_index = index;
        } else {
            match op {
                Op::Put { key, value } => self.effects.builder.push_put(key, value),
                _ => self.effects.builder.push_del(key),
            }
        }
        if self.config.cluster_size == 1 {
            self.store.apply(index, &op);
        } else {
            let previous = self.store.apply_returning_previous(index, &op);
            self.undo.push_back(Undo {
                index,
                key: key.into(),
                previous,
            });
        }
    }

    /// Whether puts of these (key, value length)s may be applied: within
    /// `--max-memory-bytes` and within what one log record holds.
    fn check_puts(&self, puts: &[(&[u8], usize)]) -> Result<(), Refusal> {
        if puts.iter().any(|(key, _)| key.is_empty()) {
            return Err(Refusal::EmptyKey);
        }
        if let Some(max_bytes) = self.config.max_memory_bytes {
            let growth: isize = puts
                .iter()
                .map(|(key, value_bytes)| self.store.growth_if_put(key, *value_bytes).max(0))
                .sum();
            if growth > 0 && self.store.used_bytes() + growth as usize > max_bytes {
                return Err(Refusal::OutOfMemory);
            }
        }
        let adding: usize = puts
            .iter()
            .map(|(key, value_bytes)| crate::log::BATCH_OP_HEADER_BYTES + key.len() + value_bytes)
            .sum();
        let body = BODY_FIXED_BYTES + self.effects.builder.body_bytes().len() + adding;
        if body > crate::log::MAX_RECORD_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        Ok(())
    }

    fn refuse(&self, refusal: Refusal, call: &mut Call<'_>) {
        let reason = match refusal {
            Refusal::EmptyKey => return call.error("ERR empty key"),
            Refusal::OutOfMemory => ErrorReply::OutOfMemory,
            Refusal::TooLarge => ErrorReply::ValueTooLarge {
                max_value_bytes: crate::log::MAX_KEY_AND_VALUE_BYTES
                    .saturating_sub(self.effects.builder.body_bytes().len()),
            },
        };
        Reply::Error(reason).encode_for(crate::protocol::Protocol::Resp(call.version), call.out);
    }

    /// Reads whether `key` exists, in one lookup, and makes the reply wait
    /// for what that observed: the write that set it, or for a missing key
    /// the latest delete.
    fn read_exists(&mut self, key: &[u8], call: &mut Call<'_>) -> bool {
        let (index, exists) = match self.store.lookup(key) {
            Some(pair) => (pair.write_index(), true),
            None => (self.last_delete_index, false),
        };
        let gate = self.read_gate(index);
        call.wait_for(gate);
        exists
    }

    /// One lookup, as the line protocol's `GET` does: the round is taken
    /// first, so the pair can be read and copied out in the same borrow.
    fn get(&mut self, key: &[u8], call: &mut Call<'_>) {
        let round = self.is_serving_leader().then(|| self.read_round());
        let gate_for = |index| round.map_or(Gate::OPEN, |round| Gate { index, round });
        match self.store.lookup(key) {
            Some(pair) => {
                call.wait_for(gate_for(pair.write_index()));
                wire::bulk(call.out, pair.value());
            }
            None => {
                call.wait_for(gate_for(self.last_delete_index));
                call.null();
            }
        }
    }

    /// `SET key value [NX|XX] [GET]`.
    fn set(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let options = match SetOptions::parse(args) {
            Ok(options) => options,
            Err(text) => return call.error(text),
        };
        let (key, value) = (args.get(1), args.get(2));
        let conditional = options.only_if_missing || options.only_if_present || options.get;
        let mut exists = false;
        if conditional {
            // Only a conditional SET reads the key (a plain one is a
            // blind write: one lookup, the insert).
            exists = self.read_exists(key, call);
        }
        let skip = (options.only_if_missing && exists) || (options.only_if_present && !exists);
        if !skip && let Err(refusal) = self.check_puts(&[(key, value.len())]) {
            return self.refuse(refusal, call);
        }
        if options.get {
            match self.store.get(key) {
                Some(old) => wire::bulk(call.out, old),
                None => call.null(),
            }
        }
        if skip {
            if !options.get {
                call.null();
            }
            return;
        }
        self.apply_effect(Op::Put { key, value });
        call.wait_for(self.write_gate());
        if !options.get {
            call.ok();
        }
    }

    fn set_if_missing(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let (key, value) = (args.get(1), args.get(2));
        if self.read_exists(key, call) {
            return wire::integer(call.out, 0);
        }
        if let Err(refusal) = self.check_puts(&[(key, value.len())]) {
            return self.refuse(refusal, call);
        }
        self.apply_effect(Op::Put { key, value });
        call.wait_for(self.write_gate());
        wire::integer(call.out, 1);
    }

    fn get_and_set(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let (key, value) = (args.get(1), args.get(2));
        if let Err(refusal) = self.check_puts(&[(key, value.len())]) {
            return self.refuse(refusal, call);
        }
        match self.store.get(key) {
            Some(old) => wire::bulk(call.out, old),
            None => call.null(),
        }
        self.apply_effect(Op::Put { key, value });
        call.wait_for(self.write_gate());
    }

    fn get_and_delete(&mut self, key: &[u8], call: &mut Call<'_>) {
        if !self.read_exists(key, call) {
            return call.null();
        }
        let old = self.store.get(key).unwrap_or_default();
        wire::bulk(call.out, old);
        self.apply_effect(Op::Del { key });
        call.wait_for(self.write_gate());
    }

    /// `DEL`/`UNLINK`: how many of the keys existed (a key named twice
    /// counts once: it is gone the second time).
    fn delete_keys(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let mut deleted = 0;
        for key in args.iter().skip(1) {
            if self.read_exists(key, call) {
                if self.check_puts(&[(key, 0)]).is_err() && !self.effects.builder.is_empty() {
                    // The record cannot grow further; the keys left stay.
                    break;
                }
                self.apply_effect(Op::Del { key });
                deleted += 1;
            }
        }
        if deleted > 0 {
            call.wait_for(self.write_gate());
        }
        wire::integer(call.out, deleted);
    }

    fn exists(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let mut found = 0;
        for key in args.iter().skip(1) {
            found += i64::from(self.read_exists(key, call));
        }
        wire::integer(call.out, found);
    }

    fn multi_get(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        wire::array(call.out, args.len() - 1);
        for key in args.iter().skip(1) {
            self.get(key, call);
        }
    }

    /// `MSET` and `MSETNX` (`only_if_none`: nothing is set if any key
    /// exists): all pairs or none, in one record.
    fn multi_set(&mut self, args: &Args<'_>, call: &mut Call<'_>, only_if_none: bool) {
        if args.len().is_multiple_of(2) {
            let name = if only_if_none { "msetnx" } else { "mset" };
            return call.error(&wrong_arity(name));
        }
        let pairs = || {
            (1..args.len())
                .step_by(2)
                .map(|i| (args.get(i), args.get(i + 1)))
        };
        if only_if_none {
            let mut any_exists = false;
            for (key, _) in pairs() {
                any_exists |= self.read_exists(key, call);
            }
            if any_exists {
                return wire::integer(call.out, 0);
            }
        }
        let sizes: Vec<(&[u8], usize)> = pairs().map(|(key, value)| (key, value.len())).collect();
        if let Err(refusal) = self.check_puts(&sizes) {
            return self.refuse(refusal, call);
        }
        for (key, value) in pairs() {
            self.apply_effect(Op::Put { key, value });
        }
        call.wait_for(self.write_gate());
        if only_if_none {
            wire::integer(call.out, 1);
        } else {
            call.ok();
        }
    }

    fn strlen(&mut self, key: &[u8], call: &mut Call<'_>) {
        self.read_exists(key, call);
        let length = self.store.get(key).map_or(0, <[u8]>::len);
        wire::integer(call.out, length as i64);
    }

    fn append(&mut self, args: &Args<'_>, call: &mut Call<'_>) {
        let (key, suffix) = (args.get(1), args.get(2));
        let mut value = self.store.get(key).unwrap_or_default().to_vec();
        value.extend_from_slice(suffix);
        if let Err(refusal) = self.check_puts(&[(key, value.len())]) {
            return self.refuse(refusal, call);
        }
        self.apply_effect(Op::Put { key, value: &value });
        call.wait_for(self.write_gate());
        wire::integer(call.out, value.len() as i64);
    }

    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: 64-bit signed, Redis's errors.
    fn increment(&mut self, key: &[u8], delta: Result<i64, ()>, call: &mut Call<'_>) {
        let Ok(delta) = delta else {
            return call.error(NOT_AN_INTEGER);
        };
        let current = match self.store.get(key) {
            None => 0,
            Some(value) => match parse_i64(value) {
                Some(number) => number,
                None => return call.error(NOT_AN_INTEGER),
            },
        };
        let Some(next) = current.checked_add(delta) else {
            return call.error("ERR increment or decrement would overflow");
        };
        let digits = next.to_string();
        let value = digits.as_bytes();
        if let Err(refusal) = self.check_puts(&[(key, value.len())]) {
            return self.refuse(refusal, call);
        }
        self.apply_effect(Op::Put { key, value });
        call.wait_for(self.write_gate());
        wire::integer(call.out, next);
    }

    fn key_type(&mut self, key: &[u8], call: &mut Call<'_>) {
        let kind = if self.read_exists(key, call) {
            "string"
        } else {
            "none"
        };
        wire::simple(call.out, kind);
    }
}

/// The options of `SET` kvstore knows.
#[derive(Debug, Default)]
struct SetOptions {
    only_if_missing: bool,
    only_if_present: bool,
    get: bool,
}

impl SetOptions {
    fn parse(args: &Args<'_>) -> Result<SetOptions, &'static str> {
        let mut options = SetOptions::default();
        for option in args.iter().skip(3) {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" if !options.only_if_present => options.only_if_missing = true,
                b"XX" if !options.only_if_missing => options.only_if_present = true,
                b"GET" => options.get = true,
                b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                    return Err(
                        "ERR expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported by kvstore",
                    );
                }
                _ => return Err(SYNTAX_ERROR),
            }
        }
        Ok(options)
    }
}
