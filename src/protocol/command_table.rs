//! The commands kvstore answers over RESP, with Redis 7's metadata.
//!
//! Clients read this table through `COMMAND`, `COMMAND COUNT`, `COMMAND INFO`
//! and `COMMAND DOCS`: cluster clients (redis-py's `RedisCluster`) route a
//! request by its first key, last key and key step. The server checks arity
//! against it before running a command.
//!
//! Every name, arity, flag, key position, ACL category and doc string was
//! copied from `COMMAND INFO` and `COMMAND DOCS` of redis-server 7.0.15, not
//! written by hand. Where an entry is shorter than Redis's, it says so:
//! command tips, key specifications and subcommands are sent empty, and
//! docs carry only summary, since, group and complexity. Container commands
//! (`client`, `command`, `config`, `cluster`) have their own entry only.
//!
//! Pure: no I/O; lookups and encoding allocate nothing but the growth of
//! `out`.

use super::resp_reply::{self, Version};

/// One command's metadata, in Redis's conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// The name, in lowercase.
    pub name: &'static str,
    /// How many arguments, the name included: exactly `arity` if positive,
    /// at least `-arity` if negative.
    pub arity: i32,
    /// Redis's command flags (`readonly`, `write`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// Index of the first key argument (0: the command takes no keys).
    pub first_key: i32,
    /// Index of the last key argument; -1 means the last argument.
    pub last_key: i32,
    /// Distance between key arguments (2 for MSET's key-value pairs).
    pub step: i32,
    /// Redis's ACL categories (`@read`, `@string`, ...).
    pub acl_categories: &'static [&'static str],
    /// What `COMMAND DOCS` says of it.
    pub docs: CommandDocs,
}

/// The part of `COMMAND DOCS` kvstore sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDocs {
    /// One line on what the command does.
    pub summary: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// Redis's command group (`string`, `generic`, `connection`, `server`,
    /// `transactions`, `cluster`).
    pub group: &'static str,
    /// Its time complexity, in Redis's words.
    pub complexity: &'static str,
}

/// The command named `name`, ignoring ASCII case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    position(name).map(|at| &COMMANDS[at])
}

/// Where the command named `name` is in [`COMMANDS`], ignoring ASCII case
/// (counters are kept by it). One hash lookup of the lowercased name: a
/// scan of the table cost about 100 instructions per request, twice (the
/// counters, then the dispatch), on the hot path of every RESP request.
pub fn position(name: &[u8]) -> Option<usize> {
    // The two commands most requests are, without hashing.
    if let [first, second, third] = name {
        match [first | 0x20, second | 0x20, third | 0x20] {
            [b'g', b'e', b't'] => return Some(GET_POSITION),
            [b's', b'e', b't'] => return Some(SET_POSITION),
            _ => {}
        }
    }
    let mut lowercase = [0u8; MAX_NAME_BYTES];
    let lowercase = lowercase.get_mut(..name.len())?;
    lowercase.copy_from_slice(name);
    lowercase.make_ascii_lowercase();
    by_name().get(&*lowercase).copied()
}

/// Where `get` and `set` are in [`COMMANDS`] (checked by a test).
const GET_POSITION: usize = 0;
const SET_POSITION: usize = 1;

/// The longest command name in [`COMMANDS`] (checked by a test).
const MAX_NAME_BYTES: usize = 16;

fn by_name() -> &'static hashbrown::HashMap<&'static [u8], usize> {
    static BY_NAME: std::sync::OnceLock<hashbrown::HashMap<&'static [u8], usize>> =
        std::sync::OnceLock::new();
    BY_NAME.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(at, spec)| (spec.name.as_bytes(), at))
            .collect()
    })
}

/// Whether a request of `argc` arguments (the name included) has the
/// arity `spec` wants.
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    let arity = spec.arity.unsigned_abs() as usize;
    if spec.arity >= 0 {
        argc == arity
    } else {
        argc >= arity
    }
}

/// Redis 7's ten-element `COMMAND INFO` entry for `spec`: name, arity,
/// flags, first key, last key, step, ACL categories, tips, key
/// specifications and subcommands (the last three empty). Flags,
/// categories and the empty lists are sets, as Redis 7.0 sends them.
pub fn encode_command_info(out: &mut Vec<u8>, spec: &CommandSpec, version: Version) {
    resp_reply::array(out, 10);
    resp_reply::bulk(out, spec.name.as_bytes());
    resp_reply::integer(out, i64::from(spec.arity));
    encode_simple_set(out, spec.flags, version);
    resp_reply::integer(out, i64::from(spec.first_key));
    resp_reply::integer(out, i64::from(spec.last_key));
    resp_reply::integer(out, i64::from(spec.step));
    encode_simple_set(out, spec.acl_categories, version);
    for _tips_key_specs_subcommands in 0..3 {
        resp_reply::set(out, 0, version);
    }
}

/// `COMMAND`: every command's entry, in table order.
pub fn encode_all(out: &mut Vec<u8>, version: Version) {
    resp_reply::array(out, COMMANDS.len());
    for spec in COMMANDS {
        encode_command_info(out, spec, version);
    }
}

/// `COMMAND INFO [name ...]`: one entry per name, in order, and a null for
/// a name not in the table; with no names, every command (as `COMMAND`).
pub fn encode_info<'a>(
    out: &mut Vec<u8>,
    names: impl Iterator<Item = &'a [u8]> + Clone,
    version: Version,
) {
    let count = names.clone().count();
    if count == 0 {
        return encode_all(out, version);
    }
    resp_reply::array(out, count);
    for name in names {
        match lookup(name) {
            Some(spec) => encode_command_info(out, spec, version),
            None => resp_reply::null(out, version),
        }
    }
}

/// `COMMAND DOCS [name ...]`: a map from each known name, in order, to its
/// docs (summary, since, group, complexity); unknown names are left out.
/// With no names, every command.
pub fn encode_docs<'a>(
    out: &mut Vec<u8>,
    names: impl Iterator<Item = &'a [u8]> + Clone,
    version: Version,
) {
    if names.clone().next().is_none() {
        resp_reply::map(out, COMMANDS.len(), version);
        COMMANDS
            .iter()
            .for_each(|spec| encode_command_docs(out, spec, version));
        return;
    }
    let known = names.clone().filter_map(lookup);
    resp_reply::map(out, known.clone().count(), version);
    known.for_each(|spec| encode_command_docs(out, spec, version));
}

/// One pair of the `COMMAND DOCS` map: the name, then a map of its docs.
fn encode_command_docs(out: &mut Vec<u8>, spec: &CommandSpec, version: Version) {
    let docs = &spec.docs;
    resp_reply::bulk(out, spec.name.as_bytes());
    resp_reply::map(out, 4, version);
    for (field, value) in [
        ("summary", docs.summary),
        ("since", docs.since),
        ("group", docs.group),
        ("complexity", docs.complexity),
    ] {
        resp_reply::bulk(out, field.as_bytes());
        resp_reply::bulk(out, value.as_bytes());
    }
}

/// A set of simple strings (flags, ACL categories).
fn encode_simple_set(out: &mut Vec<u8>, items: &[&str], version: Version) {
    resp_reply::set(out, items.len(), version);
    for item in items {
        resp_reply::simple(out, item);
    }
}

/// Every command kvstore answers over RESP, as Redis 7.0.15 describes it.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@read", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Get the value of a key",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@slow"],
        docs: CommandDocs {
            summary: "Set the string value of a key",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Set the value of a key, only if the key does not exist",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "getset",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Set the string value of a key and return its old value",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "getdel",
        arity: 2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Get the value of a key and delete the key",
            since: "6.2.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &["write"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@write", "@slow"],
        docs: CommandDocs {
            summary: "Delete a key",
            since: "1.0.0",
            group: "generic",
            complexity: "O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1).",
        },
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@write", "@fast"],
        docs: CommandDocs {
            summary: "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
            since: "4.0.0",
            group: "generic",
            complexity: "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of.",
        },
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        docs: CommandDocs {
            summary: "Determine if a key exists",
            since: "1.0.0",
            group: "generic",
            complexity: "O(N) where N is the number of keys to check.",
        },
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@read", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Get the values of all the given keys",
            since: "1.0.0",
            group: "string",
            complexity: "O(N) where N is the number of keys to retrieve.",
        },
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: -1,
        step: 2,
        acl_categories: &["@write", "@string", "@slow"],
        docs: CommandDocs {
            summary: "Set multiple keys to multiple values",
            since: "1.0.1",
            group: "string",
            complexity: "O(N) where N is the number of keys to set.",
        },
    },
    CommandSpec {
        name: "msetnx",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: -1,
        step: 2,
        acl_categories: &["@write", "@string", "@slow"],
        docs: CommandDocs {
            summary: "Set multiple keys to multiple values, only if none of the keys exist",
            since: "1.0.1",
            group: "string",
            complexity: "O(N) where N is the number of keys to set.",
        },
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@read", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Get the length of the value stored in a key",
            since: "2.2.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "append",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Append a value to a key",
            since: "2.0.0",
            group: "string",
            complexity: "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation.",
        },
    },
    CommandSpec {
        name: "incr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Increment the integer value of a key by one",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "decr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Decrement the integer value of a key by one",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "incrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Increment the integer value of a key by the given amount",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "decrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@write", "@string", "@fast"],
        docs: CommandDocs {
            summary: "Decrement the integer value of a key by the given number",
            since: "1.0.0",
            group: "string",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@keyspace", "@read", "@fast"],
        docs: CommandDocs {
            summary: "Return the number of keys in the selected database",
            since: "1.0.0",
            group: "server",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "type",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        docs: CommandDocs {
            summary: "Determine the type stored at key",
            since: "1.0.0",
            group: "generic",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Ping the server",
            since: "1.0.0",
            group: "connection",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Echo the given string",
            since: "1.0.0",
            group: "connection",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Handshake with Redis",
            since: "6.0.0",
            group: "connection",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Close the connection",
            since: "1.0.0",
            group: "connection",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Change the selected database for the current connection",
            since: "1.0.0",
            group: "connection",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow"],
        docs: CommandDocs {
            summary: "A container for client connection commands",
            since: "2.4.0",
            group: "connection",
            complexity: "Depends on subcommand.",
        },
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow", "@connection"],
        docs: CommandDocs {
            summary: "Get array of Redis command details",
            since: "2.8.13",
            group: "server",
            complexity: "O(N) where N is the total number of Redis commands",
        },
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow"],
        docs: CommandDocs {
            summary: "A container for server configuration commands",
            since: "2.0.0",
            group: "server",
            complexity: "Depends on subcommand.",
        },
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Authenticate to the server",
            since: "1.0.0",
            group: "connection",
            complexity: "O(N) where N is the number of passwords defined for the user",
        },
    },
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@transaction"],
        docs: CommandDocs {
            summary: "Mark the start of a transaction block",
            since: "1.2.0",
            group: "transactions",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow", "@transaction"],
        docs: CommandDocs {
            summary: "Execute all commands issued after MULTI",
            since: "1.2.0",
            group: "transactions",
            complexity: "Depends on commands in the transaction",
        },
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@transaction"],
        docs: CommandDocs {
            summary: "Discard all commands issued after MULTI",
            since: "2.0.0",
            group: "transactions",
            complexity: "O(N), when N is the number of queued commands",
        },
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["@fast", "@transaction"],
        docs: CommandDocs {
            summary: "Watch the given keys to determine execution of the MULTI/EXEC block",
            since: "2.2.0",
            group: "transactions",
            complexity: "O(1) for every key.",
        },
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@transaction"],
        docs: CommandDocs {
            summary: "Forget about all watched keys",
            since: "2.2.0",
            group: "transactions",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "role",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@admin", "@fast", "@dangerous"],
        docs: CommandDocs {
            summary: "Return the role of the instance in the context of replication",
            since: "2.8.12",
            group: "server",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow", "@dangerous"],
        docs: CommandDocs {
            summary: "Get information and statistics about the server",
            since: "1.0.0",
            group: "server",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "cluster",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@slow"],
        docs: CommandDocs {
            summary: "A container for cluster commands",
            since: "3.0.0",
            group: "cluster",
            complexity: "Depends on subcommand.",
        },
    },
    CommandSpec {
        name: "readonly",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Enables read queries for a connection to a cluster replica node",
            since: "3.0.0",
            group: "cluster",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "readwrite",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Disables read queries for a connection to a cluster replica node",
            since: "3.0.0",
            group: "cluster",
            complexity: "O(1)",
        },
    },
    CommandSpec {
        name: "asking",
        arity: 1,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["@fast", "@connection"],
        docs: CommandDocs {
            summary: "Sent by cluster clients after an -ASK redirect",
            since: "3.0.0",
            group: "cluster",
            complexity: "O(1)",
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands issue #8 asks for, in the table's order.
    const NAMES: [&str; 39] = [
        "get",
        "set",
        "setnx",
        "getset",
        "getdel",
        "del",
        "unlink",
        "exists",
        "mget",
        "mset",
        "msetnx",
        "strlen",
        "append",
        "incr",
        "decr",
        "incrby",
        "decrby",
        "dbsize",
        "type",
        "ping",
        "echo",
        "hello",
        "quit",
        "select",
        "client",
        "command",
        "config",
        "auth",
        "multi",
        "exec",
        "discard",
        "watch",
        "unwatch",
        "role",
        "info",
        "cluster",
        "readonly",
        "readwrite",
        "asking",
    ];

    #[test]
    fn every_name_is_found_in_any_case_and_nothing_else_is() {
        for (at, spec) in COMMANDS.iter().enumerate() {
            assert!(spec.name.len() <= MAX_NAME_BYTES, "{}", spec.name);
            assert!(!spec.name.bytes().any(|byte| byte.is_ascii_uppercase()));
            assert_eq!(position(spec.name.as_bytes()), Some(at));
            assert_eq!(position(spec.name.to_uppercase().as_bytes()), Some(at));
        }
        assert_eq!(COMMANDS[GET_POSITION].name, "get");
        assert_eq!(COMMANDS[SET_POSITION].name, "set");
        assert_eq!(position(b"SeT"), position(b"set"));
        // `| 0x20` folds case for letters only: these are not GET or SET.
        for near in [&b"GE\x14"[..], b"\x13ET", b"gE4", b"s%t"] {
            assert_eq!(position(near), None, "{near:?}");
        }
        for unknown in [
            &b""[..],
            b"gett",
            b"ge",
            b"get\0",
            b"getxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert_eq!(position(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn the_table_holds_each_command_once_in_lowercase() {
        let names: Vec<&str> = COMMANDS.iter().map(|spec| spec.name).collect();
        assert_eq!(names, NAMES);
        for spec in COMMANDS {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            let twins = COMMANDS.iter().filter(|other| other.name == spec.name);
            assert_eq!(twins.count(), 1, "{}", spec.name);
        }
    }

    #[test]
    fn lookup_ignores_case_and_knows_only_the_table() {
        assert_eq!(lookup(b"GET").map(|spec| spec.name), Some("get"));
        assert_eq!(lookup(b"mSeT").map(|spec| spec.step), Some(2));
        assert_eq!(lookup(b"readwrite").map(|spec| spec.arity), Some(1));
        assert_eq!(lookup(b"FLUSHALL"), None);
        assert_eq!(lookup(b"ge"), None);
        assert_eq!(lookup(b"gett"), None);
        assert_eq!(lookup(b""), None);
    }

    #[test]
    fn arity_is_exact_when_positive_and_a_minimum_when_negative() {
        let get = lookup(b"get").unwrap();
        assert_eq!(get.arity, 2);
        assert!(!arity_ok(get, 1));
        assert!(arity_ok(get, 2));
        assert!(!arity_ok(get, 3));
        let set = lookup(b"set").unwrap();
        assert_eq!(set.arity, -3);
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 3));
        assert!(arity_ok(set, 7));
        let ping = lookup(b"ping").unwrap();
        assert!(arity_ok(ping, 1) && arity_ok(ping, 2));
    }

    #[test]
    fn key_positions_fit_the_arity() {
        for spec in COMMANDS {
            if spec.first_key == 0 {
                assert_eq!((spec.last_key, spec.step), (0, 0), "{}", spec.name);
                continue;
            }
            // The first key is always present in a request of valid arity.
            assert!(spec.first_key < spec.arity.abs(), "{}", spec.name);
            assert!(spec.step >= 1, "{}", spec.name);
            assert!(spec.last_key == -1 || spec.last_key >= spec.first_key);
        }
    }

    #[test]
    fn docs_name_a_known_group() {
        let groups = [
            "string",
            "generic",
            "connection",
            "server",
            "transactions",
            "cluster",
        ];
        for spec in COMMANDS {
            assert!(groups.contains(&spec.docs.group), "{}", spec.name);
            assert!(!spec.docs.summary.is_empty() && !spec.docs.complexity.is_empty());
        }
    }

    fn encoded(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out);
        out
    }

    /// `COMMAND INFO asking multi` as redis-server 7.0.15 answers it: these
    /// two have no tips, key specs or subcommands, so ours is identical.
    const REDIS_INFO_ASKING_MULTI_RESP2: &[u8] = b"*2\r\n\
        *10\r\n$6\r\nasking\r\n:1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n\
        *2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n\
        *10\r\n$5\r\nmulti\r\n:1\r\n*5\r\n+noscript\r\n+loading\r\n+stale\r\n+fast\r\n\
        +allow_busy\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@transaction\r\n*0\r\n*0\r\n*0\r\n";

    const REDIS_INFO_ASKING_RESP3: &[u8] = b"*1\r\n\
        *10\r\n$6\r\nasking\r\n:1\r\n~1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n\
        ~2\r\n+@fast\r\n+@connection\r\n~0\r\n~0\r\n~0\r\n";

    #[test]
    fn info_entries_are_redis_bytes() {
        let names: [&[u8]; 2] = [b"asking", b"MULTI"];
        assert_eq!(
            encoded(|out| encode_info(out, names.into_iter(), Version::Resp2)),
            REDIS_INFO_ASKING_MULTI_RESP2
        );
        assert_eq!(
            encoded(|out| encode_info(out, [&b"asking"[..]].into_iter(), Version::Resp3)),
            REDIS_INFO_ASKING_RESP3
        );
    }

    #[test]
    fn an_entry_with_keys_carries_their_positions() {
        let mset = lookup(b"mset").unwrap();
        assert_eq!(
            encoded(|out| encode_command_info(out, mset, Version::Resp2)),
            b"*10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n\
              *3\r\n+@write\r\n+@string\r\n+@slow\r\n*0\r\n*0\r\n*0\r\n"
        );
    }

    #[test]
    fn info_answers_null_for_an_unknown_name_and_all_for_none() {
        let names: [&[u8]; 2] = [b"nosuch", b"ping"];
        let reply = encoded(|out| encode_info(out, names.into_iter(), Version::Resp2));
        assert!(reply.starts_with(b"*2\r\n$-1\r\n*10\r\n$4\r\nping\r\n"));
        let reply = encoded(|out| encode_info(out, names.into_iter(), Version::Resp3));
        assert!(reply.starts_with(b"*2\r\n_\r\n*10\r\n"));
        assert_eq!(
            encoded(|out| encode_info(out, std::iter::empty(), Version::Resp3)),
            encoded(|out| encode_all(out, Version::Resp3))
        );
    }

    #[test]
    fn all_lists_every_entry_in_table_order() {
        let all = encoded(|out| encode_all(out, Version::Resp2));
        assert!(all.starts_with(b"*39\r\n*10\r\n$3\r\nget\r\n:2\r\n"));
        let entries: Vec<u8> = COMMANDS
            .iter()
            .flat_map(|spec| encoded(|out| encode_command_info(out, spec, Version::Resp2)))
            .collect();
        assert_eq!(all[5..], entries);
    }

    /// `COMMAND DOCS get`, as redis-server 7.0.15 answers it without the
    /// `arguments` field.
    const DOCS_GET_RESP3: &[u8] = b"%1\r\n$3\r\nget\r\n%4\r\n\
        $7\r\nsummary\r\n$22\r\nGet the value of a key\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n\
        $5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n";

    #[test]
    fn docs_map_known_names_and_leave_out_the_rest() {
        let names: [&[u8]; 2] = [b"nosuch", b"GET"];
        assert_eq!(
            encoded(|out| encode_docs(out, names.into_iter(), Version::Resp3)),
            DOCS_GET_RESP3
        );
        let resp2 = encoded(|out| encode_docs(out, names.into_iter(), Version::Resp2));
        assert!(resp2.starts_with(b"*2\r\n$3\r\nget\r\n*8\r\n$7\r\nsummary\r\n"));
        assert_eq!(resp2.len(), DOCS_GET_RESP3.len());
        let unknown: [&[u8]; 1] = [b"nosuch"];
        assert_eq!(
            encoded(|out| encode_docs(out, unknown.into_iter(), Version::Resp3)),
            b"%0\r\n"
        );
        assert_eq!(
            encoded(|out| encode_docs(out, unknown.into_iter(), Version::Resp2)),
            b"*0\r\n"
        );
    }

    #[test]
    fn docs_with_no_names_cover_every_command() {
        let all = encoded(|out| encode_docs(out, std::iter::empty(), Version::Resp3));
        assert!(all.starts_with(b"%39\r\n$3\r\nget\r\n%4\r\n"));
        let every_name = COMMANDS.iter().map(|spec| spec.name.as_bytes());
        assert_eq!(
            all,
            encoded(|out| encode_docs(out, every_name, Version::Resp3))
        );
    }
}
