//! `bidbridge simulate`: a built-in switch simulator (FreeSWITCH outbound
//! ESL, [`freeswitch`]) and loopback buyer servers ([`buyers`]), driven by a
//! scenario file ([`scenario`]). The engine of the demo, the integration
//! tests and the benchmarks, so it must stay faithful to the recorded wire
//! traffic (`shared/fixtures/esl/`).
//!
//! What it must never do: run buyer servers beyond loopback, or leave a run
//! hanging — every wait on the daemon is bounded, so a run always ends with
//! a report, failed calls included.

pub mod asterisk;
pub mod buyers;
pub mod freeswitch;
pub mod scenario;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use scenario::{CallTrace, Scenario, SimReport};

/// Places `run.calls` calls to the daemon's ESL port at `run.rate_per_sec`,
/// concurrently, and reports each call as the switch saw it.
pub async fn run_freeswitch(esl_addr: SocketAddr, scenario: &Scenario) -> SimReport {
    let shared = Arc::new(scenario.clone());
    let calls = scenario.run.calls;
    // Parse guarantees a positive rate; guard anyway so a hand-built
    // scenario cannot divide by zero.
    let rate = if scenario.run.rate_per_sec > 0.0 {
        scenario.run.rate_per_sec
    } else {
        1.0
    };
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..calls {
        let at = start + Duration::from_secs_f64(f64::from(index) / rate);
        tokio::time::sleep_until(at).await;
        tasks.spawn(freeswitch::run_call(esl_addr, shared.clone(), index));
    }
    let mut traces = Vec::with_capacity(calls as usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(trace) => traces.push(trace),
            // run_call never panics by design; if it did, the call still counts.
            Err(e) => traces.push(CallTrace {
                index: u32::MAX,
                ended: "error".into(),
                error: Some(format!("simulator task failed: {e}")),
                ..CallTrace::default()
            }),
        }
    }
    traces.sort_by_key(|t| t.index);
    let completed = traces
        .iter()
        .filter(|t| t.completed && t.error.is_none())
        .count() as u32;
    SimReport {
        calls,
        completed,
        failed: traces.len() as u32 - completed,
        traces,
    }
}

/// `bidbridge simulate`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,
    /// Scenario file (TOML): callers, buyer legs, loopback bidders.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Which switch to play: FreeSWITCH (outbound ESL) or Asterisk (FastAGI).
    #[arg(long, value_enum, default_value = "freeswitch")]
    pub pbx: SimPbx,
    /// The daemon's FreeSWITCH Event Socket listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8084")]
    pub esl: SocketAddr,
    /// The daemon's FastAGI listener (with --pbx asterisk).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4573")]
    pub agi: SocketAddr,
    /// Calls to place (overrides run.calls).
    #[arg(long, value_name = "N")]
    pub calls: Option<u32>,
    /// Calls started per second (overrides run.rate_per_sec).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Also write the full report (every call's trace) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Do not start the scenario's [[buyers]] (they are served elsewhere).
    #[arg(long)]
    pub no_buyers: bool,
}

/// The switch the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimPbx {
    Freeswitch,
    Asterisk,
}

#[derive(Debug, clap::Subcommand)]
pub enum SimulateCommand {
    /// Serve only the scenario's [[buyers]] as loopback HTTP bidders, until Ctrl-C.
    Buyers {
        /// Scenario file (TOML).
        #[arg(long, value_name = "FILE")]
        scenario: PathBuf,
    },
}

/// Why `simulate` could not run (as opposed to calls that failed).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The scenario or the command line is wrong (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Something outside the scenario failed (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl SimulateError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SimulateError::Usage(_) => 2,
            SimulateError::Failed(_) => 1,
        }
    }
}

/// Runs `bidbridge simulate`; `Ok(true)` when every call completed.
pub async fn main(args: SimulateArgs) -> Result<bool, SimulateError> {
    if let Some(SimulateCommand::Buyers { scenario }) = args.command {
        let scenario =
            Scenario::read(&scenario).map_err(|e| SimulateError::Usage(e.to_string()))?;
        if scenario.buyers.is_empty() {
            return Err(SimulateError::Usage(
                "the scenario has no [[buyers]]".into(),
            ));
        }
        let servers = start_buyers(&scenario).await?;
        println!("serving {} buyer(s); Ctrl-C to stop", servers.len());
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| SimulateError::Failed(format!("waiting for Ctrl-C: {e}")))?;
        for s in &servers {
            println!("{}: {} request(s)", s.addr(), s.request_count());
        }
        return Ok(true);
    }
    let Some(path) = args.scenario else {
        return Err(SimulateError::Usage(
            "--scenario FILE is required (see bidbridge simulate --help)".into(),
        ));
    };
    let mut scenario = Scenario::read(&path).map_err(|e| SimulateError::Usage(e.to_string()))?;
    if let Some(calls) = args.calls {
        scenario.run.calls = calls;
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(SimulateError::Usage("--rate must be positive".into()));
        }
        scenario.run.rate_per_sec = rate;
    }
    let _servers = if args.no_buyers {
        Vec::new()
    } else {
        start_buyers(&scenario).await?
    };
    let report = match args.pbx {
        SimPbx::Freeswitch => run_freeswitch(args.esl, &scenario).await,
        SimPbx::Asterisk => asterisk::run_asterisk(args.agi, &scenario).await,
    };
    for t in &report.traces {
        println!("{}", summary_line(t));
    }
    println!(
        "{} call(s): {} completed, {} failed",
        report.calls, report.completed, report.failed
    );
    if let Some(out) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| SimulateError::Failed(format!("report: {e}")))?;
        std::fs::write(out, text)
            .map_err(|e| SimulateError::Failed(format!("{}: {e}", out.display())))?;
    }
    Ok(report.failed == 0)
}

async fn start_buyers(scenario: &Scenario) -> Result<Vec<buyers::BuyerServer>, SimulateError> {
    let servers = buyers::spawn_all(&scenario.buyers)
        .await
        .map_err(|e| SimulateError::Failed(format!("starting a buyer server: {e}")))?;
    for s in &servers {
        println!("buyer {:?} on {}", s.spec().behaviour, s.url());
    }
    Ok(servers)
}

/// One line per call: index, caller, how it ended, legs, digits, time.
pub fn summary_line(t: &CallTrace) -> String {
    let legs: Vec<String> = t
        .bridges
        .iter()
        .map(|(dial, behaviour)| format!("{dial} ({behaviour})"))
        .collect();
    let status = match (&t.error, t.completed) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, true) => "ok".into(),
        (None, false) => "FAILED".into(),
    };
    format!(
        "call {} {}: {}; bridges [{}]; dtmf [{}]; {} ms; {status}",
        t.index,
        t.caller,
        if t.ended.is_empty() { "-" } else { &t.ended },
        legs.join(", "),
        t.dtmf_sent.join(","),
        t.duration_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Simulate(SimulateArgs),
    }

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "x",
            "simulate",
            "--scenario",
            "s.toml",
            "--esl",
            "127.0.0.1:9000",
            "--calls",
            "3",
        ])
        .expect("parses");
        let Cmd::Simulate(args) = cli.cmd;
        assert_eq!(args.calls, Some(3));
        assert_eq!(args.esl.port(), 9000);
        let cli = Cli::try_parse_from(["x", "simulate", "buyers", "--scenario", "s.toml"])
            .expect("parses");
        let Cmd::Simulate(args) = cli.cmd;
        assert!(matches!(args.command, Some(SimulateCommand::Buyers { .. })));
    }

    #[tokio::test]
    async fn a_run_against_nothing_reports_every_call_failed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let scenario =
            Scenario::parse("[run]\ncalls = 3\nrate_per_sec = 100.0\n").expect("scenario");
        let report = run_freeswitch(addr, &scenario).await;
        assert_eq!(report.calls, 3);
        assert_eq!(report.failed, 3);
        assert_eq!(
            report.traces.iter().map(|t| t.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(summary_line(&report.traces[0]).contains("FAILED"));
    }
}
