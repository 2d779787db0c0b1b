//! The `bidbridge` command line: what a telecom admin types.
//!
//! Exit status: 0 success; 1 the command failed (database unreachable, a
//! check found problems, a call could not be simulated); 2 the configuration
//! or the command line is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::catalog::spec::{CatalogDoc, DocFormat};
use crate::config::{Config, ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "bidbridge",
    version,
    about = "Real-time call auctions beside your own FreeSWITCH or Asterisk",
    long_about = "bidbridge takes inbound calls on tracking numbers from your switch (FreeSWITCH outbound \
Event Socket or Asterisk FastAGI), qualifies the caller with an IVR, auctions the call to buyers in \
real time, bridges it to the winner with fall-through to the next bidders and a backup line, and \
records every bid and attempt.\n\n\
Typical first run:\n  \
bidbridge migrate                 # create the tables in PostgreSQL\n  \
bidbridge catalog apply cat.toml  # load campaigns, numbers and buyers\n  \
bidbridge check                   # verify config and catalog\n  \
bidbridge run                     # serve calls until SIGTERM\n\n\
Configuration: /etc/bidbridge/bidbridge.toml (or --config), every key overridable by \
BIDBRIDGE_<SECTION>_<KEY> environment variables, e.g. BIDBRIDGE_DATABASE_URL.\n\
Exit status: 0 ok, 1 failure, 2 bad configuration or usage."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "BIDBRIDGE_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// Log as JSON lines instead of text (overrides [log] format).
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve calls: start the listeners in the config (ESL, FastAGI, HTTP) until SIGTERM/SIGINT.
    ///
    /// On SIGTERM the daemon stops accepting calls, lets calls in progress finish for up to
    /// [calls] drain_timeout_secs, then exits 0. If PostgreSQL is unreachable at start it says so
    /// and keeps retrying with backoff; once the catalog is loaded, an outage does not stop routing.
    Run,
    /// Apply the database migrations (each exactly once, in order; safe to run twice or from two nodes).
    Migrate,
    /// Validate the configuration and the catalog in the database; exit 1 on any problem.
    Check,
    /// Manage the catalog (campaigns, numbers, buyers) as a file you keep in git.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Show the effective configuration (file + environment + defaults).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Tokens for the HTTP API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Play FreeSWITCH against a running daemon: place scripted calls to its Event Socket port
    /// and serve loopback buyers from a scenario file; print one line per call and totals.
    ///
    /// Each call is one TCP connection to the daemon's ESL port, as FreeSWITCH's `socket`
    /// application makes it; the switch side answers with the events a real FreeSWITCH 1.10
    /// sends. The scenario's [[buyers]] run as loopback HTTP bidders during the run (unless
    /// --no-buyers). Needs no configuration or database of its own.
    ///
    /// Examples:
    ///   bidbridge simulate --scenario demo.toml --esl 127.0.0.1:8084
    ///   bidbridge simulate --scenario demo.toml --calls 100 --rate 20 --json report.json
    ///   bidbridge simulate buyers --scenario demo.toml   # only the buyers, until Ctrl-C
    ///
    /// Exit status: 0 every call completed, 1 a call failed, 2 bad scenario or usage.
    #[command(verbatim_doc_comment)]
    Simulate(crate::simulate::SimulateArgs),
    /// Totals per campaign, buyer, destination, publisher, source or hour; or `report calls`.
    ///
    /// Money is exact (integer cents). Example: `bidbridge report --by buyer --since 7d --format csv`.
    Report(ReportArgs),
    /// Load and capacity benchmark against a running daemon (used by scripts/bench.sh).
    ///
    /// `bench catalog` prints the benchmark catalog; `bench run --pid PID --mode quick|full|tiny`
    /// serves 20 loopback buyers, places simulated calls on the daemon's ESL port (from the
    /// same --config), reads its /metrics, /proc/PID and records, prints a table and writes
    /// target/bench/summary.json. Run it through scripts/bench.sh, which sets all of that up.
    #[command(hide = true)]
    Bench(crate::bench::BenchArgs),
    /// The internal do-not-call list: callers on it are refused at screening, before any buyer
    /// hears of them. CSV is `number,source,added_at` with a header line.
    ///
    /// Examples:
    ///   bidbridge dnc import optouts.csv --source "web form"
    ///   bidbridge dnc export > dnc.csv
    ///   bidbridge dnc add +13125550100
    ///   bidbridge dnc remove +13125550100
    #[command(subcommand, verbatim_doc_comment)]
    Dnc(DncCommand),
    /// Who got this caller's data? Every ping, bridge, notice and API read of every call from
    /// NUMBER, with the fields sent and the consent relied on.
    ///
    /// Example: `bidbridge sharing --caller +13125550100`
    Sharing {
        /// The caller's number (E.164 or a NANP national form).
        #[arg(long, value_name = "NUMBER")]
        caller: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply the campaigns' retention rules: hash caller numbers, delete recordings, clean the journal.
    ///
    /// Calls past their campaign's `retention_days` get `caller`/`caller_raw` replaced by a keyed
    /// hash; recordings past `recording_retention_days` are deleted (only under [privacy]
    /// recordings_dir) and their paths cleared; journal segments holding records past retention
    /// are replayed into PostgreSQL and deleted. Money columns are never touched. Idempotent.
    /// Prints counts per campaign. Exit status: 0 done, 1 something past retention remains.
    Purge {
        /// Print what would be purged without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DncCommand {
    /// Add every number in FILE (CSV); numbers already listed keep their entry.
    Import {
        file: PathBuf,
        /// Source for rows that name none.
        #[arg(long, default_value = "import")]
        source: String,
    },
    /// Write the whole list as CSV to standard output (or --output).
    Export {
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Add one number.
    Add {
        number: String,
        #[arg(long, default_value = "cli")]
        source: String,
    },
    /// Remove one number.
    Remove { number: String },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    /// What to group by.
    #[arg(long, value_enum, default_value = "campaign")]
    pub by: crate::report::GroupBy,
    /// Start of the window: 30m, 24h, 7d back from now, or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// End of the window (same forms as --since; default now).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::report::Format,
    /// Who got a caller's data (a CCPA request): with --caller, every ping, bridge, notice and
    /// API read of that caller's calls. Same as `bidbridge sharing --caller NUMBER`.
    #[arg(long, requires = "caller")]
    pub sharing: bool,
    /// With --sharing: the caller's number.
    #[arg(long, value_name = "NUMBER")]
    pub caller: Option<String>,
    /// Fraud signals per source instead of totals: talk times clustered just past the payable
    /// minimum, and caller numbers rotating their last digits.
    #[arg(long)]
    pub fraud: bool,
    /// With --fraud: how far past the minimum counts as "just past", in percent.
    #[arg(long, default_value_t = 10)]
    pub margin_percent: u32,
    /// With --fraud: leading digits rotating numbers share.
    #[arg(long, default_value_t = 9)]
    pub prefix_digits: u32,
    /// With --fraud: distinct numbers in one block that flag it.
    #[arg(long, default_value_t = 5)]
    pub min_distinct: i64,
    /// With --fraud: add offending numbers of campaigns with `fraud_auto_block = true` to the blocklist.
    #[arg(long, requires = "fraud")]
    pub auto_block: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The most recent calls, one per line: bids, attempts, winner, price, talk time, payable.
    Calls {
        /// How many calls.
        #[arg(long, default_value_t = 20)]
        last: i64,
        /// Also write them as JSON to PATH.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate FILE (TOML or YAML), then upsert it into PostgreSQL in one transaction and print
    /// what changed.
    Apply {
        file: PathBuf,
        /// Print the changes without writing them.
        #[arg(long)]
        dry_run: bool,
        /// Also delete entries that are in the database but not in FILE.
        #[arg(long)]
        prune: bool,
    },
    /// Write the catalog in the database as a file `catalog apply` accepts.
    Export {
        /// Output format (default: from --output's extension, else toml).
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// Write here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Validate FILE without touching the database.
    Validate { file: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Toml,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the SHA-256 to put in the config or catalog for TOKEN (read from stdin when omitted).
    Hash { token: Option<String> },
    /// Generate a random token and print it with its hash.
    New,
}

/// Runs the command line and maps every outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Command::Simulate(args) = cli.command {
        // A test tool: it needs neither the daemon's configuration nor its
        // database, so a machine without /etc/bidbridge can run it.
        return simulate(args, cli.log_json);
    }
    let config = match Config::load(cli.config.as_deref(), &crate::config::process_env()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bidbridge: configuration error: {e}");
            return ExitCode::from(ConfigError::EXIT_CODE as u8);
        }
    };
    let format = if cli.log_json {
        crate::config::LogFormat::Json
    } else {
        config.log.format
    };
    crate::logging::init(format, &config.log.level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bidbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("bidbridge: {message}");
            ExitCode::FAILURE
        }
    }
}

fn simulate(args: crate::simulate::SimulateArgs, log_json: bool) -> ExitCode {
    let format = if log_json {
        crate::config::LogFormat::Json
    } else {
        crate::config::LogFormat::Text
    };
    crate::logging::init(format, "warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bidbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::simulate::main(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bidbridge simulate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(command: Command, config: Config) -> Result<ExitCode, String> {
    match command {
        // Handled before the configuration is loaded (see main).
        Command::Simulate(_) => Ok(ExitCode::from(2)),
        Command::Bench(args) => crate::bench::main(&config, args).await,
        Command::Run => crate::server::run(config)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Migrate => migrate(&config).await,
        Command::Check => {
            let report = crate::check::run(&config).await;
            print!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Catalog(CatalogCommand::Apply {
            file,
            dry_run,
            prune,
        }) => catalog_apply(&config, &file, dry_run, prune).await,
        Command::Catalog(CatalogCommand::Export { format, output }) => {
            catalog_export(&config, format, output.as_deref()).await
        }
        Command::Catalog(CatalogCommand::Validate { file }) => {
            let doc = CatalogDoc::read(&file).map_err(|e| e.to_string())?;
            let issues = doc.validate();
            if issues.is_empty() {
                println!(
                    "{}: valid ({} campaigns, {} numbers, {} buyers)",
                    file.display(),
                    doc.campaigns.len(),
                    doc.numbers.len(),
                    doc.buyers.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for issue in &issues {
                    println!("{}: {issue}", file.display());
                }
                Ok(ExitCode::from(2))
            }
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Hash { token }) => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            println!("{}", crate::api::auth::hash_token(&token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => report(&config, args).await,
        Command::Dnc(command) => dnc(&config, command).await,
        Command::Sharing { caller, json } => sharing(&config, &caller, json).await,
        Command::Purge { dry_run, json } => purge(&config, dry_run, json).await,
        Command::Token(TokenCommand::New) => {
            let token = crate::api::auth::new_token();
            println!(
                "token:  {token}\nsha256: {}",
                crate::api::auth::hash_token(&token)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn report(config: &Config, args: ReportArgs) -> Result<ExitCode, String> {
    if args.sharing
        && let Some(caller) = &args.caller
    {
        return sharing(
            config,
            caller,
            matches!(args.format, crate::report::Format::Json),
        )
        .await;
    }
    let now = chrono::Utc::now();
    // Parse before connecting: a typo is a usage error (exit 2), not a failure.
    let window = match args.command {
        Some(_) => None,
        None => {
            let since = crate::report::parse_since(&args.since, now);
            let until = args
                .until
                .as_deref()
                .map(|u| crate::report::parse_since(u, now))
                .transpose();
            match (since, until) {
                (Ok(s), Ok(u)) => Some((s, u.unwrap_or(now))),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("bidbridge: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    let (client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = match (args.command, window) {
        (Some(ReportCommand::Calls { last, json }), _) => {
            let lines = crate::report::recent_calls(&client, last)
                .await
                .map_err(|e| e.to_string())?;
            print!("{}", crate::report::render_calls(&lines));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&lines).map_err(|e| e.to_string())?;
                std::fs::write(&path, text + "\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, Some((since, until))) if args.fraud => {
            let options = crate::fraud::FraudOptions {
                margin_percent: args.margin_percent,
                prefix_digits: args.prefix_digits,
                min_distinct_callers: args.min_distinct,
                ..Default::default()
            };
            let report = crate::fraud::build(&client, since, until, options)
                .await
                .map_err(|e| e.to_string())?;
            match args.format {
                crate::report::Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                ),
                _ => print!("{}", report.render()),
            }
            if args.auto_block {
                let added = crate::fraud::auto_block(&client, &report)
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!("auto-block: {added} number(s) added to the blocklist");
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, Some((since, until))) => {
            let report = crate::report::build(&client, args.by, since, until)
                .await
                .map_err(|e| e.to_string())?;
            print!("{}", report.render(args.format));
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => Ok(ExitCode::from(2)),
    };
    drop(client);
    let _ = driver.await;
    result
}

async fn dnc(config: &Config, command: DncCommand) -> Result<ExitCode, String> {
    use crate::compliance::dnc as list;
    let now = chrono::Utc::now();
    // Parse before connecting: a bad file or number is a usage error (exit 2).
    let usage = |e: list::DncError| {
        eprintln!("bidbridge: {e}");
        Ok(ExitCode::from(2))
    };
    enum Op {
        Insert(Vec<list::DncEntry>),
        Export(Option<PathBuf>),
        Remove(crate::phone::E164),
    }
    let op = match command {
        DncCommand::Import { file, source } => {
            let source = match list::parse_source(&source) {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            match list::parse_csv(&text, &source, now) {
                Ok(entries) => Op::Insert(entries),
                Err(e) => {
                    eprintln!("bidbridge: {}: {e}", file.display());
                    return Ok(ExitCode::from(2));
                }
            }
        }
        DncCommand::Add { number, source } => {
            match (list::parse_number(&number), list::parse_source(&source)) {
                (Ok(number), Ok(source)) => Op::Insert(vec![list::DncEntry {
                    number: number.to_string(),
                    source,
                    added_at: now,
                }]),
                (Err(e), _) | (_, Err(e)) => return usage(e),
            }
        }
        DncCommand::Remove { number } => match list::parse_number(&number) {
            Ok(number) => Op::Remove(number),
            Err(e) => return usage(e),
        },
        DncCommand::Export { output } => Op::Export(output),
    };
    let (client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = match op {
        Op::Insert(entries) => {
            let added = list::insert(&client, &entries)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "added {added} number(s); {} already listed",
                entries.len() as u64 - added
            );
            Ok(ExitCode::SUCCESS)
        }
        Op::Remove(number) => {
            if list::remove(&client, &number)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("removed {number}");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{number} was not on the list");
                Ok(ExitCode::FAILURE)
            }
        }
        Op::Export(output) => {
            let entries = list::list(&client).await.map_err(|e| e.to_string())?;
            let text = list::render_csv(&entries);
            match output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    drop(client);
    let _ = driver.await;
    result
}

async fn sharing(config: &Config, caller: &str, json: bool) -> Result<ExitCode, String> {
    let Some(number) = crate::phone::E164::normalize(caller) else {
        eprintln!("bidbridge: {caller:?} is not a phone number");
        return Ok(ExitCode::from(2));
    };
    let (client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let rows = crate::compliance::sharing::for_caller(&client, &number)
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    let rows = rows?;
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "caller": number.as_str(),
            "parties": crate::compliance::sharing::parties(&rows)
                .into_iter()
                .map(|(kind, id)| serde_json::json!({"kind": kind, "id": id}))
                .collect::<Vec<_>>(),
            "rows": rows,
        }))
        .map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", crate::compliance::sharing::render(&number, &rows));
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(config: &Config, dry_run: bool, json: bool) -> Result<ExitCode, String> {
    let (mut client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = crate::purge::run(&mut client, config, chrono::Utc::now(), dry_run).await;
    drop(client);
    let _ = driver.await;
    let report = result.map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.render());
    }
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn migrate(config: &Config) -> Result<ExitCode, String> {
    let (mut client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let report = crate::db::migrate::run(&mut client)
        .await
        .map_err(|e| e.to_string())?;
    for name in &report.applied {
        println!("applied {name}");
    }
    if report.applied.is_empty() {
        println!("schema is up to date ({} migrations)", report.already.len());
    }
    drop(client);
    let _ = driver.await;
    Ok(ExitCode::SUCCESS)
}

async fn catalog_apply(
    config: &Config,
    file: &Path,
    dry_run: bool,
    prune: bool,
) -> Result<ExitCode, String> {
    let doc = match CatalogDoc::read(file) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("bidbridge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let issues = doc.validate();
    if !issues.is_empty() {
        eprintln!(
            "bidbridge: {}: {} problem(s), nothing written:",
            file.display(),
            issues.len()
        );
        for issue in &issues {
            eprintln!("  - {issue}");
        }
        return Ok(ExitCode::from(2));
    }
    let (mut client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let changes = crate::catalog::store::apply(&mut client, &doc, prune, dry_run)
        .await
        .map_err(|e| e.to_string())?;
    let writes = changes.iter().filter(|c| c.is_write()).count();
    for change in &changes {
        println!("{change}");
    }
    match (dry_run, writes) {
        (_, 0) => println!("no changes"),
        (true, n) => println!("dry run: {n} change(s) not written"),
        (false, n) => println!("applied {n} change(s)"),
    }
    drop(client);
    let _ = driver.await;
    Ok(ExitCode::SUCCESS)
}

async fn catalog_export(
    config: &Config,
    format: Option<ExportFormat>,
    output: Option<&Path>,
) -> Result<ExitCode, String> {
    let format = match (format, output.and_then(DocFormat::from_path)) {
        (Some(ExportFormat::Toml), _) => DocFormat::Toml,
        (Some(ExportFormat::Yaml), _) => DocFormat::Yaml,
        (None, Some(f)) => f,
        (None, None) => DocFormat::Toml,
    };
    let (mut client, connection) = crate::db::connect_dedicated(&config.database)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let doc = crate::catalog::store::load(&mut client)
        .await
        .map_err(|e| e.to_string())?;
    let text = doc.render(format)?;
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    drop(client);
    let _ = driver.await;
    Ok(ExitCode::SUCCESS)
}
