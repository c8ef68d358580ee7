//! RESP as a Redis client sees it, over raw TCP against the real server:
//! every command, reply type and error text byte for byte, in RESP2 and
//! RESP3, pipelining, transactions, malformed input, and the line
//! protocol's refusal of HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::ServerProcess;
use common::resp::{RespConnection, encode};

fn start(args: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), args);
    (dir, server)
}

fn check(client: &mut RespConnection, table: &[(&str, &[u8])]) {
    for (request, expected) in table {
        let reply = client.cmd(request);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(expected),
            "{request}"
        );
    }
}

#[test]
fn string_commands_byte_for_byte() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            ("PING", b"+PONG\r\n"),
            ("PING hello", b"$5\r\nhello\r\n"),
            ("ECHO hi", b"$2\r\nhi\r\n"),
            ("GET k", b"$-1\r\n"),
            ("SET k v", b"+OK\r\n"),
            ("GET k", b"$1\r\nv\r\n"),
            ("set k v2", b"+OK\r\n"),
            ("SET k x NX", b"$-1\r\n"),
            ("SET k x XX GET", b"$2\r\nv2\r\n"),
            ("SET new x XX", b"$-1\r\n"),
            ("SET new y NX GET", b"$-1\r\n"),
            ("GET new", b"$1\r\ny\r\n"),
            ("SET k v NX XX", b"-ERR syntax error\r\n"),
            ("SET k v FOO", b"-ERR syntax error\r\n"),
            (
                "SET k v EX 10",
                b"-ERR expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported by kvstore\r\n",
            ),
            ("SETNX k z", b":0\r\n"),
            ("SETNX fresh z", b":1\r\n"),
            ("GETSET fresh w", b"$1\r\nz\r\n"),
            ("GETSET none w", b"$-1\r\n"),
            ("GETDEL none", b"$1\r\nw\r\n"),
            ("GETDEL none", b"$-1\r\n"),
            ("STRLEN k", b":1\r\n"),
            ("STRLEN missing", b":0\r\n"),
            ("APPEND k yz", b":3\r\n"),
            ("APPEND a1 abc", b":3\r\n"),
            ("GET k", b"$3\r\nxyz\r\n"),
            ("EXISTS k missing k", b":2\r\n"),
            ("DEL k missing k", b":1\r\n"),
            ("UNLINK a1", b":1\r\n"),
            ("TYPE new", b"+string\r\n"),
            ("TYPE k", b"+none\r\n"),
            ("MSET a 1 b 2 c 3", b"+OK\r\n"),
            (
                "MGET a b nope c",
                b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$1\r\n3\r\n",
            ),
            ("MSETNX a 9 z 9", b":0\r\n"),
            ("GET z", b"$-1\r\n"),
            ("MSETNX y 8 z 9", b":1\r\n"),
            (
                "MSET a 1 b",
                b"-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            ("DBSIZE", b":7\r\n"),
        ],
    );
    // Redis allows an empty key; kvstore's store does not, and says so.
    for request in [
        &[&b"SET"[..], b"", b"v"][..],
        &[b"MSET", b"a", b"1", b"", b"2"],
        &[b"INCR", b""],
        &[b"APPEND", b"", b"x"],
    ] {
        assert_eq!(client.call(request), b"-ERR empty key\r\n");
    }
    assert_eq!(client.call(&[b"GET", b""]), b"$-1\r\n");
    assert_eq!(client.call(&[b"DEL", b""]), b":0\r\n");
    assert_eq!(client.cmd("GET a"), b"$1\r\n1\r\n");
}

#[test]
fn counters_follow_redis_integer_rules() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            ("INCR n", b":1\r\n"),
            ("INCRBY n 41", b":42\r\n"),
            ("DECR n", b":41\r\n"),
            ("DECRBY n 50", b":-9\r\n"),
            ("GET n", b"$2\r\n-9\r\n"),
            ("SET s abc", b"+OK\r\n"),
            (
                "INCR s",
                b"-ERR value is not an integer or out of range\r\n",
            ),
            (
                "INCRBY n x",
                b"-ERR value is not an integer or out of range\r\n",
            ),
            ("SET big 9223372036854775807", b"+OK\r\n"),
            (
                "INCR big",
                b"-ERR increment or decrement would overflow\r\n",
            ),
            ("SET small -9223372036854775808", b"+OK\r\n"),
            (
                "DECR small",
                b"-ERR increment or decrement would overflow\r\n",
            ),
            (
                "DECRBY n -9223372036854775808",
                b"-ERR value is not an integer or out of range\r\n",
            ),
            ("SET padded 007", b"+OK\r\n"),
            (
                "INCR padded",
                b"-ERR value is not an integer or out of range\r\n",
            ),
        ],
    );
}

#[test]
fn connection_commands_and_errors() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    for (request, expected) in [
        ("SELECT 0", &b"+OK\r\n"[..]),
        ("SELECT 1", b"-ERR DB index is out of range\r\n"),
        (
            "SELECT x",
            b"-ERR value is not an integer or out of range\r\n",
        ),
        ("CLIENT GETNAME", b"$-1\r\n"),
        ("CLIENT SETNAME app1", b"+OK\r\n"),
        ("CLIENT GETNAME", b"$4\r\napp1\r\n"),
        ("CLIENT SETINFO LIB-NAME redis-py", b"+OK\r\n"),
        (
            "CLIENT FROB",
            b"-ERR unknown subcommand 'FROB'. Try CLIENT HELP.\r\n",
        ),
        (
            "GET",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            "FROB a b",
            b"-ERR unknown command 'FROB', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            "LPUSH l x",
            b"-ERR unknown command 'LPUSH', with args beginning with: 'l' 'x' \r\n",
        ),
        (
            "CONFIG GET appendonly",
            b"*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n",
        ),
        ("CONFIG GET nothing", b"*0\r\n"),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&client.cmd(request)),
            String::from_utf8_lossy(expected),
            "{request}"
        );
    }
    let id = client.cmd("CLIENT ID");
    assert!(id.starts_with(b":") && id.ends_with(b"\r\n"), "{id:?}");
    let count = client.cmd("COMMAND COUNT");
    assert!(count.starts_with(b":"), "{count:?}");
    let docs = client.cmd("COMMAND DOCS");
    assert!(
        docs.starts_with(b"*"),
        "{:?}",
        String::from_utf8_lossy(&docs)
    );
    let info = client.cmd("COMMAND INFO get");
    assert!(
        info.starts_with(b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n"),
        "{:?}",
        String::from_utf8_lossy(&info)
    );
    assert_eq!(client.cmd("QUIT"), b"+OK\r\n");
    assert_eq!(client.read_to_end(), b"");
}

#[test]
fn keys_and_values_are_binary_safe() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    let key: &[u8] = b"a key\r\nwith\0bytes";
    let value: &[u8] = b"value \r\n\0\xff end";
    assert_eq!(client.call(&[b"SET", key, value]), b"+OK\r\n");
    let mut expected = format!("${}\r\n", value.len()).into_bytes();
    expected.extend_from_slice(value);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(client.call(&[b"GET", key]), expected);
    // The cross-protocol case of the issue: a GET of the key "DEL k2" is a
    // GET, never a DEL.
    assert_eq!(client.cmd("SET k2 kept"), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"DEL k2"]), b"$-1\r\n");
    assert_eq!(client.cmd("GET k2"), b"$4\r\nkept\r\n");
    // The line protocol sees the same store.
    let mut line = server.connect();
    assert_eq!(line.request(b"GET k2"), b"kept");
}

#[test]
fn hello_switches_to_resp3_and_back() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    let hello = client.cmd("HELLO 3");
    let text = String::from_utf8_lossy(&hello);
    assert!(
        text.starts_with("%7\r\n$6\r\nserver\r\n$7\r\nkvstore\r\n$7\r\nversion\r\n"),
        "{text}"
    );
    for field in [
        "proto\r\n:3",
        "id\r\n:",
        "mode\r\n$10\r\nstandalone",
        "role\r\n$6\r\nmaster",
        "modules\r\n*0",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
    check(
        &mut client,
        &[
            ("GET missing", b"_\r\n"),
            ("SET k v", b"+OK\r\n"),
            ("MGET k missing", b"*2\r\n$1\r\nv\r\n_\r\n"),
            ("CONFIG GET save", b"%1\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        ],
    );
    let info = client.cmd("INFO keyspace");
    assert!(
        info.starts_with(b"="),
        "{:?}",
        String::from_utf8_lossy(&info)
    );
    assert!(String::from_utf8_lossy(&client.cmd("HELLO 2")).starts_with("*14\r\n"));
    check(&mut client, &[("GET missing", b"$-1\r\n")]);
    check(
        &mut client,
        &[
            ("HELLO 4", b"-NOPROTO unsupported protocol version\r\n"),
            (
                "HELLO x",
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                "HELLO 3 FOO",
                b"-ERR Syntax error in HELLO option 'FOO'\r\n",
            ),
            ("GET missing", b"$-1\r\n"),
        ],
    );
    let named = client.cmd("HELLO 3 SETNAME worker");
    assert!(named.starts_with(b"%7"));
    check(&mut client, &[("CLIENT GETNAME", b"$6\r\nworker\r\n")]);
}

#[test]
fn info_and_role_speak_redis_format() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    client.cmd("SET a 1");
    let info = String::from_utf8_lossy(&client.cmd("INFO")).into_owned();
    for field in [
        "# Server\r\n",
        "redis_version:7.0.0\r\n",
        "kvstore_version:",
        "# Clients\r\nconnected_clients:1\r\n",
        "# Memory\r\nused_memory:",
        "# Persistence\r\n",
        "log_bytes:",
        "log_syncs:",
        "snapshot_index:0\r\n",
        "# Stats\r\n",
        "# Replication\r\nrole:master\r\nkvstore_role:leader\r\n",
        "commit_index:",
        "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n",
    ] {
        assert!(info.contains(field), "{field:?} in {info}");
    }
    let only = String::from_utf8_lossy(&client.cmd("INFO replication")).into_owned();
    assert!(
        only.contains("role:master") && !only.contains("# Server"),
        "{only}"
    );
    let role = client.cmd("ROLE");
    assert!(role.starts_with(b"*3\r\n$6\r\nmaster\r\n:"), "{role:?}");
    check(
        &mut client,
        &[(
            "CLUSTER SLOTS",
            b"-ERR This instance has cluster support disabled\r\n",
        )],
    );
}

#[test]
fn transactions_apply_atomically_and_watch_aborts() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            ("EXEC", b"-ERR EXEC without MULTI\r\n"),
            ("DISCARD", b"-ERR DISCARD without MULTI\r\n"),
            ("MULTI", b"+OK\r\n"),
            ("MULTI", b"-ERR MULTI calls can not be nested\r\n"),
            ("SET a 1", b"+QUEUED\r\n"),
            ("INCR a", b"+QUEUED\r\n"),
            ("GET a", b"+QUEUED\r\n"),
            ("MSET b x c y", b"+QUEUED\r\n"),
            ("INCR b", b"+QUEUED\r\n"),
            (
                "EXEC",
                b"*5\r\n+OK\r\n:2\r\n$1\r\n2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n",
            ),
            ("MULTI", b"+OK\r\n"),
            ("SET a 5", b"+QUEUED\r\n"),
            ("DISCARD", b"+OK\r\n"),
            ("GET a", b"$1\r\n2\r\n"),
            ("MULTI", b"+OK\r\n"),
            ("SET a 6", b"+QUEUED\r\n"),
            (
                "NOSUCH",
                b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
            ),
            (
                "EXEC",
                b"-EXECABORT Transaction discarded because of previous errors.\r\n",
            ),
            ("GET a", b"$1\r\n2\r\n"),
        ],
    );
    // WATCH: a write by another client between WATCH and EXEC aborts.
    let mut other = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            ("WATCH a", b"+OK\r\n"),
            ("MULTI", b"+OK\r\n"),
            ("SET a 7", b"+QUEUED\r\n"),
        ],
    );
    check(&mut other, &[("SET a 8", b"+OK\r\n")]);
    check(
        &mut client,
        &[("EXEC", b"*-1\r\n"), ("GET a", b"$1\r\n8\r\n")],
    );
    // Unchanged: it goes through; UNWATCH forgets.
    check(
        &mut client,
        &[
            ("WATCH a missing", b"+OK\r\n"),
            ("MULTI", b"+OK\r\n"),
            ("WATCH b", b"-ERR WATCH inside MULTI is not allowed\r\n"),
            ("DISCARD", b"+OK\r\n"),
            ("WATCH a", b"+OK\r\n"),
            ("MULTI", b"+OK\r\n"),
            ("INCR a", b"+QUEUED\r\n"),
            ("EXEC", b"*1\r\n:9\r\n"),
            ("WATCH a", b"+OK\r\n"),
            ("UNWATCH", b"+OK\r\n"),
        ],
    );
    check(&mut other, &[("SET a 1", b"+OK\r\n")]);
    check(
        &mut client,
        &[
            ("MULTI", b"+OK\r\n"),
            ("INCR a", b"+QUEUED\r\n"),
            ("EXEC", b"*1\r\n:2\r\n"),
        ],
    );
}

/// An EXEC's writes are one log record: after kill -9 either all of them
/// are there or none; MSET likewise; everything acknowledged survives.
#[test]
fn transactions_and_mset_survive_kill_9_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let mut client = RespConnection::open(server.address);
    for round in 0..50 {
        let value = round.to_string();
        client.cmd("MULTI");
        client.call(&[b"SET", b"x", value.as_bytes()]);
        client.call(&[b"SET", b"y", value.as_bytes()]);
        client.cmd("INCR count");
        let reply = client.cmd("EXEC");
        assert!(reply.starts_with(b"*3\r\n+OK\r\n+OK\r\n:"), "{reply:?}");
        let mset = client.call(&[b"MSET", b"p", value.as_bytes(), b"q", value.as_bytes()]);
        assert_eq!(mset, b"+OK\r\n");
    }
    server.kill9();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            (
                "MGET x y p q",
                b"*4\r\n$2\r\n49\r\n$2\r\n49\r\n$2\r\n49\r\n$2\r\n49\r\n",
            ),
            ("GET count", b"$2\r\n50\r\n"),
        ],
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_dir, server) = start(&[]);
    let mut client = RespConnection::open(server.address);
    let mut batch = Vec::new();
    for i in 0..500 {
        let key = format!("key{i}");
        batch.extend(encode(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]));
        batch.extend(encode(&[b"GET", key.as_bytes()]));
        batch.extend(encode(&[b"INCR", key.as_bytes()]));
    }
    client.send(&batch);
    for i in 0..500 {
        assert_eq!(client.reply(), b"+OK\r\n");
        let value = i.to_string();
        assert_eq!(
            client.reply(),
            format!("${}\r\n{value}\r\n", value.len()).into_bytes()
        );
        assert_eq!(client.reply(), format!(":{}\r\n", i + 1).into_bytes());
    }
}

#[test]
fn auth_and_hello_auth_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "correct horse battery staple\n").unwrap();
    let mut permissions = std::fs::metadata(&password_file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&password_file, permissions).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = ServerProcess::start(
        &data,
        &["--requirepass-file", password_file.to_str().unwrap()],
    );
    let mut client = RespConnection::open(server.address);
    check(
        &mut client,
        &[
            ("GET k", b"-NOAUTH Authentication required.\r\n"),
            (
                "AUTH wrong",
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            ),
        ],
    );
    let hello = client.cmd("HELLO 3");
    assert!(
        hello.starts_with(b"-NOAUTH HELLO must be called"),
        "{hello:?}"
    );
    let wrong = client.call(&[b"HELLO", b"3", b"AUTH", b"default", b"nope"]);
    assert!(wrong.starts_with(b"-WRONGPASS"), "{wrong:?}");
    let right = client.call(&[
        b"HELLO",
        b"3",
        b"AUTH",
        b"default",
        b"correct horse battery staple",
    ]);
    assert!(
        right.starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&right)
    );
    check(&mut client, &[("GET k", b"_\r\n")]);
    let mut second = RespConnection::open(server.address);
    assert_eq!(
        second.call(&[b"AUTH", b"correct horse battery staple"]),
        b"+OK\r\n"
    );
    check(&mut second, &[("PING", b"+PONG\r\n")]);
}

#[test]
fn out_of_memory_is_redis_oom() {
    let (_dir, server) = start(&["--max-memory-bytes", "1000"]);
    let mut client = RespConnection::open(server.address);
    let value = "v".repeat(600);
    assert_eq!(client.call(&[b"SET", b"a", value.as_bytes()]), b"+OK\r\n");
    let refused = b"-OOM command not allowed when used memory > max-memory-bytes\r\n";
    assert_eq!(client.call(&[b"SET", b"b", value.as_bytes()]), refused);
    assert_eq!(
        client.call(&[b"MSET", b"c", b"1", b"d", value.as_bytes()]),
        refused
    );
    assert_eq!(client.cmd("EXISTS c"), b":0\r\n");
    assert_eq!(client.cmd("DEL a"), b":1\r\n");
    assert_eq!(client.call(&[b"SET", b"b", value.as_bytes()]), b"+OK\r\n");
}

/// Each malformed request is answered with a protocol error and the
/// connection closed; other clients go on.
#[test]
fn malformed_resp_is_refused_and_closed() {
    let (_dir, server) = start(&["--max-line-bytes", "1024"]);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*-5\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*99999999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n+GET\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$abc\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$4\r\nPINGxx",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$2000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$1010\r\n",
            "-ERR Protocol error: request too large (limit 1024 bytes)\r\n",
        ),
        (
            b"*1\r\n$4\r\nPING\r\nGET k\r\n",
            "+PONG\r\n-ERR Protocol error: expected '*', got 'G'\r\n",
        ),
    ];
    let mut bystander = RespConnection::open(server.address);
    for (bytes, expected) in cases {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            *expected,
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(bystander.cmd("PING"), b"+PONG\r\n");
    }
    // A header that never ends is cut off at its limit, not buffered.
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut endless = b"*".to_vec();
    endless.extend(std::iter::repeat_n(b'1', 70 * 1024));
    let _ = stream.write_all(&endless);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"-ERR Protocol error: "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(bystander.cmd("PING"), b"+PONG\r\n");
}

/// What a web page can make a browser send: closed before anything runs.
#[test]
fn http_requests_to_the_line_protocol_execute_nothing() {
    let (_dir, mut server) = start(&[]);
    let attacks: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\r\nPUT x pwned\r\n",
        b"GET /PUT%20y%20pwned HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPUT y pwned\r\n",
        b"Host: 127.0.0.1\r\nPUT z pwned\r\n",
    ];
    for attack in attacks {
        let mut stream = TcpStream::connect(server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(attack).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(reply, b"", "{}", String::from_utf8_lossy(attack));
    }
    let mut line = server.connect();
    for key in ["x", "y", "z"] {
        assert_eq!(line.request(format!("GET {key}").as_bytes()), b"NOT_FOUND");
    }
    server.wait_for_stderr("possible security attack");
}

/// A client that vanishes mid-request, or with a MULTI block queued and no
/// EXEC, changes nothing; other clients go on.
#[test]
fn a_client_that_leaves_mid_request_or_mid_multi_changes_nothing() {
    let (_dir, server) = start(&[]);
    let mut halfway = TcpStream::connect(server.address).unwrap();
    halfway
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    halfway
        .write_all(b"*3\r\n$3\r\nSET\r\n$4\r\ntorn\r\n$5\r\nva")
        .unwrap();
    halfway.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    halfway.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "{}", String::from_utf8_lossy(&rest));

    let mut queued = RespConnection::open(server.address);
    check(
        &mut queued,
        &[("MULTI", b"+OK\r\n"), ("SET never 1", b"+QUEUED\r\n")],
    );
    queued.stream.shutdown(std::net::Shutdown::Both).unwrap();

    let mut bystander = RespConnection::open(server.address);
    check(
        &mut bystander,
        &[
            ("EXISTS torn never", b":0\r\n"),
            ("SET after 1", b"+OK\r\n"),
            ("DBSIZE", b":1\r\n"),
        ],
    );
}
