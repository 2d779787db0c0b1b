//! `bidbridge bench` (hidden): the load and capacity benchmark behind
//! `scripts/bench.sh`. It plays FreeSWITCH against a *running* daemon (the
//! simulator's own [`freeswitch::run_call`], one TCP session per call),
//! serves the loopback buyers with a realistic answer-time distribution,
//! and measures the daemon from outside: its `/metrics`, its
//! `/proc/<pid>` counters and the records it wrote to PostgreSQL.
//!
//! What it owns: the phases (setup rate, auction overhead, concurrency,
//! cost, records, sequential-vs-parallel ratio), the benchmark catalog, the
//! goals and `summary.json`.
//!
//! What it must never do: change how the daemon behaves to flatter a figure
//! (it only reads the daemon), talk to anything but loopback and the
//! configured database, or report a figure it did not measure (a phase
//! that cannot run reports 0 and says why).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::auction::eligibility::{CallFacts, OpenGate};
use crate::auction::{AuctionInput, Auctioneer, NeutralScorer};
use crate::catalog::Snapshot;
use crate::catalog::spec::{CatalogDoc, DocFormat};
use crate::config::{AuctionConfig, Config, PingStrategy};
use crate::phone::E164;
use crate::simulate::buyers::{self, BuyerServer};
use crate::simulate::freeswitch;
use crate::simulate::scenario::{BidBehaviour, BuyerSpec, LatencySpec, Scenario};

/// Loopback buyers the catalog pings (ports base..base+20).
pub const BUYERS: u16 = 20;
/// Tracking number of the campaign with 10 buyers per auction.
pub const NUMBER_10: &str = "+18005550110";
/// Tracking number of the campaign with 20 buyers per auction.
pub const NUMBER_20: &str = "+18005550120";
/// The auction deadline the benchmark catalog sets (matches the config
/// `scripts/bench.sh` writes).
const DEADLINE_MS: u64 = 100;
/// USER_HZ: /proc reports CPU times in these ticks; the kernel ABI fixes it
/// at 100 on every Linux architecture bidbridge runs on.
const TICKS_PER_SEC: f64 = 100.0;
/// A call is late when it lasts this much longer than its deadline and
/// hold time: the daemon (or the machine) fell behind.
const LATE_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Print the benchmark catalog (TOML, for `bidbridge catalog apply`): campaign "bench10"
    /// on +18005550110 pings buyers 0-9, "bench20" on +18005550120 pings buyers 0-19; no IVR,
    /// no caps, every buyer's phone is sip:bench-answer-N@127.0.0.1.
    Catalog {
        /// Address of buyer 0; buyer N listens on the next ports.
        #[arg(long, default_value = "127.0.0.1:19100")]
        buyers: SocketAddr,
    },
    /// Run the benchmark phases against a running daemon (`bidbridge run` with the same
    /// --config; its ESL and HTTP listeners are read from it), print a table and write
    /// summary.json. Exit status 1 when a --tiny correctness check fails.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every phase at full size (about 10 minutes).
    Full,
    /// Smaller steps, 1,000 held calls, ~10 s phases (under 2 minutes).
    Quick,
    /// A few hundred calls; checks correctness only (for scripts/test.sh).
    Tiny,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "quick")]
    pub mode: Mode,
    /// The daemon's process id (its memory and CPU are read from /proc/PID).
    #[arg(long)]
    pub pid: u32,
    /// Address of loopback buyer 0 (must match the applied catalog).
    #[arg(long, default_value = "127.0.0.1:19100")]
    pub buyers: SocketAddr,
    /// Buyers' median answer time.
    #[arg(long, default_value_t = 20.0)]
    pub median_ms: f64,
    /// Buyers' 99th-percentile answer time.
    #[arg(long, default_value_t = 80.0)]
    pub p99_ms: f64,
    /// Percent of pings never answered.
    #[arg(long, default_value_t = 5.0)]
    pub never_pct: f64,
    /// How long a never-answered ping is held before the buyer gives up,
    /// in ms (10x the bench's 100 ms deadline). The daemon has dropped the
    /// request at its deadline either way; a longer hold only costs the
    /// load generator sockets: at 500 calls/s x 20 buyers x 5 % an 11 s
    /// hold kept ~5,500 open and ran it out of file descriptors.
    #[arg(long, default_value_t = 1000)]
    pub never_hold_ms: u64,
    /// Where to write the summary (other figures go to details.json beside it).
    #[arg(long, default_value = "target/bench/summary.json")]
    pub out: PathBuf,
}

/// The benchmark catalog for buyers starting at `base`.
pub fn catalog_toml(base: SocketAddr) -> String {
    let mut text = format!(
        r#"# Generated by `bidbridge bench catalog`: load-test campaigns without IVR.
[[publishers]]
id = "bench-pub"
name = "Bench publisher"
payout = {{ fixed = "1.00" }}

[[campaigns]]
id = "bench10"
name = "Bench, 10 buyers"
vertical = "bench"
auction_deadline_ms = {DEADLINE_MS}
min_talk_secs = 0

[[campaigns]]
id = "bench20"
name = "Bench, 20 buyers"
vertical = "bench"
auction_deadline_ms = {DEADLINE_MS}
min_talk_secs = 0

[[numbers]]
number = "{NUMBER_10}"
campaign = "bench10"
publisher = "bench-pub"
source = "bench"

[[numbers]]
number = "{NUMBER_20}"
campaign = "bench20"
publisher = "bench-pub"
source = "bench"
"#
    );
    for i in 0..BUYERS {
        let campaigns = if i < 10 {
            r#"["bench10", "bench20"]"#
        } else {
            r#"["bench20"]"#
        };
        let addr = SocketAddr::new(base.ip(), base.port() + i);
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"b{i:02}\"\nname = \"Bench buyer {i}\"\n\n[[buyers.destinations]]\nid = \"d{i:02}\"\ncampaigns = {campaigns}\nping = {{ url = \"http://{addr}/bid\" }}\ndial = {{ sip = \"sip:bench-answer-{i}@127.0.0.1:5090\" }}\nring_timeout_secs = 20\n"
        ));
    }
    text
}

/// A scenario of silent callers (no IVR to answer) whose winning buyer
/// answers at once and talks `talk_secs` simulated seconds.
fn scenario(number: &str, talk_secs: f64, time_scale: f64) -> Result<Scenario, String> {
    Scenario::parse(&format!(
        r#"[run]
calls = 1
rate_per_sec = 1.0
tracking_number = "{number}"
caller_base = "+13125000000"
time_scale = {time_scale}

[[legs]]
match = "bench-answer"
behaviour = "answer"
ring_secs = 0.0
talk_secs = {talk_secs}
# The caller ends it: a buyer hanging up early would offer the caller to
# the next bidder (recovery), which is not what these phases measure.
ended_by = "caller"
"#
    ))
}

/// What a burst of calls did, seen from the switch.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Load {
    placed: u32,
    completed: u32,
    failed: u32,
    late: u32,
    /// How far the generator fell behind its schedule (the machine, not
    /// necessarily the daemon, was saturated).
    max_lag_ms: u64,
    longest_call_ms: u64,
    first_error: Option<String>,
}

impl Load {
    fn clean(&self) -> bool {
        self.failed == 0 && self.late == 0 && self.completed == self.placed
    }
}

/// Places `calls` calls at `rate` per second, evenly spaced, starting with
/// caller index `first`. A call is late when it lasts longer than
/// `late_after`.
async fn drive(
    esl: SocketAddr,
    scenario: Arc<Scenario>,
    rate: f64,
    calls: u32,
    first: u32,
    late_after: Duration,
) -> Load {
    let mut load = Load::default();
    let tally =
        |load: &mut Load,
         done: Result<crate::simulate::scenario::CallTrace, tokio::task::JoinError>| {
            match done {
                Ok(trace) => {
                    load.longest_call_ms = load.longest_call_ms.max(trace.duration_ms);
                    if trace.completed && trace.error.is_none() {
                        load.completed += 1;
                        if trace.duration_ms > late_after.as_millis() as u64 {
                            load.late += 1;
                        }
                    } else {
                        load.failed += 1;
                        if load.first_error.is_none() {
                            load.first_error = Some(crate::simulate::summary_line(&trace));
                        }
                    }
                }
                Err(e) => {
                    load.failed += 1;
                    load.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        };
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..calls {
        let at = start + Duration::from_secs_f64(f64::from(i) / rate);
        let now = Instant::now();
        if now < at {
            tokio::time::sleep_until(at).await;
        } else {
            load.max_lag_ms = load.max_lag_ms.max((now - at).as_millis() as u64);
        }
        tasks.spawn(freeswitch::run_call(esl, scenario.clone(), first + i));
        load.placed += 1;
        // Reap finished calls as we go so a long phase holds only the live ones.
        while let Some(done) = tasks.try_join_next() {
            tally(&mut load, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally(&mut load, done);
    }
    load
}

/// Reads the daemon from outside: /metrics and /proc.
struct Probe {
    http: SocketAddr,
    pid: u32,
}

impl Probe {
    /// `GET /metrics` over a bare HTTP/1.0 exchange (no client library needed).
    async fn metrics(&self) -> Result<String, String> {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(self.http).await?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bidbridge\r\n\r\n")
                .await?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await?;
            Ok::<_, std::io::Error>(raw)
        };
        let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("GET http://{}/metrics timed out", self.http))?
            .map_err(|e| format!("GET http://{}/metrics: {e}", self.http))?;
        let text = String::from_utf8_lossy(&raw);
        match text.split_once("\r\n\r\n") {
            Some((_, body)) => Ok(body.to_string()),
            None => Err("malformed /metrics answer".into()),
        }
    }

    /// One unlabelled sample of `name` (e.g. `bidbridge_sessions`).
    async fn metric(&self, name: &str) -> Result<f64, String> {
        let body = self.metrics().await?;
        metric_value(&body, name).ok_or_else(|| format!("/metrics has no {name}"))
    }

    fn rss_bytes(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        parse_rss(&text).ok_or_else(|| format!("{path}: no VmRSS"))
    }

    fn cpu_ms(&self) -> Result<f64, String> {
        process_cpu_ms(&format!("/proc/{}/stat", self.pid))
    }

    /// Waits (bounded) until the daemon has written `expected` records, or
    /// has no call open and nothing queued or journalled (a failed call may
    /// leave no record, so the count alone could wait forever).
    async fn records_caught_up(&self, expected: u64, limit: Duration) -> Result<bool, String> {
        let until = Instant::now() + limit;
        let mut quiet_polls = 0;
        loop {
            let body = self.metrics().await?;
            let get = |name| metric_value(&body, name).unwrap_or(f64::NAN);
            if get("bidbridge_records_written") >= expected as f64 {
                return Ok(true);
            }
            if get("bidbridge_sessions") == 0.0
                && get("bidbridge_records_queue_depth") == 0.0
                && get("bidbridge_journal_depth") == 0.0
            {
                // Twice in a row: a record is queued just after its session ends.
                quiet_polls += 1;
                if quiet_polls >= 3 {
                    return Ok(false);
                }
            } else {
                quiet_polls = 0;
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until no session is open; the last count seen.
    async fn sessions_drained(&self, limit: Duration) -> Result<f64, String> {
        let until = Instant::now() + limit;
        loop {
            let open = self.metric("bidbridge_sessions").await?;
            if open == 0.0 || Instant::now() >= until {
                return Ok(open);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// utime + stime of the process whose `stat` file is at `path`, in ms.
fn process_cpu_ms(path: &str) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse_cpu_ticks(&text)
        .map(|ticks| ticks as f64 * 1000.0 / TICKS_PER_SEC)
        .ok_or_else(|| format!("{path}: unreadable"))
}

fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime from /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sizes of the phases per mode.
struct Plan {
    step_rates: Vec<f64>,
    step_secs: f64,
    sustain_secs: f64,
    overhead_rate: f64,
    overhead_secs: f64,
    held: u32,
    held_rate: f64,
    ratio_auctions: usize,
}

impl Plan {
    fn for_mode(mode: Mode) -> Plan {
        match mode {
            Mode::Full => Plan {
                step_rates: (1..=12).map(|i| f64::from(i) * 200.0).collect(),
                step_secs: 5.0,
                sustain_secs: 60.0,
                overhead_rate: 500.0,
                overhead_secs: 20.0,
                held: 10_000,
                held_rate: 500.0,
                ratio_auctions: 300,
            },
            Mode::Quick | Mode::Tiny => Plan {
                step_rates: vec![100.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0, 1500.0],
                step_secs: 3.0,
                sustain_secs: 10.0,
                overhead_rate: 500.0,
                overhead_secs: 6.0,
                held: 1_000,
                held_rate: 500.0,
                ratio_auctions: 100,
            },
        }
    }
}

/// Real seconds a setup-phase call holds the bridge (short: the phase
/// measures setup, not capacity), and the simulated talk time it stands for.
const SHORT_HOLD_REAL_SECS: f64 = 0.5;
const SHORT_TALK_SECS: f64 = 2.0;

/// Every figure, for the table, summary.json and details.json.
#[derive(Debug, Default, serde::Serialize)]
struct Figures {
    setup_calls_per_s: f64,
    steps: Vec<(f64, Load)>,
    sustain: Load,
    auction_overhead_p50_ms: f64,
    auction_overhead_p99_ms: f64,
    auction_overhead_max_ms: f64,
    overhead_auctions: usize,
    overhead_load: Load,
    held_calls: f64,
    held_target: u32,
    held_load: Load,
    rss_before_bytes: u64,
    rss_peak_bytes: u64,
    rss_bytes_per_held_call: f64,
    cpu_ms_per_call: f64,
    phase1_calls: u32,
    records_per_s: f64,
    record_rows_phase1: i64,
    queue_max_depth: f64,
    failed_calls: u32,
    sequential_mean_ms: f64,
    parallel_mean_ms: f64,
    sequential_vs_parallel_ratio: f64,
    notes: Vec<String>,
}

/// `bidbridge bench ...`.
pub async fn main(config: &Config, args: BenchArgs) -> Result<ExitCode, String> {
    match args.command {
        BenchCommand::Catalog { buyers } => {
            print!("{}", catalog_toml(buyers));
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Run(run) => run_bench(config, run).await,
    }
}

async fn start_buyers(args: &RunArgs) -> Result<Vec<BuyerServer>, String> {
    let latency = LatencySpec {
        median_ms: args.median_ms,
        p99_ms: args.p99_ms,
        never_pct: args.never_pct,
        never_hold_ms: Some(args.never_hold_ms),
    };
    latency.validate()?;
    let mut servers = Vec::new();
    for i in 0..BUYERS {
        let spec = BuyerSpec {
            listen: SocketAddr::new(args.buyers.ip(), args.buyers.port() + i),
            behaviour: BidBehaviour::Bid,
            // Distinct prices so ranking has work to do and ties are rare.
            price: Some(crate::money::Cents(1000 + i64::from(i) * 37)),
            delay_ms: 0,
            dialect: None,
            min_talk_secs: None,
            latency: Some(latency),
        };
        servers.push(
            buyers::spawn_quiet(&spec)
                .await
                .map_err(|e| format!("buyer on {}: {e}", spec.listen))?,
        );
    }
    Ok(servers)
}

async fn run_bench(config: &Config, args: RunArgs) -> Result<ExitCode, String> {
    let esl = config.esl.listen;
    let probe = Probe {
        http: config.http.listen,
        pid: args.pid,
    };
    // Fail early and clearly when the daemon is not there.
    probe.metric("bidbridge_sessions").await?;
    probe.rss_bytes()?;
    let _buyers = start_buyers(&args).await?;

    let (db, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let driver = tokio::spawn(connection);

    let result = if args.mode == Mode::Tiny {
        tiny(esl, &probe, &db).await
    } else {
        let figures = phases(esl, &probe, &db, &args).await?;
        report(&figures, &args)?;
        Ok(ExitCode::SUCCESS)
    };
    drop(db);
    driver.abort();
    result
}

/// `--tiny`: a few hundred calls; every one must complete, leave exactly
/// one record and no session behind.
async fn tiny(
    esl: SocketAddr,
    probe: &Probe,
    db: &tokio_postgres::Client,
) -> Result<ExitCode, String> {
    const CALLS: u32 = 300;
    let sc = Arc::new(scenario(NUMBER_10, 1.0, 0.2)?);
    let before = count(db, "SELECT count(*) FROM calls").await?;
    let written_before = probe.metric("bidbridge_records_written").await? as u64;
    let late_after = Duration::from_millis(DEADLINE_MS + 200) + LATE_SLACK * 3;
    let (daemon_cpu, own_cpu) = (probe.cpu_ms()?, process_cpu_ms("/proc/self/stat")?);
    let load = drive(esl, sc, 100.0, CALLS, 0, late_after).await;
    let caught_up = probe
        .records_caught_up(written_before + u64::from(CALLS), Duration::from_secs(30))
        .await?;
    let records = count(db, "SELECT count(*) FROM calls").await? - before;
    let sessions = probe.sessions_drained(Duration::from_secs(10)).await?;
    // Informational (a fixed 100 calls/s, so comparable between runs on one
    // machine): what a call costs the daemon, and this process's simulator
    // and buyers.
    let per_call = |ms: f64| ms / f64::from(CALLS);
    println!(
        "bench --tiny: CPU per call at 100 calls/s: daemon {:.2} ms, simulator + buyers {:.2} ms",
        per_call(probe.cpu_ms()? - daemon_cpu),
        per_call(process_cpu_ms("/proc/self/stat")? - own_cpu)
    );
    let mut problems = Vec::new();
    if load.completed != CALLS || load.failed != 0 {
        problems.push(format!(
            "{} of {CALLS} calls completed, {} failed (first: {})",
            load.completed,
            load.failed,
            load.first_error.as_deref().unwrap_or("-")
        ));
    }
    if !caught_up || records != i64::from(CALLS) {
        problems.push(format!("{records} call records for {CALLS} calls"));
    }
    if sessions != 0.0 {
        problems.push(format!("{sessions} sessions still open after the calls"));
    }
    println!(
        "bench --tiny: {CALLS} calls, {} completed, {records} records, {sessions} open sessions",
        load.completed
    );
    if problems.is_empty() {
        println!("bench --tiny: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("bench --tiny: FAILED: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> Result<i64, String> {
    let row = db.query_one(sql, &[]).await.map_err(|e| e.to_string())?;
    row.try_get::<_, i64>(0).map_err(|e| e.to_string())
}

const ROWS_SQL: &str = "SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM bids) \
                        + (SELECT count(*) FROM bridge_attempts)";

async fn phases(
    esl: SocketAddr,
    probe: &Probe,
    db: &tokio_postgres::Client,
    args: &RunArgs,
) -> Result<Figures, String> {
    let plan = Plan::for_mode(args.mode);
    let mut f = Figures::default();
    let mut next_index: u32 = 0;
    let mut placed_total: u64 = probe.metric("bidbridge_records_written").await? as u64;
    let short_late = Duration::from_millis(DEADLINE_MS)
        + Duration::from_secs_f64(SHORT_HOLD_REAL_SECS)
        + LATE_SLACK;
    let short_scale = SHORT_HOLD_REAL_SECS / SHORT_TALK_SECS;

    // Phase 3 runs first, on a fresh daemon: RSS measured after other
    // phases would hide per-call memory in what the allocator kept from them.
    // Phase 3: concurrency. Calls talk (at time scale 1) long enough that
    // every one is still bridged when the last one connects.
    println!(
        "== phase 3: concurrency (ramp to {} held calls at {:.0} calls/s)",
        plan.held, plan.held_rate
    );
    let ramp_secs = f64::from(plan.held) / plan.held_rate;
    let talk = ramp_secs + 8.0;
    let sc_held = Arc::new(scenario(NUMBER_10, talk, 1.0)?);
    let rss_before = probe.rss_bytes()?;
    let held_late =
        Duration::from_secs_f64(talk) + Duration::from_millis(DEADLINE_MS) + LATE_SLACK * 5;
    let ramp = tokio::spawn(drive(
        esl,
        sc_held,
        plan.held_rate,
        plan.held,
        next_index,
        held_late,
    ));
    let (mut peak_sessions, mut peak_rss) = (0.0f64, rss_before);
    while !ramp.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // A failed scrape under load is not fatal: the next one counts.
        if let Ok(open) = probe.metric("bidbridge_sessions").await
            && open >= peak_sessions
        {
            peak_sessions = open;
            peak_rss = peak_rss.max(probe.rss_bytes()?);
        }
    }
    let load = ramp.await.map_err(|e| format!("phase 3 driver: {e}"))?;
    placed_total += u64::from(load.placed);
    println!(
        "   peak {peak_sessions} sessions; {} completed, {} failed, {} late, generator lag {} ms",
        load.completed, load.failed, load.late, load.max_lag_ms
    );
    f.failed_calls += load.failed + load.late;
    f.held_calls = peak_sessions;
    f.held_target = plan.held;
    f.held_load = load;
    f.rss_before_bytes = rss_before;
    f.rss_peak_bytes = peak_rss;
    f.rss_bytes_per_held_call = if peak_sessions > 0.0 {
        peak_rss.saturating_sub(rss_before) as f64 / peak_sessions
    } else {
        0.0
    };
    if !probe
        .records_caught_up(placed_total, Duration::from_secs(120))
        .await?
    {
        f.notes
            .push("phase 3: fewer records than calls placed (failed calls leave none)".into());
    }
    placed_total = probe.metric("bidbridge_records_written").await? as u64;
    probe.sessions_drained(Duration::from_secs(10)).await?;

    // Phase 1: setup rate, 10 buyers per auction.
    println!("== phase 1: setup rate (10 buyers per auction, {SHORT_HOLD_REAL_SECS} s hold)");
    let sc10 = Arc::new(scenario(NUMBER_10, SHORT_TALK_SECS, short_scale)?);
    let cpu_start = probe.cpu_ms()?;
    let mut phase1_calls = 0u32;
    let mut best = 0.0;
    for &rate in &plan.step_rates {
        let calls = (rate * plan.step_secs) as u32;
        let load = drive(esl, sc10.clone(), rate, calls, next_index, short_late).await;
        next_index += calls;
        phase1_calls += load.placed;
        placed_total += u64::from(load.placed);
        println!(
            "   {rate:>6.0} calls/s x {:.0} s: {} completed, {} failed, {} late, generator lag {} ms, longest {} ms",
            plan.step_secs,
            load.completed,
            load.failed,
            load.late,
            load.max_lag_ms,
            load.longest_call_ms
        );
        // A generator that cannot keep its schedule did not offer this rate.
        let clean = load.clean() && load.max_lag_ms < 1000;
        f.steps.push((rate, load));
        if !clean {
            break;
        }
        best = rate;
        // Let the previous step's calls and records settle between steps.
        probe.sessions_drained(Duration::from_secs(10)).await?;
    }
    probe
        .records_caught_up(placed_total, Duration::from_secs(60))
        .await?;
    placed_total = probe.metric("bidbridge_records_written").await? as u64;
    probe.sessions_drained(Duration::from_secs(10)).await?;

    // The sustained run: the best clean step for the whole phase length,
    // stepping down a quarter at a time if it does not hold.
    let mut sustain_rate = best;
    while sustain_rate >= plan.step_rates[0] {
        let calls = (sustain_rate * plan.sustain_secs) as u32;
        println!(
            "   sustaining {sustain_rate:.0} calls/s for {:.0} s",
            plan.sustain_secs
        );
        let rows_before = count(db, ROWS_SQL).await?;
        let started = Instant::now();
        let load = drive(
            esl,
            sc10.clone(),
            sustain_rate,
            calls,
            next_index,
            short_late,
        )
        .await;
        next_index += calls;
        phase1_calls += load.placed;
        placed_total += u64::from(load.placed);
        if !probe
            .records_caught_up(placed_total, Duration::from_secs(120))
            .await?
        {
            f.notes
                .push("phase 1: fewer records than calls placed (failed calls leave none)".into());
        }
        placed_total = probe.metric("bidbridge_records_written").await? as u64;
        let took = started.elapsed().as_secs_f64();
        let rows = count(db, ROWS_SQL).await? - rows_before;
        println!(
            "   {} completed, {} failed, {} late, generator lag {} ms; {rows} rows in {took:.1} s",
            load.completed, load.failed, load.late, load.max_lag_ms
        );
        let clean = load.clean();
        f.records_per_s = rows as f64 / took;
        f.record_rows_phase1 = rows;
        f.sustain = load;
        if clean {
            f.setup_calls_per_s = sustain_rate;
            break;
        }
        probe.sessions_drained(Duration::from_secs(10)).await?;
        sustain_rate = (sustain_rate * 0.75 / 50.0).floor() * 50.0;
    }
    f.failed_calls += f.sustain.failed + f.sustain.late;
    let cpu_end = probe.cpu_ms()?;
    f.phase1_calls = phase1_calls;
    f.cpu_ms_per_call = if phase1_calls > 0 {
        (cpu_end - cpu_start) / f64::from(phase1_calls)
    } else {
        0.0
    };
    f.queue_max_depth = probe.metric("bidbridge_records_queue_max_depth").await?;
    probe.sessions_drained(Duration::from_secs(10)).await?;

    // Phase 2: auction overhead at 500 calls/s with 20 buyers per auction.
    println!(
        "== phase 2: auction overhead ({:.0} calls/s x {:.0} s, 20 buyers per auction)",
        plan.overhead_rate, plan.overhead_secs
    );
    let sc20 = Arc::new(scenario(NUMBER_20, SHORT_TALK_SECS, short_scale)?);
    let calls = (plan.overhead_rate * plan.overhead_secs) as u32;
    let load = drive(esl, sc20, plan.overhead_rate, calls, next_index, short_late).await;
    placed_total += u64::from(load.placed);
    println!(
        "   {} completed, {} failed, {} late, generator lag {} ms",
        load.completed, load.failed, load.late, load.max_lag_ms
    );
    f.failed_calls += load.failed + load.late;
    if !probe
        .records_caught_up(placed_total, Duration::from_secs(120))
        .await?
    {
        f.notes
            .push("phase 2: fewer records than calls placed (failed calls leave none)".into());
    }
    f.overhead_load = load;
    // Decision time minus the slowest ping the auction waited for; a
    // timed-out ping's latency is about the deadline, which is what the
    // auction waited for.
    let rows = db
        .query(
            "SELECT (c.auction_us - max(b.latency_us))::float8 / 1000.0 \
             FROM calls c JOIN bids b ON b.call_id = c.call_id \
             WHERE c.campaign_id = 'bench20' AND c.auction_us IS NOT NULL \
               AND b.latency_us IS NOT NULL \
             GROUP BY c.call_id, c.auction_us",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut overheads: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.try_get::<_, f64>(0).ok())
        .collect();
    overheads.sort_by(f64::total_cmp);
    f.overhead_auctions = overheads.len();
    f.auction_overhead_p50_ms = quantile(&overheads, 0.50);
    f.auction_overhead_p99_ms = quantile(&overheads, 0.99);
    f.auction_overhead_max_ms = overheads.last().copied().unwrap_or(0.0);
    println!(
        "   overhead over {} auctions: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        f.overhead_auctions,
        f.auction_overhead_p50_ms,
        f.auction_overhead_p99_ms,
        f.auction_overhead_max_ms
    );
    probe.sessions_drained(Duration::from_secs(10)).await?;

    // The ping tree comparison, in process, against the same buyers.
    println!(
        "== sequential vs parallel ({} auctions each, 20 buyers)",
        plan.ratio_auctions
    );
    let (seq, par) = strategy_ratio(args.buyers, plan.ratio_auctions).await?;
    f.sequential_mean_ms = seq;
    f.parallel_mean_ms = par;
    f.sequential_vs_parallel_ratio = if par > 0.0 { seq / par } else { 0.0 };
    Ok(f)
}

/// Mean auction time (ms) of the `sequential` and the `parallel` strategy
/// over `n` auctions each, against the 20 loopback buyers.
async fn strategy_ratio(buyers: SocketAddr, n: usize) -> Result<(f64, f64), String> {
    let doc = CatalogDoc::parse(&catalog_toml(buyers), DocFormat::Toml)?;
    let snapshot = Snapshot::build(&doc).map_err(|issues| {
        issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let number = E164::parse_strict(NUMBER_20).map_err(|e| e.to_string())?;
    let route = snapshot
        .numbers
        .get(&number)
        .cloned()
        .ok_or("the bench catalog has no 20-buyer number")?;
    let mut means = Vec::new();
    for strategy in [PingStrategy::Sequential, PingStrategy::Parallel] {
        let auctioneer = Auctioneer::new(
            AuctionConfig {
                strategy,
                default_deadline_ms: DEADLINE_MS,
                ..AuctionConfig::default()
            },
            Vec::new(),
        );
        let exclude = HashSet::new();
        let route = &route;
        let exclude = &exclude;
        let auctioneer = &auctioneer;
        // Concurrent auctions only to finish in reasonable time (a
        // sequential auction takes ~0.5 s); both strategies get the same.
        let took: Vec<Duration> = futures::stream::iter(0..n)
            .map(|i| async move {
                let now = chrono::Utc::now();
                let caller = E164::parse_strict(&format!("+1312500{:04}", i % 10_000)).ok();
                let facts = CallFacts::derive(caller.as_ref(), &BTreeMap::new(), "bench", now);
                let call_id = uuid::Uuid::new_v4().to_string();
                let input = AuctionInput {
                    call_id: &call_id,
                    route,
                    facts: &facts,
                    now,
                    exclude,
                    consent: false,
                    static_only: false,
                    test: true,
                };
                auctioneer.run(&input, &OpenGate, &NeutralScorer).await.took
            })
            .buffer_unordered(25)
            .collect()
            .await;
        let mean = took.iter().map(Duration::as_secs_f64).sum::<f64>() / took.len().max(1) as f64;
        println!("   {strategy:?}: mean {:.1} ms", mean * 1000.0);
        means.push(mean * 1000.0);
    }
    Ok((means[0], means[1]))
}

/// Prints the table and the goals, writes summary.json and details.json.
fn report(f: &Figures, args: &RunArgs) -> Result<(), String> {
    let kib = f.rss_bytes_per_held_call / 1024.0;
    let goals = [
        (
            "setup >= 1,000 calls/s (10 buyers), no failed call",
            f.setup_calls_per_s >= 1000.0 && f.sustain.clean(),
        ),
        (
            "auction overhead p99 <= 2 ms at 500 calls/s x 20 buyers",
            f.overhead_auctions > 0 && f.auction_overhead_p99_ms <= 2.0,
        ),
        (
            "10,000 held calls, <= 50 KiB RSS per held call",
            f.held_calls >= 10_000.0 && f.held_load.clean() && kib <= 50.0,
        ),
        ("<= 1 ms daemon CPU per call", f.cpu_ms_per_call <= 1.0),
    ];
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    let rows: Vec<(String, String)> = vec![
        (
            "setup rate sustained (10 buyers/auction)".into(),
            format!("{:.0} calls/s", f.setup_calls_per_s),
        ),
        (
            "auction overhead p50 / p99 / max (20 buyers, 500 calls/s)".into(),
            format!(
                "{:.3} / {:.3} / {:.3} ms over {} auctions",
                f.auction_overhead_p50_ms,
                f.auction_overhead_p99_ms,
                f.auction_overhead_max_ms,
                f.overhead_auctions
            ),
        ),
        (
            "held calls (peak bidbridge_sessions)".into(),
            format!(
                "{:.0} of {} ({} completed, {} failed)",
                f.held_calls, f.held_target, f.held_load.completed, f.held_load.failed
            ),
        ),
        (
            "daemon RSS per held call".into(),
            format!(
                "{kib:.1} KiB ({:.1} MiB -> {:.1} MiB)",
                f.rss_before_bytes as f64 / 1048576.0,
                f.rss_peak_bytes as f64 / 1048576.0
            ),
        ),
        (
            "daemon CPU per call (phase 1)".into(),
            format!("{:.3} ms over {} calls", f.cpu_ms_per_call, f.phase1_calls),
        ),
        (
            "record rows reaching PostgreSQL (phase 1 sustained)".into(),
            format!("{:.0} rows/s", f.records_per_s),
        ),
        (
            "largest writer queue backlog".into(),
            format!("{:.0} records", f.queue_max_depth),
        ),
        (
            "failed or late calls (measured phases)".into(),
            f.failed_calls.to_string(),
        ),
        (
            "sequential / parallel auction time".into(),
            format!(
                "{:.1}x ({:.1} ms / {:.1} ms)",
                f.sequential_vs_parallel_ratio, f.sequential_mean_ms, f.parallel_mean_ms
            ),
        ),
    ];
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    println!();
    for (goal, met) in goals {
        println!("goal {}: {goal}", if met { "MET    " } else { "NOT MET" });
    }
    for note in &f.notes {
        println!("note: {note}");
    }
    let summary = serde_json::json!({
        "setup_calls_per_s": f.setup_calls_per_s,
        "auction_overhead_p50_ms": f.auction_overhead_p50_ms,
        "auction_overhead_p99_ms": f.auction_overhead_p99_ms,
        "auction_overhead_max_ms": f.auction_overhead_max_ms,
        "held_calls": f.held_calls,
        "rss_bytes_per_held_call": f.rss_bytes_per_held_call,
        "cpu_ms_per_call": f.cpu_ms_per_call,
        "records_per_s": f.records_per_s,
        "failed_calls": f.failed_calls,
        "sequential_vs_parallel_ratio": f.sequential_vs_parallel_ratio,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text + "\n").map_err(|e| format!("{}: {e}", args.out.display()))?;
    let details = args.out.with_file_name("details.json");
    let text = serde_json::to_string_pretty(f).map_err(|e| e.to_string())?;
    std::fs::write(&details, text + "\n").map_err(|e| format!("{}: {e}", details.display()))?;
    println!("wrote {} and {}", args.out.display(), details.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_valid_and_has_both_campaigns() {
        let doc = CatalogDoc::parse(
            &catalog_toml("127.0.0.1:19100".parse().expect("addr")),
            DocFormat::Toml,
        )
        .expect("parses");
        assert!(doc.validate().is_empty(), "{:?}", doc.validate());
        let snapshot = Snapshot::build(&doc).expect("builds");
        let count = |n: &str| {
            let number = E164::parse_strict(n).expect("number");
            snapshot.numbers[&number].campaign.destinations.len()
        };
        assert_eq!(count(NUMBER_10), 10);
        assert_eq!(count(NUMBER_20), 20);
    }

    #[test]
    fn proc_and_metrics_parsing() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        let stat = "42 (bid bridge) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let body =
            "# TYPE bidbridge_sessions gauge\nbidbridge_sessions 7\nbidbridge_sessions_x 9\n";
        assert_eq!(metric_value(body, "bidbridge_sessions"), Some(7.0));
        assert_eq!(metric_value(body, "bidbridge_nothing"), None);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
