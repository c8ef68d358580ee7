//! Redis commands (RESP): dispatch, arity, `MULTI` queuing and the
//! connection commands. The key commands are in `strings.rs`, transactions
//! in `transaction.rs`, introspection (`INFO`, `ROLE`, `HELLO`, `CLUSTER`)
//! in `introspect.rs`.
//!
//! A command writes its whole reply into the connection's queue and says
//! what the reply waits for (a [`Gate`]): every write goes through the log,
//! replication and the durable-before-reply rule as `PUT` does, and every
//! read through the same linearizable read (ReadIndex) as `GET`. The reply
//! texts, types and arities are Redis 7's, since clients parse them.

use crate::protocol::command_table::{self, CommandSpec};
use crate::protocol::keyslot::keyslot;
use crate::protocol::resp::Args;
use crate::protocol::resp_reply::{self as wire, Version};
use crate::protocol::{CLUSTER_DOWN, Protocol};

use super::introspect::ServerFacts;
use super::session::{MAX_QUEUED_BYTES, Session, Transaction};
use super::{Flow, Gate, Node, ReplyQueue};
use crate::config::FollowerReads;

/// One command's reply being built.
pub(super) struct Call<'o> {
    pub(super) out: &'o mut Vec<u8>,
    pub(super) version: Version,
    /// What the reply waits for so far.
    pub(super) gate: Gate,
    pub(super) flow: Flow,
}

impl Call<'_> {
    /// The reply also waits for `gate`.
    pub(super) fn wait_for(&mut self, gate: Gate) {
        self.gate = Gate {
            index: self.gate.index.max(gate.index),
            round: self.gate.round.max(gate.round),
        };
    }

    pub(super) fn error(&mut self, text: &str) {
        wire::error(self.out, text);
    }

    pub(super) fn ok(&mut self) {
        wire::simple(self.out, "OK");
    }

    pub(super) fn null(&mut self) {
        wire::null(self.out, self.version);
    }
}

/// Redis's reply to a wrong argument count.
pub(super) fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

pub(super) const SYNTAX_ERROR: &str = "ERR syntax error";
pub(super) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's reply to an unknown command: its name and the start of its
/// arguments, each cut to 128 bytes in all, as Redis does.
fn unknown_command(args: &Args<'_>) -> String {
    let name = String::from_utf8_lossy(truncated(args.get(0), 128));
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        let room = 128usize.saturating_sub(listed.len());
        if room == 0 {
            break;
        }
        let arg = String::from_utf8_lossy(truncated(arg, room));
        listed.push_str(&format!("'{arg}' "));
    }
    format!("ERR unknown command '{name}', with args beginning with: {listed}")
}

fn truncated(bytes: &[u8], limit: usize) -> &[u8] {
    &bytes[..bytes.len().min(limit)]
}

/// Commands that run at once inside `MULTI` instead of being queued.
fn runs_inside_multi(name: &str) -> bool {
    matches!(name, "multi" | "exec" | "discard" | "watch" | "quit")
}

/// Whether `spec` reads or writes keys (and so is routed to the leader).
pub(super) fn is_key_command(spec: &CommandSpec) -> bool {
    spec.first_key > 0
}

pub(super) fn is_write(spec: &CommandSpec) -> bool {
    spec.flags.contains(&"write")
}

impl Node {
    /// Executes one RESP request (`args`: the command name, then its
    /// arguments), pushing its reply onto `replies`. `facts`: what the
    /// driver knows that the core does not (connections, process, disk),
    /// for `INFO`.
    pub fn handle_command(
        &mut self,
        args: Args<'_>,
        session: &mut Session,
        facts: &ServerFacts,
        replies: &mut ReplyQueue,
    ) -> Flow {
        if args.is_empty() {
            return Flow::Continue;
        }
        let released = self.released();
        let mut flow = Flow::Continue;
        let mut version = match replies.protocol() {
            Protocol::Resp(version) => version,
            Protocol::Line => Version::Resp2,
        };
        replies.push_encoded(released, |out, _| {
            let mut call = Call {
                out,
                version,
                gate: Gate::OPEN,
                flow: Flow::Continue,
            };
            self.dispatch(&args, session, facts, &mut call);
            flow = call.flow;
            version = call.version;
            call.gate
        });
        replies.set_protocol(Protocol::Resp(version));
        flow
    }

    /// Runs (or, inside `MULTI`, queues) one command.
    pub(super) fn dispatch(
        &mut self,
        args: &Args<'_>,
        session: &mut Session,
        facts: &ServerFacts,
        call: &mut Call<'_>,
    ) {
        let Some(spec) = command_table::lookup(args.get(0)) else {
            flag_transaction(session);
            return call.error(&unknown_command(args));
        };
        if !command_table::arity_ok(spec, args.len()) {
            flag_transaction(session);
            return call.error(&wrong_arity(spec.name));
        }
        if session.transaction.is_some() && !runs_inside_multi(spec.name) {
            return self.queue(spec, args, session, call);
        }
        if is_key_command(spec) {
            return self.key_command(spec, args, session, call);
        }
        match spec.name {
            "ping" => ping(args, call),
            "echo" => wire::bulk(call.out, args.get(1)),
            "quit" => {
                call.ok();
                call.flow = Flow::Close;
            }
            "select" => select(args, call),
            "readonly" | "readwrite" | "asking" => call.ok(),
            "client" => client(args, session, call),
            "command" => command(args, call),
            "auth" => call.error("ERR AUTH is answered by the connection"),
            "multi" => self.multi(session, call),
            "exec" => self.exec(session, facts, call),
            "discard" => discard(session, call),
            "unwatch" => {
                session.watched.clear();
                call.ok();
            }
            "dbsize" => self.dbsize(call),
            _ => self.introspect(spec, args, session, facts, call),
        }
    }

    /// Whether this node answers a command on `key`: the leader always; a
    /// follower reads from its own copy under `--follower-reads local`.
    /// Otherwise the reply is a Redis Cluster redirect to the leader
    /// (`MOVED`: cluster clients follow it) or `CLUSTERDOWN` while no
    /// leader is known (they retry).
    pub(super) fn redirect(&self, writes: bool, key: &[u8]) -> Option<String> {
        if self.is_serving_leader() {
            return None;
        }
        if !writes && self.config.follower_reads == FollowerReads::Local {
            return None;
        }
        Some(match self.leader_hint() {
            Some((_, address)) => format!("MOVED {} {address}", keyslot(key)),
            None => CLUSTER_DOWN.to_string(),
        })
    }

    /// Inside `MULTI`: keeps the command for `EXEC`, or refuses it now
    /// (and with it the whole block) if it cannot run here.
    fn queue(
        &mut self,
        spec: &CommandSpec,
        args: &Args<'_>,
        session: &mut Session,
        call: &mut Call<'_>,
    ) {
        let bytes: usize = args.iter().map(<[u8]>::len).sum();
        if session.queued_bytes() + bytes > MAX_QUEUED_BYTES {
            flag_transaction(session);
            return call.error(&format!(
                "ERR transaction too large (limit {MAX_QUEUED_BYTES} bytes queued)"
            ));
        }
        if is_key_command(spec)
            && let Some(refusal) = self.redirect(is_write(spec), args.get(spec.first_key as usize))
        {
            flag_transaction(session);
            return call.error(&refusal);
        }
        if let Some(transaction) = session.transaction.as_mut() {
            transaction.queue(args);
        }
        wire::simple(call.out, "QUEUED");
    }

    fn multi(&mut self, session: &mut Session, call: &mut Call<'_>) {
        if session.transaction.is_some() {
            return call.error("ERR MULTI calls can not be nested");
        }
        session.transaction = Some(Transaction::default());
        call.ok();
    }

    fn dbsize(&mut self, call: &mut Call<'_>) {
        if self.is_serving_leader() {
            // The count includes writes not yet committed.
            let gate = self.read_gate(self.applied_index);
            call.wait_for(gate);
        }
        wire::integer(call.out, self.store.len() as i64);
    }

    /// What a leader's read that observed the write at `index` waits for:
    /// that write, and in a cluster a read round sent after it (ReadIndex).
    /// A follower's local read waits for nothing.
    pub(super) fn read_gate(&mut self, index: u64) -> Gate {
        if !self.is_serving_leader() {
            return Gate::OPEN;
        }
        Gate {
            index,
            round: self.read_round(),
        }
    }
}

/// A refused command inside `MULTI` makes `EXEC` discard the block.
fn flag_transaction(session: &mut Session) {
    if let Some(transaction) = session.transaction.as_mut() {
        transaction.dirty = true;
    }
}

fn discard(session: &mut Session, call: &mut Call<'_>) {
    if session.transaction.take().is_none() {
        return call.error("ERR DISCARD without MULTI");
    }
    session.watched.clear();
    call.ok();
}

fn ping(args: &Args<'_>, call: &mut Call<'_>) {
    match args.len() {
        1 => wire::simple(call.out, "PONG"),
        2 => wire::bulk(call.out, args.get(1)),
        _ => call.error(&wrong_arity("ping")),
    }
}

/// `SELECT 0` only: kvstore has one keyspace.
fn select(args: &Args<'_>, call: &mut Call<'_>) {
    match parse_i64(args.get(1)) {
        Some(0) => call.ok(),
        Some(_) => call.error("ERR DB index is out of range"),
        None => call.error(NOT_AN_INTEGER),
    }
}

fn client(args: &Args<'_>, session: &mut Session, call: &mut Call<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"setname", 3) => set_name(args.get(2), session, call),
        (b"getname", 2) => match &session.name {
            Some(name) => wire::bulk(call.out, name),
            None => call.null(),
        },
        (b"id", 2) => wire::integer(call.out, session.id as i64),
        (b"setinfo", 4) => match args.get(2).to_ascii_lowercase().as_slice() {
            b"lib-name" | b"lib-ver" => call.ok(),
            _ => call.error(&format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(args.get(2))
            )),
        },
        (b"setname" | b"getname" | b"id" | b"setinfo", _) => {
            let name = format!("client|{}", String::from_utf8_lossy(&sub));
            call.error(&wrong_arity(&name))
        }
        _ => call.error(&unknown_subcommand(args.get(1), "CLIENT")),
    }
}

/// `CLIENT SETNAME` (and `HELLO ... SETNAME`): Redis's rule on names.
pub(super) fn set_name(name: &[u8], session: &mut Session, call: &mut Call<'_>) {
    match name_session(name, session) {
        Ok(()) => call.ok(),
        Err(text) => call.error(text),
    }
}

/// Names the session (`CLIENT SETNAME`, `HELLO ... SETNAME`) by Redis's
/// rule on names; an empty name clears it.
pub(super) fn name_session(name: &[u8], session: &mut Session) -> Result<(), &'static str> {
    if name.iter().any(|byte| !(b'!'..=b'~').contains(byte)) {
        return Err("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    session.name = (!name.is_empty()).then(|| name.into());
    Ok(())
}

pub(super) fn unknown_subcommand(sub: &[u8], command: &str) -> String {
    format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(truncated(sub, 128))
    )
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO`, `COMMAND DOCS`: what
/// redis-cli asks at start and cluster clients read to find keys.
fn command(args: &Args<'_>, call: &mut Call<'_>) {
    if args.len() == 1 {
        return command_table::encode_all(call.out, call.version);
    }
    match args.get(1).to_ascii_lowercase().as_slice() {
        b"count" => wire::integer(call.out, command_table::COMMANDS.len() as i64),
        b"docs" => command_table::encode_docs(call.out, args.iter().skip(2), call.version),
        b"info" => {
            wire::array(call.out, args.len() - 2);
            for name in args.iter().skip(2) {
                match command_table::lookup(name) {
                    Some(spec) => command_table::encode_command_info(call.out, spec, call.version),
                    None => call.null(),
                }
            }
        }
        _ => call.error(&unknown_subcommand(args.get(1), "COMMAND")),
    }
}

/// Redis's strict integer syntax (`string2ll`): an optional `-`, digits,
/// no leading zeros, no spaces or `+`, within 64 bits.
pub(super) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let well_formed = !digits.is_empty()
        && digits.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
        && bytes != b"-0";
    if !well_formed {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_does() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"1.5",
            b"9223372036854775808",
            b"abc",
        ] {
            assert_eq!(parse_i64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unknown_commands_are_named_with_their_first_arguments() {
        let bytes = b"FOOab";
        let ranges = [0..3, 3..4, 4..5];
        let args = Args::new(bytes, &ranges);
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
        );
    }
}
