//! etcd-bench: closed-loop PUT load against an etcd v3 cluster over gRPC,
//! for `perf/etcd.sh`.
//!
//! etcd's own `tools/benchmark` is not packaged by Debian and Go's module
//! proxy is out of reach here, so this is the part of it `perf/etcd.sh`
//! needs: `--clients` loops, each awaiting its `KV/Put` before sending the
//! next (so that many requests are in flight), over `--conns` HTTP/2
//! connections, on one tokio thread (one core, like kvstore-bench).
//!
//! By default every request goes to the leader, found with the
//! Maintenance/Status RPC, as kvstore-bench sends to kvstore's leader
//! (etcd's own benchmark spreads clients over all endpoints instead, and
//! followers forward proposals to the leader: `--all-endpoints` does that).
//!
//! The messages are hand-written prost structs (a subset of etcd's
//! rpc.proto, unknown fields skipped), so building needs no `protoc`.
//!
//! Output: a `RESULT key=value ...` line on stdout, e.g.
//! `RESULT ops=51234 seconds=10.000 ops_per_sec=5123 p50_us=9000 p99_us=15000 p999_us=20000 max_us=30000 errors=0 ...`
//! Exit status: 0 after a completed run (even with errors), 1 when it could
//! not be made, 2 for invalid flags.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::client::Grpc;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse` (prev_kv, field 2, is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.StatusRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `etcdserverpb.StatusResponse`, the fields used here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
}

const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const STATUS_PATH: &str = "/etcdserverpb.Maintenance/Status";

/// Latencies above one minute (in µs) are recorded as one minute.
const MAX_RECORDED_LATENCY_US: u64 = 60_000_000;
/// Keys are `key:00001234`, as kvstore-bench names them.
const KEY_PREFIX: &str = "key:";
const KEY_DIGITS: usize = 8;

const USAGE: &str = "\
usage: etcd-bench --endpoints HOST:PORT[,HOST:PORT...] [options]

Closed-loop etcd v3 PUT load over gRPC (plain HTTP/2, no TLS).

  --endpoints LIST   client URLs of the cluster's members (http:// optional)
  --clients N        concurrent requests in flight, one loop each (default 50)
  --conns N          HTTP/2 connections the clients share (default 1)
  --duration S       measured seconds (default 10)
  --warmup S         seconds of load before measuring (default 1)
  --keyspace N       keys are drawn uniformly from N (default 100000)
  --value-size B     bytes per value (default 100)
  --all-endpoints    spread connections over every endpoint instead of
                     sending everything to the leader
  --wait S           how long to wait for a leader (default 30)
  -h, --help         this text

Prints `RESULT ops=.. seconds=.. ops_per_sec=.. p50_us=.. p99_us=.. p999_us=..
max_us=.. errors=.. clients=.. conns=.. value_size=.. target=..` on stdout.";

#[derive(Debug)]
struct Options {
    endpoints: Vec<String>,
    clients: usize,
    conns: usize,
    duration: Duration,
    warmup: Duration,
    keyspace: u64,
    value_size: usize,
    all_endpoints: bool,
    wait: Duration,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        endpoints: Vec::new(),
        clients: 50,
        conns: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        keyspace: 100_000,
        value_size: 100,
        all_endpoints: false,
        wait: Duration::from_secs(30),
    };
    fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse()
            .map_err(|_| format!("{flag}: not a valid number: {value}"))
    }
    fn seconds(flag: &str, value: Option<String>) -> Result<Duration, String> {
        let value: f64 = number(flag, value)?;
        if !(value >= 0.0 && value.is_finite()) {
            return Err(format!("{flag}: must be a non-negative number of seconds"));
        }
        Ok(Duration::from_secs_f64(value))
    }
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--endpoints" => {
                let list = args.next().ok_or("--endpoints needs a value")?;
                options.endpoints = list
                    .split(',')
                    .filter(|item| !item.is_empty())
                    .map(|item| {
                        if item.contains("://") {
                            item.to_string()
                        } else {
                            format!("http://{item}")
                        }
                    })
                    .collect();
            }
            "--clients" => options.clients = number(&flag, args.next())?,
            "--conns" => options.conns = number(&flag, args.next())?,
            "--duration" => options.duration = seconds(&flag, args.next())?,
            "--warmup" => options.warmup = seconds(&flag, args.next())?,
            "--keyspace" => options.keyspace = number(&flag, args.next())?,
            "--value-size" => options.value_size = number(&flag, args.next())?,
            "--all-endpoints" => options.all_endpoints = true,
            "--wait" => options.wait = seconds(&flag, args.next())?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.endpoints.is_empty() {
        return Err("--endpoints is required".into());
    }
    if options.clients == 0 || options.conns == 0 {
        return Err("--clients and --conns must be at least 1".into());
    }
    if options.keyspace == 0 || options.keyspace > 100_000_000 {
        return Err("--keyspace must be in 1..=100000000".into());
    }
    if options.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("etcd-bench: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread: the load generator uses one core, like kvstore-bench.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("etcd-bench: {message}");
            ExitCode::from(1)
        }
    }
}

async fn connect(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|error| format!("{url}: {error}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| format!("{url}: {error}"))
}

/// Asks one member for its status: (its member id, the leader it knows, 0 if none).
async fn status(url: &str) -> Result<(u64, u64, String), String> {
    let channel = connect(url).await?;
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        grpc.unary(
            tonic::Request::new(StatusRequest {}),
            PathAndQuery::from_static(STATUS_PATH),
            ProstCodec::<StatusRequest, StatusResponse>::default(),
        ),
    )
    .await
    .map_err(|_| format!("{url}: Status timed out"))?
    .map_err(|error| format!("{url}: {error}"))?
    .into_inner();
    let member = reply.header.map_or(0, |header| header.member_id);
    Ok((member, reply.leader, reply.version))
}

/// The leader's URL, once some member names a leader that answers as itself.
async fn find_leader(options: &Options) -> Result<(String, String), String> {
    let deadline = Instant::now() + options.wait;
    let mut last_error = String::from("no member named a leader");
    loop {
        let mut members = Vec::new();
        let mut leader = 0;
        for url in &options.endpoints {
            match status(url).await {
                Ok((member, known_leader, version)) => {
                    if known_leader != 0 {
                        leader = known_leader;
                    }
                    members.push((member, url.clone(), version));
                }
                Err(error) => last_error = error,
            }
        }
        if leader != 0 {
            if let Some((_, url, version)) = members.iter().find(|(member, _, _)| *member == leader)
            {
                return Ok((url.clone(), version.clone()));
            }
            last_error = format!("leader {leader:x} is not among --endpoints");
        }
        if Instant::now() >= deadline {
            return Err(format!("no leader within {:?}: {last_error}", options.wait));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(index: u64) -> Vec<u8> {
    format!("{KEY_PREFIX}{index:0width$}", width = KEY_DIGITS).into_bytes()
}

/// xorshift64, seeded per client.
struct Random(u64);

impl Random {
    fn new(stream: u64) -> Random {
        let mut mixed = (stream + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Random((mixed ^ (mixed >> 31)) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        let mut state = self.0;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.0 = state;
        ((u128::from(state) * u128::from(bound)) >> 64) as u64
    }
}

struct ClientTally {
    latencies: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One closed loop: a PUT, await its reply, the next PUT. Counts the
/// requests sent and answered within [measure_from, stop_at).
async fn client(
    mut grpc: Grpc<Channel>,
    stream: u64,
    keyspace: u64,
    value: Vec<u8>,
    measure_from: Instant,
    stop_at: Instant,
) -> ClientTally {
    let mut tally = ClientTally {
        latencies: Histogram::new_with_bounds(1, MAX_RECORDED_LATENCY_US, 3)
            .expect("constant histogram bounds are valid"),
        ops: 0,
        errors: 0,
        first_error: None,
    };
    let mut random = Random::new(stream);
    loop {
        let start = Instant::now();
        if start >= stop_at {
            return tally;
        }
        let request = PutRequest {
            key: key(random.below(keyspace)),
            value: value.clone(),
            ..PutRequest::default()
        };
        let outcome = match grpc.ready().await {
            Ok(()) => grpc
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static(PUT_PATH),
                    ProstCodec::<PutRequest, PutResponse>::default(),
                )
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let end = Instant::now();
        let measured = start >= measure_from && end <= stop_at;
        match outcome {
            Ok(()) => {
                if measured {
                    tally.ops += 1;
                    let micros = u64::try_from((end - start).as_micros()).unwrap_or(u64::MAX);
                    tally.latencies.saturating_record(micros);
                }
            }
            Err(error) => {
                if measured {
                    tally.errors += 1;
                }
                if tally.first_error.is_none() {
                    tally.first_error = Some(error);
                }
                // A broken connection must not turn the loop into a spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let (leader, version) = find_leader(&options).await?;
    let targets: Vec<String> = if options.all_endpoints {
        options.endpoints.clone()
    } else {
        vec![leader.clone()]
    };
    eprintln!(
        "etcd-bench: etcd {version}, leader {leader}; {} clients over {} connection(s) to {}",
        options.clients,
        options.conns,
        targets.join(",")
    );
    let mut channels = Vec::with_capacity(options.conns);
    for index in 0..options.conns {
        channels.push(connect(&targets[index % targets.len()]).await?);
    }
    let value = vec![b'x'; options.value_size];
    let measure_from = Instant::now() + options.warmup;
    let stop_at = measure_from + options.duration;
    let tasks: Vec<_> = (0..options.clients)
        .map(|index| {
            let grpc = Grpc::new(channels[index % channels.len()].clone());
            tokio::spawn(client(
                grpc,
                index as u64,
                options.keyspace,
                value.clone(),
                measure_from,
                stop_at,
            ))
        })
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_LATENCY_US, 3)
        .expect("constant histogram bounds are valid");
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let tally = task
            .await
            .map_err(|error| format!("a client failed: {error}"))?;
        latencies
            .add(&tally.latencies)
            .map_err(|error| format!("merging histograms: {error}"))?;
        ops += tally.ops;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    if let Some(error) = &first_error {
        eprintln!("etcd-bench: first error: {error}");
    }
    if ops == 0 {
        return Err(format!(
            "no PUT succeeded: {}",
            first_error.unwrap_or_else(|| "no reply within the run".into())
        ));
    }
    let seconds = options.duration.as_secs_f64();
    println!(
        "RESULT ops={ops} seconds={seconds:.3} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} max_us={} \
         errors={errors} clients={} conns={} value_size={} target={}",
        ops as f64 / seconds,
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        latencies.max(),
        options.clients,
        options.conns,
        options.value_size,
        if options.all_endpoints { "all" } else { "leader" },
    );
    Ok(())
}
