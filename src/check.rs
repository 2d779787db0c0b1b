//! `bidbridge check`: is this node ready to take calls?
//!
//! Checks the configuration (already parsed by the time we get here), the
//! database schema version, and the catalog: every tracking number maps to
//! a campaign, every buyer has a dial target the switches can dial, and no
//! campaign is left with neither an eligible buyer nor a backup line. Prints
//! what it found, one line per fact, and fails on any problem.

use std::fmt;

use crate::catalog::spec::CatalogDoc;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Problem,
}

#[derive(Debug, Default)]
pub struct CheckReport {
    pub lines: Vec<(Level, String)>,
}

impl CheckReport {
    fn ok(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Ok, line.into()));
    }
    fn warn(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Warning, line.into()));
    }
    fn problem(&mut self, line: impl Into<String>) {
        self.lines.push((Level::Problem, line.into()));
    }
    pub fn is_ok(&self) -> bool {
        !self.lines.iter().any(|(l, _)| *l == Level::Problem)
    }
    pub fn problems(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(|(l, _)| *l == Level::Problem)
            .map(|(_, s)| s.as_str())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (level, line) in &self.lines {
            let tag = match level {
                Level::Ok => "ok     ",
                Level::Warning => "warning",
                Level::Problem => "PROBLEM",
            };
            writeln!(f, "{tag} {line}")?;
        }
        let problems = self
            .lines
            .iter()
            .filter(|(l, _)| *l == Level::Problem)
            .count();
        if problems == 0 {
            writeln!(f, "check passed")
        } else {
            writeln!(f, "check failed: {problems} problem(s)")
        }
    }
}

pub async fn run(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    report.ok(format!("configuration parsed (node {})", config.node.id));
    for (name, enabled, listen) in [
        ("esl", config.esl.enabled, config.esl.listen),
        ("agi", config.agi.enabled, config.agi.listen),
    ] {
        if enabled {
            let scope = if listen.ip().is_loopback() {
                "loopback"
            } else {
                "NOT loopback"
            };
            report.ok(format!("{name} listener {listen} ({scope})"));
        }
    }
    if config.http.enabled {
        report.ok(format!("http listener {}", config.http.listen));
        if config.http.admin_token_sha256.is_none() {
            report.warn("http.admin_token_sha256 is not set: the admin and report API is disabled");
        }
    }

    let (mut client, connection) = match crate::db::connect_dedicated(&config.database).await {
        Ok(pair) => pair,
        Err(e) => {
            report.problem(format!("database: {e}"));
            return report;
        }
    };
    let driver = tokio::spawn(connection);
    match client
        .query_opt("SELECT max(version) FROM schema_migrations", &[])
        .await
    {
        Ok(row) => {
            let have: Option<i32> = row.and_then(|r| r.get(0));
            let want = crate::db::migrate::latest_version();
            match have {
                Some(v) if v == want => report.ok(format!("database schema at version {v}")),
                Some(v) if v > want => report.problem(format!("database schema version {v} is newer than this binary ({want}); upgrade bidbridge")),
                Some(v) => report.problem(format!("database schema at version {v}, this binary needs {want}: run `bidbridge migrate`")),
                None => report.problem("database has no migrations applied: run `bidbridge migrate`"),
            }
        }
        Err(_) => {
            report.problem("database has no schema: run `bidbridge migrate`");
            drop(client);
            let _ = driver.await;
            return report;
        }
    }
    match crate::catalog::store::load(&mut client).await {
        Ok(doc) => {
            check_catalog(&doc, &mut report);
            check_retention(&doc, config, &mut report);
        }
        Err(e) => report.problem(format!("catalog: {e}")),
    }
    drop(client);
    let _ = driver.await;
    report
}

/// Retention rules the configuration cannot carry out: the purge would
/// refuse to run (no hash key) or never delete a recording (no directory).
pub fn check_retention(doc: &CatalogDoc, config: &Config, report: &mut CheckReport) {
    let hashing = doc.campaigns.iter().any(|c| c.retention_days.is_some());
    if hashing && config.privacy.hash_key(&config.auction).is_empty() {
        report.problem(
            "a campaign has retention_days but neither [privacy] purge_hash_key nor [auction] caller_hash_key is set: the purge cannot run",
        );
    }
    let recordings = doc
        .campaigns
        .iter()
        .any(|c| c.recording_retention_days.is_some());
    if recordings && config.privacy.recordings_dir.as_os_str().is_empty() {
        report.warn(
            "a campaign has recording_retention_days but [privacy] recordings_dir is not set: no recording is ever deleted",
        );
    }
    if (hashing || recordings) && config.privacy.purge_interval_secs == 0 {
        report.warn(
            "retention rules exist but [privacy] purge_interval_secs = 0: run `bidbridge purge` from cron",
        );
    }
}

/// The catalog rules, separate so they can be tested without a database.
pub fn check_catalog(doc: &CatalogDoc, report: &mut CheckReport) {
    report.ok(format!(
        "catalog: {} publishers, {} campaigns, {} numbers, {} buyers, {} destinations",
        doc.publishers.len(),
        doc.campaigns.len(),
        doc.numbers.len(),
        doc.buyers.len(),
        doc.destinations().count()
    ));
    for issue in doc.validate() {
        report.problem(format!("catalog: {issue}"));
    }
    for number in &doc.numbers {
        if !doc.campaigns.iter().any(|c| c.id == number.campaign) {
            report.problem(format!(
                "number {} maps to missing campaign {}",
                number.number, number.campaign
            ));
        }
    }
    for buyer in &doc.buyers {
        let dialable = buyer
            .destinations
            .iter()
            .filter(|d| d.enabled && d.dial.validate().is_ok())
            .count();
        if !buyer.enabled {
            report.warn(format!("buyer {} is disabled", buyer.id));
        } else if dialable == 0 {
            report.problem(format!(
                "buyer {} has no enabled destination with a valid dial target",
                buyer.id
            ));
        }
    }
    let by_campaign = doc.destinations_by_campaign();
    for campaign in &doc.campaigns {
        let eligible = by_campaign
            .get(campaign.id.as_str())
            .map(|dests| {
                dests
                    .iter()
                    .filter(|d| {
                        d.enabled
                            && doc
                                .buyers
                                .iter()
                                .any(|b| b.enabled && b.destinations.iter().any(|bd| bd.id == d.id))
                    })
                    .count()
            })
            .unwrap_or(0);
        let numbers = doc
            .numbers
            .iter()
            .filter(|n| n.campaign == campaign.id)
            .count();
        match (eligible, campaign.backup.is_some()) {
            (0, false) => report.problem(format!(
                "campaign {} has no eligible buyer and no backup line",
                campaign.id
            )),
            (0, true) => report.warn(format!(
                "campaign {} has no eligible buyer; every call goes to the backup line",
                campaign.id
            )),
            (n, backup) => report.ok(format!(
                "campaign {}: {n} eligible destination(s), {numbers} number(s), backup line {}",
                campaign.id,
                if backup { "set" } else { "NOT set" }
            )),
        }
        if numbers == 0 {
            report.warn(format!("campaign {} has no tracking number", campaign.id));
        }
    }
}
