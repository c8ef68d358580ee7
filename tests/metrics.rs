//! `--metrics-addr` against the real server: `/metrics` counts what
//! clients did and parses as Prometheus text (checked by a small parser
//! here, independent of the server's writer), `/health` answers as a load
//! balancer needs on a single node, a cluster leader and a node cut off
//! from its peers, garbage HTTP gets `400` without hurting anyone else, and
//! the line protocol's `INFO` has its one-line shape.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::cluster::Cluster;
use common::{ServerProcess, wait_until};

/// `--metrics-addr` on a port the OS picks.
const METRICS_ON_ANY_PORT: [&str; 2] = ["--metrics-addr", "127.0.0.1:0"];

/// The metrics address a server printed at start.
fn metrics_address(server: &mut ServerProcess) -> SocketAddr {
    let line = server.wait_for_stderr("serving metrics on http://");
    let after = line.split("http://").nth(1).unwrap();
    after.split('/').next().unwrap().parse().unwrap()
}

/// Sends `request` as it is and reads the answer until the server closes.
fn exchange(address: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

/// An HTTP answer: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8(raw.to_vec()).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("a header");
            (name.to_ascii_lowercase(), value.to_string())
        })
        .collect();
    let answer = Answer {
        status,
        headers,
        body: body.to_string(),
    };
    assert_eq!(answer.headers["connection"], "close");
    answer
}

fn get(address: SocketAddr, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n");
    let answer = parse_answer(&exchange(address, request.as_bytes()));
    assert_eq!(
        answer.headers["content-length"],
        answer.body.len().to_string()
    );
    answer
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a scrape, checked line by line against the text format.
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    fn of(address: SocketAddr) -> Scrape {
        let answer = get(address, "/metrics");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Scrape {
            samples: check_exposition(&answer.body),
        }
    }

    /// The value of the one sample named `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(label, value)| (label.to_string(), value.to_string()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels == wanted);
        let value = found.next().map(|sample| sample.value);
        assert!(found.next().is_none(), "{name} {labels:?} twice");
        value
    }

    fn requests(&self, command: &str, result: &str) -> f64 {
        let labels = [("command", command), ("result", result)];
        self.value("kvstore_requests_total", &labels).unwrap_or(0.0)
    }

    fn sum_of(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .map(|sample| sample.value)
            .sum()
    }
}

fn is_name(name: &str, colons: bool) -> bool {
    let mut characters = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    characters.next().is_some_and(first_ok)
        && characters.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `{name="value",...}` at the start of `text`: the labels and the rest.
fn parse_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = text.strip_prefix('{') else {
        return (labels, text);
    };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(is_name(name, false), "label name {name:?}");
        let mut value = String::new();
        let mut characters = after.char_indices();
        let end = loop {
            match characters.next().expect("a closing quote") {
                (at, '"') => break at,
                (_, '\\') => match characters.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    escaped @ ('\\' | '"') => value.push(escaped),
                    other => panic!("bad escape \\{other}"),
                },
                (_, character) => value.push(character),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "{name} twice"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to: its name less a histogram's suffix.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base;
        }
    }
    name
}

/// Checks every line of `text` against the text exposition format (HELP
/// and TYPE once per family, before its samples; samples of a family
/// together; names, labels and values well formed; counters end in
/// `_total`; histograms cumulative up to `+Inf`, which equals `_count`)
/// and returns the samples.
fn check_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut helps = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, doc) = help.split_once(' ').expect("HELP name text");
            assert!(is_name(name, true), "{line}");
            assert!(!doc.is_empty(), "{line}");
            assert!(
                helps.insert(name.to_string(), ()).is_none(),
                "HELP twice: {line}"
            );
            continue;
        }
        if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helps.contains_key(name), "TYPE before HELP: {line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter not named _total: {line}");
            }
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{line}"
            );
            if let Some(previous) = current.replace(name.to_string()) {
                finished.push(previous);
            }
            continue;
        }
        assert!(!line.starts_with('#') || line.starts_with("# "), "{line}");
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .expect("a name then labels or a value");
        let name = &line[..name_end];
        assert!(is_name(name, true), "metric name {name:?} in {line}");
        let (labels, rest) = parse_labels(&line[name_end..]);
        let mut fields = rest
            .strip_prefix(' ')
            .expect("a space before the value")
            .split(' ');
        let value = parse_value(fields.next().unwrap()).unwrap_or_else(|| panic!("{line}"));
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().expect("an integer timestamp");
        }
        assert!(fields.next().is_none(), "{line}");
        let family = family_of(name, &types);
        assert_eq!(
            current.as_deref(),
            Some(family),
            "sample outside its family: {line}"
        );
        assert!(!finished.iter().any(|done| done == family), "{line}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&samples, &types);
    samples
}

fn check_histograms(samples: &[Sample], types: &BTreeMap<String, String>) {
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.name == format!("{family}_bucket"))
            .collect();
        assert!(!buckets.is_empty(), "{family} has buckets");
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|bucket| parse_value(&bucket.labels["le"]).expect("le"))
            .collect();
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{family}");
        assert_eq!(bounds.last(), Some(&f64::INFINITY), "{family} ends at +Inf");
        let counts: Vec<f64> = buckets.iter().map(|bucket| bucket.value).collect();
        assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]), "{family}");
        let count = samples
            .iter()
            .find(|sample| sample.name == format!("{family}_count"))
            .expect("a _count");
        assert_eq!(count.value, *counts.last().unwrap(), "{family}");
        assert!(
            samples
                .iter()
                .any(|sample| sample.name == format!("{family}_sum"))
        );
    }
}

#[test]
fn metrics_count_what_clients_did_and_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &METRICS_ON_ANY_PORT);
    let metrics = metrics_address(&mut server);
    let before = Scrape::of(metrics);
    assert_eq!(before.value("kvstore_keys", &[]), Some(0.0));

    let mut client = server.connect();
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert_eq!(
            client.request(format!("PUT {key} {value}").as_bytes()),
            b"OK"
        );
    }
    assert_eq!(client.request(b"GET a"), b"1");
    assert_eq!(client.request(b"GET nothing"), b"NOT_FOUND");
    assert_eq!(client.request(b"FROB"), b"ERR unknown command 'FROB'");
    assert_eq!(
        client.request(b"GET"),
        b"ERR wrong number of arguments, usage: GET <key>"
    );
    // A RESP client's GET counts as a GET too.
    let mut resp = server.connect();
    resp.send(b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n");
    assert_eq!(resp.read_line(), b"$1\r\n");
    assert_eq!(resp.read_line(), b"2\r\n");

    let after = Scrape::of(metrics);
    assert_eq!(
        after.requests("put", "ok") - before.requests("put", "ok"),
        3.0
    );
    assert_eq!(
        after.requests("get", "ok") - before.requests("get", "ok"),
        3.0
    );
    assert_eq!(after.requests("get", "error"), 1.0);
    assert_eq!(after.requests("unknown", "error"), 1.0);
    assert_eq!(after.value("kvstore_keys", &[]), Some(3.0));
    assert_eq!(after.value("kvstore_connected_clients", &[]), Some(2.0));
    assert_eq!(
        after.value("kvstore_connections_accepted_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        after.value("kvstore_role", &[("role", "leader")]),
        Some(1.0)
    );
    assert_eq!(after.value("kvstore_healthy", &[]), Some(1.0));
    let fsyncs = after.value("kvstore_log_fsync_duration_seconds_count", &[]);
    assert!(fsyncs.unwrap() > 0.0, "no fsync observed");
    let batches = after.value("kvstore_log_batch_records_sum", &[]).unwrap();
    assert!(
        batches >= 4.0,
        "the Noop and three PUTs were written: {batches}"
    );
    assert!(after.value("kvstore_log_last_index", &[]).unwrap() >= 4.0);
    assert!(after.value("kvstore_used_memory_bytes", &[]).unwrap() > 0.0);
    assert!(after.value("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(after.value("process_open_fds", &[]).unwrap() >= 5.0);
    assert!(after.value("process_start_time_seconds", &[]).unwrap() > 1.6e9);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(after.value("kvstore_build_info", &version), Some(1.0));

    // INFO reads the same counters: what it reports processed, plus the
    // INFO itself, is what the next scrape sums.
    let info = String::from_utf8(client.request(b"INFO")).unwrap();
    let fields: BTreeMap<&str, &str> = info
        .split(' ')
        .map(|pair| pair.split_once('=').unwrap())
        .collect();
    let processed: f64 = fields["total_commands_processed"].parse().unwrap();
    let last = Scrape::of(metrics);
    assert_eq!(last.sum_of("kvstore_requests_total"), processed + 1.0);
    assert_eq!(fields["total_error_replies"], "2");
    assert_eq!(fields["log_syncs"].parse::<f64>().unwrap(), fsyncs.unwrap());
}

/// The line protocol's `INFO`: one line, `name=value` pairs separated by
/// one space, the fields of RESP's `INFO` in its order.
#[test]
fn info_on_the_line_protocol_is_one_line_of_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.connect();
    assert_eq!(client.request(b"PUT k v"), b"OK");
    client.send(b"INFO\n");
    let line = client.read_line();
    let text = String::from_utf8(line).unwrap();
    let text = text.strip_suffix('\n').expect("one line");
    assert!(!text.contains(['\n', '\r', '\t']));
    assert!(!text.starts_with(' ') && !text.ends_with(' ') && !text.contains("  "));
    let pairs: Vec<(&str, &str)> = text
        .split(' ')
        .map(|pair| pair.split_once('=').expect("name=value"))
        .collect();
    let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "redis_version",
            "kvstore_version",
            "redis_mode",
            "arch_bits",
            "process_id",
            "tcp_port",
            "uptime_in_seconds",
            "uptime_in_days",
            "node_id",
            "connected_clients",
            "maxclients",
            "blocked_clients",
            "client_buffer_bytes",
            "used_memory",
            "maxmemory",
            "maxmemory_policy",
            "loading",
            "aof_enabled",
            "log_bytes",
            "log_last_index",
            "log_durable_index",
            "log_syncs",
            "snapshot_index",
            "total_connections_received",
            "total_commands_processed",
            "rejected_connections",
            "total_error_replies",
            "total_redirect_replies",
            "elections_started",
            "elections_won",
            "leader_changes",
            "leader_step_downs",
            "snapshots_taken",
            "snapshots_installed",
            "read_rounds_started",
            "read_rounds_confirmed",
            "role",
            "kvstore_role",
            "leader_id",
            "epoch",
            "commit_index",
            "connected_slaves",
            "cluster_enabled",
            "db0",
        ]
    );
    let fields: BTreeMap<&str, &str> = pairs.into_iter().collect();
    let port = server.address.port().to_string();
    assert_eq!(fields["tcp_port"], port);
    assert_eq!(fields["process_id"], server.pid().to_string());
    assert_eq!(fields["kvstore_role"], "leader");
    assert_eq!(fields["leader_id"], fields["node_id"]);
    assert_eq!(fields["db0"], "keys=1,expires=0,avg_ttl=0");
    assert_eq!(fields["connected_clients"], "1");
    // INFO takes no arguments on the line protocol.
    assert_eq!(
        client.request(b"INFO all"),
        b"ERR wrong number of arguments, usage: INFO"
    );
}

#[test]
fn health_is_200_on_a_single_node_and_on_every_node_of_a_cluster_with_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        dir.path(),
        &["--id", "7", METRICS_ON_ANY_PORT[0], METRICS_ON_ANY_PORT[1]],
    );
    let metrics = metrics_address(&mut server);
    let health = get(metrics, "/health");
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "ok: leader 7\n")
    );
    let head = parse_answer(&exchange(metrics, b"HEAD /health HTTP/1.1\r\n\r\n"));
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    drop(server);

    let mut cluster = Cluster::start(3, &METRICS_ON_ANY_PORT);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let leader_id = cluster.ports[leader];
    let addresses: Vec<SocketAddr> = (0..3)
        .map(|node| metrics_address(cluster.process(node)))
        .collect();
    let expected = format!("ok: leader {leader_id}\n");
    for address in &addresses {
        wait_until("every node healthy", || {
            get(*address, "/health").body == expected
        });
    }
    // A linearizable GET on the leader waits for a read round; the rounds
    // are timed.
    let mut client = cluster.connect(leader);
    assert_eq!(client.request(b"PUT r 1"), b"OK");
    for _ in 0..5 {
        assert_eq!(client.request(b"GET r"), b"1");
    }
    wait_until("read rounds timed", || {
        Scrape::of(addresses[leader])
            .value("kvstore_read_round_duration_seconds_count", &[])
            .is_some_and(|count| count >= 1.0)
    });
    // The leader reports each follower and each peer link.
    let scrape = Scrape::of(addresses[leader]);
    for node in (0..3).filter(|node| *node != leader) {
        let follower = cluster.ports[node].to_string();
        let labels = [("follower", follower.as_str())];
        assert!(
            scrape
                .value("kvstore_follower_match_index", &labels)
                .is_some()
        );
        assert!(
            scrape
                .value("kvstore_follower_lag_records", &labels)
                .is_some()
        );
        let address = cluster.address(node).to_string();
        let peer = [("peer", follower.as_str()), ("address", address.as_str())];
        assert_eq!(scrape.value("kvstore_peer_up", &peer), Some(1.0));
    }
    assert_eq!(
        scrape.value("kvstore_leader_id", &[]),
        Some(f64::from(leader_id))
    );
}

#[test]
fn health_is_503_with_the_reason_on_a_node_whose_peers_are_all_down() {
    let mut cluster = Cluster::prepare(3, &METRICS_ON_ANY_PORT);
    cluster.start_node(0);
    let metrics = metrics_address(cluster.process(0));
    let health = get(metrics, "/health");
    assert_eq!(
        (health.status, health.body.as_str()),
        (503, "no leader known\n")
    );
    let scrape = Scrape::of(metrics);
    assert_eq!(scrape.value("kvstore_healthy", &[]), Some(0.0));
    assert_eq!(scrape.value("kvstore_leader_id", &[]), Some(-1.0));
    for node in [1, 2] {
        let address = cluster.address(node).to_string();
        let peer = [("peer", "unknown"), ("address", address.as_str())];
        assert_eq!(scrape.value("kvstore_peer_up", &peer), Some(0.0));
    }
}

/// Every bad request is answered and closed; none disturbs a client of the
/// key-value port, nor the next scrape.
#[test]
fn garbage_and_oversized_http_requests_get_400_and_the_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &METRICS_ON_ANY_PORT);
    let metrics = metrics_address(&mut server);
    let mut bystander = server.connect();
    assert_eq!(bystander.request(b"PUT k v"), b"OK");
    // A request that never finishes stays open meanwhile, costing nothing.
    let mut dripping = TcpStream::connect(metrics).unwrap();
    dripping.write_all(b"GET /metr").unwrap();

    let oversized = vec![b'A'; 64 * 1024];
    let header_flood = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
    let cases: [(&[u8], u16); 8] = [
        (b"\x00\x01\x02 hello\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n\n", 400),
        (&oversized, 400),
        (header_flood.as_bytes(), 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            405,
        ),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
        (
            b"GET /health HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
            200,
        ),
    ];
    for (request, status) in cases {
        let answer = parse_answer(&exchange(metrics, request));
        assert_eq!(answer.status, status, "{:?}", answer.body);
        assert_eq!(bystander.request(b"GET k"), b"v");
    }
    // A client that connects and leaves at once.
    drop(TcpStream::connect(metrics).unwrap());
    assert_eq!(bystander.request(b"PING"), b"PONG");
    let scrape = Scrape::of(metrics);
    assert_eq!(scrape.value("kvstore_keys", &[]), Some(1.0));

    // The dripping request is cut at its deadline (5 s).
    dripping
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    dripping.read_to_end(&mut answer).unwrap();
    assert_eq!(parse_answer(&answer).status, 408);
    assert_eq!(bystander.request(b"GET k"), b"v");
}

/// Past the bound on metrics connections, another is told 503 and closed;
/// the ones open and the key-value port are not affected.
#[test]
fn metrics_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &METRICS_ON_ANY_PORT);
    let metrics = metrics_address(&mut server);
    let mut idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    // All 16 accepted before the next arrives: a health check on the
    // key-value port is a turn of the loop after their accept.
    let mut bystander = server.connect();
    assert_eq!(bystander.request(b"PING"), b"PONG");
    // (It is refused before it could send anything: it sends nothing.)
    let refused = parse_answer(&exchange(metrics, b""));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body, "too many metrics connections\n");
    // One of the sixteen is still served.
    idle[0].write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    idle[0].read_to_end(&mut answer).unwrap();
    assert_eq!(parse_answer(&answer).status, 200);
    drop(idle);
    wait_until("room for a scrape again", || {
        parse_answer(&exchange(metrics, b"GET /health HTTP/1.1\r\n\r\n")).status == 200
    });
    assert_eq!(bystander.request(b"PING"), b"PONG");
}

/// The checker above refuses what the format forbids (so a scrape that
/// passes it means something).
#[test]
fn the_exposition_checker_refuses_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert_eq!(check_exposition(good).len(), 1);
    let bad = [
        "a_total 1\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} one\n",
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",
        "# HELP a-b A.\n# TYPE a-b gauge\na-b 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n\
         h_sum 1\nh_count 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
    ];
    for text in bad {
        let refused = std::panic::catch_unwind(|| check_exposition(text)).is_err();
        assert!(refused, "accepted: {text:?}");
    }
}
