//! The daemon's own configuration: one TOML file plus `BIDBRIDGE_*`
//! environment overrides.
//!
//! Every field has a default, so an empty file is a valid configuration for
//! a single node beside a local switch. What the file says must be exactly
//! right, though: an unknown key, a wrong type or a bad address is an error
//! that names the file (or the environment variable), the key and what was
//! expected, and the CLI exits with status 2 on it.
//!
//! Environment overrides are `BIDBRIDGE_<SECTION>_<KEY>`, e.g.
//! `BIDBRIDGE_DATABASE_URL` for `[database] url` or
//! `BIDBRIDGE_CALLS_DRAIN_TIMEOUT_SECS` for `[calls] drain_timeout_secs`.
//! Section names hold no underscore, so the split is unambiguous.
//!
//! The business catalog (campaigns, buyers, numbers) is not here: it lives
//! in PostgreSQL and is managed with `bidbridge catalog apply`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `run`, `check` and friends look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bidbridge/bidbridge.toml";

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "BIDBRIDGE_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["BIDBRIDGE_CONFIG"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub database: DatabaseConfig,
    pub esl: EslConfig,
    pub agi: AgiConfig,
    pub http: HttpConfig,
    pub calls: CallsConfig,
    pub auction: AuctionConfig,
    pub freeswitch: FreeswitchConfig,
    pub asterisk: AsteriskConfig,
    pub records: RecordsConfig,
    pub postbacks: PostbacksConfig,
    pub consent: ConsentConfig,
    pub catalog: CatalogConfig,
    pub log: LogConfig,
    pub privacy: PrivacyConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Names this node in call records and cap leases; defaults to the host name.
    pub id: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "bidbridge".to_string());
        NodeConfig { id: host }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style (`host=/run/postgresql dbname=bidbridge user=bidbridge`)
    /// or URL (`postgres://user@host:5432/db`) connection string.
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    /// Upper bound on any statement the daemon runs; keeps a sick database
    /// from holding a pool connection forever.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "host=/run/postgresql dbname=bidbridge user=bidbridge".to_string(),
            pool_size: 16,
            connect_timeout_ms: 3_000,
            statement_timeout_ms: 10_000,
        }
    }
}

/// The FreeSWITCH outbound Event Socket listener (`socket 127.0.0.1:8084 async full`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EslConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for EslConfig {
    fn default() -> Self {
        EslConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
        }
    }
}

/// The Asterisk FastAGI listener (`AGI(agi://127.0.0.1:4573/route)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for AgiConfig {
    fn default() -> Self {
        AgiConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4573)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// SHA-256 (hex) of the admin API token. The token itself is never
    /// stored; `bidbridge token hash` prints the hash of a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_sha256: Option<String>,
    /// Requests with bodies larger than this are refused (413).
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token_sha256: None,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// What to do with a call to a number that is not in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownNumberAction {
    /// Hang up with UNALLOCATED_NUMBER.
    Hangup,
    /// Leave the call to the dialplan's failover path (the backup line in
    /// the shipped snippets).
    Failover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Calls served at once; a call beyond it is handed straight back to
    /// the switch's dialplan (its failover), see [`crate::admission`].
    pub max_concurrent: usize,
    /// On SIGTERM, how long calls in progress may take to finish.
    pub drain_timeout_secs: u64,
    pub unknown_number: UnknownNumberAction,
    /// A buyer who hangs up within this much talk time has the caller
    /// offered to the next bidder (revenue recovery). 0 turns it off.
    pub recovery_window_secs: u64,
    /// Bridge attempts per call, backup line included.
    pub max_attempts: u32,
    /// Added to a leg's ring timeout for the switch-side failsafe deadline.
    pub failsafe_grace_secs: u64,
    /// Prompt played before hanging up a call that no one would take.
    pub sorry_prompt: String,
    /// Believe the `attest` level of an Identity header that no verstat /
    /// verify_result vouches for (only behind an SBC that strips unverified
    /// Identity headers; docs/retention-and-fraud.md).
    pub trust_unverified_identity: bool,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_concurrent: 20_000,
            drain_timeout_secs: 30,
            unknown_number: UnknownNumberAction::Failover,
            recovery_window_secs: 10,
            max_attempts: 5,
            failsafe_grace_secs: 10,
            sorry_prompt: "bidbridge/sorry".to_string(),
            trust_unverified_identity: false,
        }
    }
}

/// How buyers are asked for bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingStrategy {
    /// Every eligible buyer at once, one deadline (the product).
    Parallel,
    /// One after another, like a traditional ping tree (benchmarks only).
    Sequential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuctionConfig {
    /// Deadline for campaigns that do not set their own.
    pub default_deadline_ms: u64,
    /// Bid responses larger than this are cut off and count as no-bid.
    pub max_response_bytes: usize,
    pub strategy: PingStrategy,
    /// Idle keep-alive connections kept per buyer endpoint.
    pub pool_idle_per_host: usize,
    /// Secret key for the per-buyer caller hash in pings (any long random
    /// string, the same on every node). Empty: pings carry no caller hash.
    pub caller_hash_key: String,
    /// A repeat ping to the same destination for the same caller within
    /// this many seconds reuses the earlier answer (0 turns it off).
    pub reuse_bid_secs: u64,
    /// A destination that leaves this many calls unanswered within
    /// `health_window_secs` is paused for `health_pause_secs` (0 turns it off).
    pub health_unanswered: u32,
    pub health_window_secs: u64,
    pub health_pause_secs: u64,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        AuctionConfig {
            default_deadline_ms: 100,
            max_response_bytes: 16 * 1024,
            strategy: PingStrategy::Parallel,
            pool_idle_per_host: 32,
            caller_hash_key: String::new(),
            reuse_bid_secs: 5,
            health_unanswered: 3,
            health_window_secs: 3600,
            health_pause_secs: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreeswitchConfig {
    /// Sofia profile used to dial SIP URIs: `sofia/<profile>/<uri>`.
    pub sip_profile: String,
    /// Directory holding prompt files; a prompt `bidbridge/welcome` plays
    /// `<prompts_dir>/bidbridge/welcome.<prompt_extension>`.
    pub prompts_dir: String,
    pub prompt_extension: String,
    /// Extension and context the failsafe transfers a stranded caller to
    /// (shipped in dialplan/freeswitch/bidbridge.xml).
    pub failover_extension: String,
    pub failover_context: String,
    /// How the switch serialises this session's events (`myevents json` or
    /// `myevents plain`). JSON is the cheaper one to read: the ESL client
    /// skips splitting lines and percent-decoding ~150 values per event
    /// (docs/performance.md). `plain` is for a switch or a tool in between
    /// that only speaks the plain form.
    pub event_format: SessionEventFormat,
}

/// The serialisation of a session's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventFormat {
    Json,
    Plain,
}

impl Default for FreeswitchConfig {
    fn default() -> Self {
        FreeswitchConfig {
            sip_profile: "external".to_string(),
            prompts_dir: "/usr/share/freeswitch/sounds/en/us/callie".to_string(),
            prompt_extension: "wav".to_string(),
            failover_extension: "bidbridge_failover".to_string(),
            failover_context: "bidbridge".to_string(),
            event_format: SessionEventFormat::Json,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsteriskConfig {
    /// Dial string for a number through a gateway; `{number}` is the E.164
    /// number, `{gateway}` the trunk name. E.g. `PJSIP/{number}@{gateway}`,
    /// `SIP/{gateway}/{number}`, `IAX2/{gateway}/{number}`.
    pub gateway_template: String,
    /// Dial string for a SIP URI; `{uri}` is the whole URI, `{user}` and
    /// `{host}` its parts. E.g. `PJSIP/bidbridge-out/{uri}`.
    pub sip_template: String,
    /// Dial string for a dialplan extension.
    pub extension_template: String,
    /// Context of the `U()` answer routine that stamps the buyer's answer
    /// time (shipped in dialplan/asterisk/extensions_bidbridge.conf).
    pub answered_context: String,
    /// At session start, read `${STIR_SHAKEN(0,attestation)}` and
    /// `${STIR_SHAKEN(0,verify_result)}` with GET FULL VARIABLE (three quick
    /// commands, best effort). Off by default: needs res_stir_shaken loaded.
    pub read_stir_shaken: bool,
}

impl Default for AsteriskConfig {
    fn default() -> Self {
        AsteriskConfig {
            gateway_template: "PJSIP/{number}@{gateway}".to_string(),
            sip_template: "PJSIP/bidbridge-out/{uri}".to_string(),
            extension_template: "Local/{extension}@{context}".to_string(),
            answered_context: "bidbridge-answered".to_string(),
            read_stir_shaken: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Where records wait (fsync'd) while PostgreSQL is unreachable.
    pub journal_dir: PathBuf,
    /// The journal refuses to grow past this; an alarm fires at 80 %.
    pub journal_max_bytes: u64,
    /// Records queued in memory between the call path and the writer.
    pub queue_capacity: usize,
    /// Records written per database round trip.
    pub batch_size: usize,
    /// The writer flushes at least this often when records are waiting.
    pub flush_interval_ms: u64,
    /// A journal segment whose records are all in PostgreSQL is deleted
    /// once it is this old, so caller numbers do not linger on local disk
    /// past a campaign's retention (keep it well below the shortest
    /// `retention_days`).
    pub segment_max_age_secs: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            journal_dir: PathBuf::from("/var/lib/bidbridge/journal"),
            journal_max_bytes: 1 << 30,
            queue_capacity: 100_000,
            batch_size: 500,
            flush_interval_ms: 100,
            segment_max_age_secs: 3600,
        }
    }
}

/// Where consent evidence is read from (docs/compliance.md). Each key is a
/// comma-separated list of names looked up in the call's variables (SIP
/// headers `sip_h_*` and `bidbridge_*` channel variables on FreeSWITCH, AGI
/// `key=value` arguments on Asterisk); the first present name wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    pub consent_id: String,
    /// TrustedForm certificate URL (must be https).
    pub trustedform: String,
    /// Jornaya LeadiD token.
    pub leadid: String,
    /// When the consumer consented (RFC 3339 or Unix seconds).
    pub consent_time: String,
    /// The page or source where consent was given.
    pub page: String,
    /// Longest value accepted; longer values are refused (and noted).
    pub max_value_len: usize,
    /// TrustedForm certificate URLs must be on this host ("" = any https host).
    pub trustedform_host: String,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            consent_id: "sip_h_X-Consent-Id,bidbridge_consent_id,consent_id".into(),
            trustedform: "sip_h_X-TrustedForm-Cert,bidbridge_trustedform,trustedform".into(),
            leadid: "sip_h_X-LeadiD,bidbridge_leadid,leadid".into(),
            consent_time: "sip_h_X-Consent-Time,bidbridge_consent_time,consent_time".into(),
            page: "sip_h_X-Consent-Page,bidbridge_consent_page,consent_page".into(),
            max_value_len: 256,
            trustedform_host: "cert.trustedform.com".into(),
        }
    }
}

/// The postback and buyer-notice sender (docs/records.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostbacksConfig {
    /// Run the sender on this node. Several nodes may run it at once.
    pub enabled: bool,
    /// Wait after the first failed attempt; doubles after each failure.
    pub initial_backoff_ms: u64,
    /// The wait between attempts never grows past this.
    pub max_backoff_ms: u64,
    /// Give up (mark failed) after this many attempts...
    pub max_attempts: u32,
    /// ...or once the postback is this old, whichever comes first.
    pub give_up_after_secs: u64,
    /// Per-request timeout (connect + answer).
    pub timeout_ms: u64,
    /// How often the sender looks for due postbacks when idle.
    pub poll_interval_ms: u64,
    /// Postbacks claimed (and sent concurrently) per round.
    pub batch_size: u32,
}

impl Default for PostbacksConfig {
    fn default() -> Self {
        PostbacksConfig {
            enabled: true,
            initial_backoff_ms: 30_000,
            max_backoff_ms: 3_600_000,
            max_attempts: 30,
            give_up_after_secs: 86_400,
            timeout_ms: 5_000,
            poll_interval_ms: 1_000,
            batch_size: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Full reload interval, the safety net behind LISTEN/NOTIFY.
    pub refresh_secs: u64,
    /// How long to gather NOTIFYs into one reload.
    pub notify_debounce_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            refresh_secs: 60,
            notify_debounce_ms: 50,
        }
    }
}

/// Data retention (docs/retention-and-fraud.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// HMAC-SHA256 key for the hash that replaces purged caller numbers;
    /// empty: `[auction] caller_hash_key`. Same on every node, never rotated
    /// casually (a new key makes old and new hashes of one number differ).
    pub purge_hash_key: String,
    /// The only directory recordings are deleted from; a `recording_path`
    /// outside it is cleared from nothing and reported. Empty: recording
    /// files are never deleted.
    pub recordings_dir: PathBuf,
    /// How often the daemon runs the purge; 0 turns the task off (then run
    /// `bidbridge purge` from cron).
    pub purge_interval_secs: u64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            purge_hash_key: String::new(),
            recordings_dir: PathBuf::new(),
            purge_interval_secs: 86_400,
        }
    }
}

impl PrivacyConfig {
    /// The key purged numbers are hashed with.
    pub fn hash_key<'a>(&'a self, auction: &'a AuctionConfig) -> &'a str {
        if self.purge_hash_key.is_empty() {
            &auction.caller_hash_key
        } else {
            &self.purge_hash_key
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `bidbridge=debug,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

/// A configuration problem, worded for the admin who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "environment variable {var}: no such configuration key (`{key}`); see `bidbridge run --help`"
    )]
    UnknownEnv { var: String, key: String },
}

impl ConfigError {
    /// Exit status for configuration errors (documented in the README).
    pub const EXIT_CODE: i32 = 2;
}

impl Config {
    /// Loads `path` (or the default path when `None` and it exists) and
    /// applies the environment overrides in `env`.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let (text, origin_path) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                (text, path.to_path_buf())
            }
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                match std::fs::read_to_string(&default) {
                    Ok(text) => (text, default),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), default),
                    Err(source) => {
                        return Err(ConfigError::Read {
                            path: default,
                            source,
                        });
                    }
                }
            }
        };
        Self::from_toml_str(&text, &origin_path, env)
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_path_buf(),
                    message: e.to_string().trim().replace('\n', " "),
                })?;
        let overridden = apply_env(&mut table, env)?;

        let deserializer = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            // toml appends "in `section`" lines; the key path already says where.
            let message = e
                .inner()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let origin = match overridden.iter().find(|(k, _)| key.starts_with(k.as_str())) {
                Some((_, var)) => format!("environment variable {var}"),
                None => origin.display().to_string(),
            };
            ConfigError::Key {
                origin,
                key,
                message,
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks that go beyond types.
    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError::Key {
            origin: origin.display().to_string(),
            key: key.to_string(),
            message,
        };
        if self.calls.max_concurrent == 0 {
            return Err(err("calls.max_concurrent", "must be at least 1".into()));
        }
        if !(16..=4096).contains(&self.consent.max_value_len) {
            return Err(err(
                "consent.max_value_len",
                "expected 16 to 4096 characters".into(),
            ));
        }
        if self.calls.max_attempts == 0 {
            return Err(err("calls.max_attempts", "must be at least 1".into()));
        }
        if !(1..=10_000).contains(&self.auction.default_deadline_ms) {
            return Err(err(
                "auction.default_deadline_ms",
                "expected 1 to 10000 milliseconds".into(),
            ));
        }
        if self.records.batch_size == 0 || self.records.queue_capacity == 0 {
            return Err(err(
                "records.batch_size",
                "batch_size and queue_capacity must be at least 1".into(),
            ));
        }
        if self.postbacks.max_attempts == 0 || self.postbacks.batch_size == 0 {
            return Err(err(
                "postbacks.max_attempts",
                "max_attempts and batch_size must be at least 1".into(),
            ));
        }
        if self.postbacks.initial_backoff_ms == 0
            || self.postbacks.max_backoff_ms < self.postbacks.initial_backoff_ms
        {
            return Err(err(
                "postbacks.initial_backoff_ms",
                "expected 0 < initial_backoff_ms <= max_backoff_ms".into(),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(err("database.pool_size", "must be at least 1".into()));
        }
        if let Some(hash) = &self.http.admin_token_sha256
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err(
                "http.admin_token_sha256",
                "expected 64 hex digits (see `bidbridge token hash`)".into(),
            ));
        }
        if crate::catalog::dial::PromptName::new(&self.calls.sorry_prompt).is_err() {
            return Err(err(
                "calls.sorry_prompt",
                "expected a prompt name like bidbridge/sorry".into(),
            ));
        }
        for (key, template, needs) in [
            (
                "asterisk.gateway_template",
                &self.asterisk.gateway_template,
                "{number}",
            ),
            (
                "asterisk.sip_template",
                &self.asterisk.sip_template,
                "{uri}",
            ),
            (
                "asterisk.extension_template",
                &self.asterisk.extension_template,
                "{extension}",
            ),
        ] {
            if !template.contains(needs)
                || template
                    .chars()
                    .any(|c| c.is_whitespace() || c == ',' || c == '"')
            {
                return Err(err(
                    key,
                    format!(
                        "expected a dial string template containing {needs}, without spaces, commas or quotes"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("freeswitch.sip_profile", &self.freeswitch.sip_profile),
            (
                "freeswitch.failover_extension",
                &self.freeswitch.failover_extension,
            ),
            (
                "freeswitch.failover_context",
                &self.freeswitch.failover_context,
            ),
            (
                "freeswitch.prompt_extension",
                &self.freeswitch.prompt_extension,
            ),
            ("asterisk.answered_context", &self.asterisk.answered_context),
        ] {
            if crate::catalog::dial::Token::new(value).is_err() {
                return Err(err(key, "expected letters, digits, _ - . only".into()));
            }
        }
        if self
            .freeswitch
            .prompts_dir
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                "freeswitch.prompts_dir",
                "expected a path without spaces".into(),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, for `bidbridge config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Writes `BIDBRIDGE_SECTION_KEY=value` overrides into `table`, typed after
/// the default configuration's field so `30` becomes an integer only where
/// an integer is expected. Returns `(section.key, VAR)` for error messages.
fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut overridden = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                key: lower,
            });
        };
        let dotted = format!("{section}.{key}");
        let default_value = defaults
            .get(section)
            .and_then(|s| s.as_table())
            .and_then(|s| s.get(key));
        let known_optional = matches!(dotted.as_str(), "http.admin_token_sha256");
        if default_value.is_none() && !known_optional {
            return Err(ConfigError::UnknownEnv {
                var: var.clone(),
                key: dotted,
            });
        }
        let value = match default_value {
            Some(toml::Value::Integer(_)) => raw
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| ConfigError::Key {
                    origin: format!("environment variable {var}"),
                    key: dotted.clone(),
                    message: format!("expected an integer, found `{raw}`"),
                })?,
            Some(toml::Value::Boolean(_)) => match raw.trim() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::Key {
                        origin: format!("environment variable {var}"),
                        key: dotted,
                        message: format!("expected true or false, found `{raw}`"),
                    });
                }
            },
            _ => toml::Value::String(raw.clone()),
        };
        let section_table = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => {
                return Err(ConfigError::Key {
                    origin: format!("environment variable {var}"),
                    key: section.to_string(),
                    message: "the file gives this section as a value, not a table".into(),
                });
            }
        }
        overridden.push((dotted, var.clone()));
    }
    Ok(overridden)
}

/// The process environment as a map, for [`Config::load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            text,
            Path::new("/etc/bidbridge/test.toml"),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.esl.listen.to_string(), "127.0.0.1:8084");
        assert_eq!(config.agi.listen.to_string(), "127.0.0.1:4573");
        assert_eq!(config.auction.default_deadline_ms, 100);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse("[esl]\nlisten = \"127.0.0.1:8084\"\nlistne = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/bidbridge/test.toml"), "{err}");
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let err = parse("[calls]\ndrain_timeout_secs = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("calls.drain_timeout_secs"), "{err}");
        assert!(err.contains("expected"), "{err}");
    }

    #[test]
    fn bad_address_is_named() {
        let err = parse("[agi]\nlisten = \"localhost:port\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agi.listen"), "{err}");
        assert!(err.contains("socket address"), "{err}");
    }

    #[test]
    fn env_overrides_are_typed() {
        let env = BTreeMap::from([
            (
                "BIDBRIDGE_CALLS_DRAIN_TIMEOUT_SECS".to_string(),
                "5".to_string(),
            ),
            (
                "BIDBRIDGE_ESL_LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            ("BIDBRIDGE_AGI_ENABLED".to_string(), "false".to_string()),
            ("BIDBRIDGE_NODE_ID".to_string(), "7".to_string()),
        ]);
        let config = Config::from_toml_str("", Path::new("x.toml"), &env).unwrap();
        assert_eq!(config.calls.drain_timeout_secs, 5);
        assert_eq!(config.esl.listen.port(), 9999);
        assert!(!config.agi.enabled);
        assert_eq!(config.node.id, "7");
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = BTreeMap::from([("BIDBRIDGE_ESL_LISTEN".to_string(), "nope".to_string())]);
        let err = Config::from_toml_str("", Path::new("x.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("BIDBRIDGE_ESL_LISTEN"), "{err}");
        let env = BTreeMap::from([("BIDBRIDGE_ESL_LISTNE".to_string(), "x".to_string())]);
        let err = Config::from_toml_str("", Path::new("x.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("BIDBRIDGE_ESL_LISTNE"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = parse("[esl\n").unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/bidbridge/test.toml: not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = Config::default();
        let again = parse(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }
}
