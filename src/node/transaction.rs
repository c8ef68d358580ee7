//! `MULTI`/`EXEC` and `WATCH` over RESP.
//!
//! `EXEC` runs the queued commands one after the other in one call of the
//! core, so nothing else interleaves; their writes share one log record (a
//! batch that replays all-or-nothing) and the whole reply waits for that
//! record's commit. `WATCH` is optimistic: every stored pair carries the
//! index of the write that set it, so `EXEC` compares what each watched
//! key holds now with what it held when watched, and aborts with a null
//! reply if anything changed.

use crate::protocol::resp::Args;
use crate::protocol::resp_reply as wire;

use super::commands::{Call, is_key_command, is_write};
use super::introspect::ServerFacts;
use super::session::{Seen, Session, Watch};
use super::{Gate, Node};
use crate::protocol::command_table;

impl Node {
    pub(super) fn watch(&mut self, args: &Args<'_>, session: &mut Session, call: &mut Call<'_>) {
        if session.transaction.is_some() {
            return call.error("ERR WATCH inside MULTI is not allowed");
        }
        for key in args.iter().skip(1) {
            let seen = self.seen(key);
            session.watched.push(Watch {
                key: key.into(),
                seen,
            });
        }
        call.ok();
    }

    /// What `key` holds now, as far as `WATCH` is concerned.
    fn seen(&self, key: &[u8]) -> Seen {
        match self.store.lookup(key) {
            Some(pair) => Seen::Written(pair.write_index()),
            None => Seen::Missing {
                last_delete_index: self.last_delete_index,
            },
        }
    }

    pub(super) fn exec(&mut self, session: &mut Session, facts: &ServerFacts, call: &mut Call<'_>) {
        let Some(transaction) = session.transaction.take() else {
            return call.error("ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut session.watched);
        if transaction.dirty {
            return call.error("EXECABORT Transaction discarded because of previous errors.");
        }
        if let Some(refusal) = self.exec_redirect(&transaction) {
            return call.error(&refusal);
        }
        if !self.watched_unchanged(&watched, call) {
            return wire::null_array(call.out, call.version);
        }
        wire::array(call.out, transaction.len());
        let opened = self.open_effects();
        for index in 0..transaction.len() {
            let args = transaction.command(index);
            self.dispatch(&args, session, facts, call);
        }
        if opened {
            self.close_effects();
        }
    }

    /// A block with a write must run on the leader: leadership may have
    /// moved since its commands were queued.
    fn exec_redirect(&self, transaction: &super::session::Transaction) -> Option<String> {
        (0..transaction.len()).find_map(|index| {
            let args = transaction.command(index);
            let spec = command_table::lookup(args.get(0))?;
            if !is_key_command(spec) {
                return None;
            }
            self.redirect(is_write(spec), args.get(spec.first_key as usize))
        })
    }

    /// Whether every watched key holds what it held when watched. The
    /// answer is a read: it waits for what it observed.
    fn watched_unchanged(&mut self, watched: &[Watch], call: &mut Call<'_>) -> bool {
        let mut unchanged = true;
        for watch in watched {
            let now = self.seen(&watch.key);
            let index = match now {
                Seen::Written(index) => index,
                Seen::Missing { last_delete_index } => last_delete_index,
            };
            let gate: Gate = self.read_gate(index);
            call.wait_for(gate);
            unchanged &= now == watch.seen;
        }
        unchanged
    }
}
