//! The call flow: one state machine for every call, whichever switch it
//! came from.
//!
//! identify → screen → qualify (IVR) → auction → connect → settle
//!
//! It talks to the switch only through [`CallChannel`], so FreeSWITCH and
//! Asterisk calls run exactly this code. The caller may hang up at any
//! instant: every stage either returns the channel's `CallerGone` or races
//! the caller's presence, and whatever happened, the call ends in
//! [`finish`], which settles the money, writes the record (with the stage
//! reached) and releases the switch session. Nothing in here returns early
//! past that point.

pub mod connect;
pub mod ivr;
pub mod settle;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use self::connect::{ConnectResult, Taker};
use crate::auction::AuctionInput;
use crate::auction::eligibility::CallFacts;
use crate::catalog::NumberRoute;
use crate::catalog::dial::PromptName;
use crate::compliance::{consent, dnc};
use crate::config::UnknownNumberAction;
use crate::ledger::record::{CallRecord, Disposition, OptOut, SharingRecord, Stage, StageTimes};
use crate::metrics::{BidLabels, BuyerLabel, CallLabels, CampaignLabel, ReasonLabel};
use crate::money::Cents;
use crate::pbx::{CallChannel, ChannelError, HangupCause, LegStatus, Party};
use crate::phone::E164;
use crate::services::Services;

/// A call in progress: its record under construction and what later stages
/// need from earlier ones.
pub struct Call {
    pub record: CallRecord,
    pub route: Option<Arc<NumberRoute>>,
    pub facts: CallFacts,
    /// Consent to share the caller's number is on record.
    pub consent: bool,
    /// `require_consent` without consent, `without_consent = "static_only"`:
    /// no ping may leave the daemon.
    pub static_only: bool,
    /// A screening rule made the call unbillable (the rule's name).
    pub not_payable: Option<String>,
    /// Duplicate-caller rule: send straight to the backup line.
    pub straight_to_backup: bool,
    /// Duplicate-caller rule: the destination that had this caller before.
    pub prefer_destination: Option<String>,
}

impl Call {
    /// The consent record shares rely on (see [`consent::primary`]).
    fn consent_seq(&self) -> Option<u16> {
        if self.consent {
            consent::primary(&self.record.consents)
        } else {
            None
        }
    }

    /// Keeps the auction's ping rows for the sharing log.
    pub fn note_shared(&mut self, shared: Vec<SharingRecord>) {
        let consent_seq = self.consent_seq();
        self.record.sharing.extend(
            shared
                .into_iter()
                .map(|s| SharingRecord { consent_seq, ..s }),
        );
    }

    /// Every leg dialled presented the caller's ID to its destination: one
    /// sharing row each (attempts skipped before dialling shared nothing).
    fn note_bridges(&mut self) {
        let consent_seq = self.consent_seq();
        let rows: Vec<SharingRecord> = self
            .record
            .attempts
            .iter()
            .filter(|a| a.outcome.is_some())
            .map(|a| SharingRecord {
                channel: "bridge".into(),
                party_kind: if a.buyer_id.is_some() {
                    "buyer"
                } else {
                    "operator"
                }
                .into(),
                party_id: a.buyer_id.clone().unwrap_or_else(|| "backup".into()),
                destination_id: a.destination_id.clone(),
                fields: vec!["caller_id".into()],
                consent_seq,
                shared_at: a.started_at,
            })
            .collect();
        self.record.sharing.extend(rows);
    }
}

/// What the caller did at the consent prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsentAnswer {
    Given,
    NotGiven,
    OptOut,
}

/// Plays the campaign's consent prompt and waits for one key. The exact
/// prompt, the key and the time are recorded when the caller consents.
async fn ask_consent<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    services: &Services,
    prompt: &PromptName,
    key: char,
    opt_out_key: Option<char>,
) -> Result<ConsentAnswer, ChannelError> {
    use crate::pbx::{CollectOutcome, CollectRequest};
    call.record.stage_reached = call.record.stage_reached.max(Stage::Ivr);
    if !channel.info().answered {
        channel.answer().await?;
    }
    let request = CollectRequest {
        prompt: prompt.clone(),
        max_digits: 1,
        timeout: std::time::Duration::from_secs(5),
        terminator: None,
    };
    let pressed = match channel.collect(&request).await? {
        CollectOutcome::Digits(d) => d,
        CollectOutcome::Timeout { partial } => partial,
        CollectOutcome::PromptFailed { detail } => {
            services.metrics.prompt_failures.inc();
            tracing::error!(%detail, "OPERATOR ALERT: consent prompt could not be played");
            call.record.notes.push(format!(
                "consent prompt failed: {detail}; no consent recorded"
            ));
            return Ok(ConsentAnswer::NotGiven);
        }
    };
    let mut keys = pressed.chars();
    let first = keys.next();
    let single = keys.next().is_none();
    // The step shows in the IVR path like any node, an opt-out the same way.
    let answer = match first {
        None => "no_input".to_string(),
        Some(k) if single && Some(k) == opt_out_key => ivr::OPT_OUT_ANSWER.to_string(),
        Some(_) => pressed.clone(),
    };
    call.record.ivr_path.push(("consent".into(), answer));
    if !single {
        return Ok(ConsentAnswer::NotGiven);
    }
    if first.is_some() && first == opt_out_key {
        return Ok(ConsentAnswer::OptOut);
    }
    if first == Some(key) {
        call.record
            .consents
            .push(consent::ivr_record(prompt.as_str(), &pressed, Utc::now()));
        call.consent = true;
        return Ok(ConsentAnswer::Given);
    }
    Ok(ConsentAnswer::NotGiven)
}

/// The caller pressed the opt-out key: on the do-not-call list at once
/// (this node) and with the record (every node), a polite goodbye, done.
async fn opt_out<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    services: &Services,
    node: String,
) -> Ending {
    tracing::info!(node = %node, "caller opted out");
    call.record.opted_out = Some(OptOut {
        node,
        at: Utc::now(),
    });
    match &call.facts.caller {
        Some(caller) => services
            .catalog
            .add_do_not_call(caller, dnc::SOURCE_IVR_OPT_OUT),
        None => call
            .record
            .notes
            .push("opt-out from a caller without a number: nothing to list".into()),
    }
    call.record.disposition = Disposition::Rejected;
    call.record.payable_reason = "caller opted out (do not call)".into();
    let prompt = call
        .route
        .as_ref()
        .and_then(|r| r.campaign.opt_out_prompt.clone());
    if let Some(prompt) = prompt {
        match channel.play(&prompt).await {
            Ok(crate::pbx::PlayOutcome::Played) => {}
            Ok(crate::pbx::PlayOutcome::PromptFailed { detail }) => {
                services.metrics.prompt_failures.inc();
                call.record
                    .notes
                    .push(format!("opt-out prompt failed: {detail}"));
            }
            Err(e) => return e.into(),
        }
    }
    Ending::HangUp(HangupCause::NormalClearing)
}

/// How the flow left the call.
#[derive(Debug)]
enum Ending {
    /// We finish the call: hang up the caller with this cause (the caller
    /// may already be gone).
    HangUp(HangupCause),
    /// Give the call back to the dialplan (its failover path) untouched.
    HandBack,
    /// The caller left.
    CallerGone,
    /// The switch session broke; nothing more can be done.
    LostControl(String),
}

impl From<ChannelError> for Ending {
    fn from(e: ChannelError) -> Self {
        if e.is_caller_gone() {
            Ending::CallerGone
        } else {
            Ending::LostControl(e.to_string())
        }
    }
}

/// Runs one call from hand-over to record. Never panics on switch input;
/// always writes a record; always closes the channel.
pub async fn handle_call<C: CallChannel>(mut channel: C, services: Arc<Services>) {
    let call_id = Uuid::new_v4();
    let info = channel.info().clone();
    let span = tracing::info_span!("call", call_id = %call_id, pbx = info.pbx.as_str(), channel = %info.channel_id);
    async move {
        services.metrics.session_started();
        // One info line per call ("call settled"); the rest is debug, so a
        // busy switch does not cost several formatted stderr lines per call.
        tracing::debug!(caller = %info.caller_id_number, dialed = %info.dialed_number, "call arrived");
        let now = Utc::now();
        let caller = E164::normalize(&info.caller_id_number);
        let attestation = crate::attestation::from_variables(
            &info.variables,
            services.config.calls.trust_unverified_identity,
        );
        let mut call = Call {
            record: CallRecord {
                call_id,
                node_id: services.config.node.id.clone(),
                pbx: info.pbx,
                channel_id: info.channel_id.clone(),
                caller: caller.as_ref().map(|c| c.to_string()),
                caller_raw: info.caller_id_number.clone(),
                tracking_number: E164::normalize(&info.dialed_number)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| info.dialed_number.clone()),
                campaign_id: None,
                publisher_id: None,
                source: None,
                disposition: Disposition::Failed,
                stage_reached: Stage::Identify,
                times: StageTimes { arrived_at: now, ended_at: now, ..Default::default() },
                ivr_tags: BTreeMap::new(),
                ivr_path: Vec::new(),
                bids: Vec::new(),
                attempts: Vec::new(),
                winner: None,
                currency: "USD".to_string(),
                talk_ms: None,
                min_talk_secs: None,
                payable: false,
                payable_reason: "call did not reach a buyer".to_string(),
                revenue: Cents::ZERO,
                payout: Cents::ZERO,
                hangup_cause: None,
                hung_up_by: None,
                recording_path: None,
                auction_us: None,
                consents: Vec::new(),
                sharing: Vec::new(),
                opted_out: None,
                notes: Vec::new(),
                attestation: Some(attestation),
            },
            route: None,
            facts: CallFacts { caller, ..Default::default() },
            consent: false,
            static_only: false,
            not_payable: None,
            straight_to_backup: false,
            prefer_destination: None,
        };
        let (ending, connected) = run_stages(&mut channel, &mut call, &services).await;
        finish(&mut channel, &mut call, &services, ending, connected).await;
        let campaign = call.record.campaign_id.clone().unwrap_or_default();
        if let Some(route) = &call.route {
            services.metrics.calls_in_progress.get_or_create(&CampaignLabel { campaign: route.campaign.id.clone() }).dec();
        }
        services
            .metrics
            .calls
            .get_or_create(&CallLabels { campaign, disposition: call.record.disposition.as_str().into() })
            .inc();
        tracing::info!(
            dialed = %call.record.tracking_number,
            disposition = call.record.disposition.as_str(),
            stage = call.record.stage_reached.as_str(),
            auction_us = call.record.auction_us,
            bids = call.record.bids.len(),
            payable = call.record.payable,
            revenue = %call.record.revenue,
            "call settled"
        );
        if !services.records.submit(call.record).await {
            tracing::error!("call record could not be made durable (see the writer's alarms)");
        }
        channel.close().await;
        services.metrics.session_ended();
    }
    .instrument(span)
    .await
}

/// identify → screen → qualify → auction → connect. Returns how to end the
/// call and the connect stage's result (when it ran).
async fn run_stages<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    services: &Services,
) -> (Ending, Option<ConnectResult>) {
    // Identify.
    let Some(route) =
        E164::normalize(&channel.info().dialed_number).and_then(|n| services.catalog.route(&n))
    else {
        call.record.disposition = Disposition::UnknownNumber;
        call.record.payable_reason = "not a tracking number".into();
        tracing::warn!(dialed = %channel.info().dialed_number, action = ?services.config.calls.unknown_number, "call to a number that is not in the catalog");
        return match services.config.calls.unknown_number {
            UnknownNumberAction::Hangup => (Ending::HangUp(HangupCause::UnallocatedNumber), None),
            UnknownNumberAction::Failover => (Ending::HandBack, None),
        };
    };
    let campaign = route.campaign.clone();
    call.record.campaign_id = Some(campaign.id.clone());
    call.record.publisher_id = Some(route.publisher.id.clone());
    call.record.source = Some(route.source.clone());
    call.record.currency = campaign.currency.clone();
    call.route = Some(route.clone());
    // Consent evidence the publisher's side sent with the call.
    let captured = consent::capture(
        &channel.info().variables,
        &services.config.consent,
        Utc::now(),
    );
    call.record.notes.extend(captured.problems);
    call.record.consents.extend(captured.records);
    call.consent = !call.record.consents.is_empty();
    services
        .metrics
        .calls_in_progress
        .get_or_create(&CampaignLabel {
            campaign: campaign.id.clone(),
        })
        .inc();

    // Screen.
    call.record.stage_reached = Stage::Screen;
    if let Some(caller) = &call.facts.caller
        && let Some(reason) = services.catalog.blocked(caller)
    {
        tracing::info!(reason = %reason, "caller is on the blocklist");
        call.record.disposition = Disposition::Rejected;
        call.record.payable_reason = format!("caller blocked: {reason}");
        return (Ending::HangUp(HangupCause::CallRejected), None);
    }
    // Do-not-call: refused here, before the IVR, like the blocklist, so no
    // buyer (and no backup) ever learns of the call.
    if let Some(caller) = &call.facts.caller
        && let Some(source) = services.catalog.do_not_call(caller)
    {
        tracing::info!(source = %source, "caller is on the do-not-call list");
        call.record.disposition = Disposition::Rejected;
        call.record.payable_reason = format!("caller on the do-not-call list ({source})");
        return (Ending::HangUp(HangupCause::CallRejected), None);
    }

    // STIR/SHAKEN: below the campaign's level, no buyer gets this caller
    // (backup) or no buyer pays for it (not_payable).
    if let Some(required) = campaign.require_attestation {
        use crate::attestation::{Attestation, UnattestedAction};
        let attestation = call.record.attestation.unwrap_or(Attestation::None);
        if !attestation.meets(required) {
            let why = format!(
                "STIR/SHAKEN attestation {} below the campaign's required {}",
                attestation.as_str(),
                required.as_str()
            );
            tracing::info!(attestation = attestation.as_str(), required = required.as_str(), action = ?campaign.unattested, "caller below the required attestation");
            match campaign.unattested {
                UnattestedAction::Backup => {
                    call.record
                        .notes
                        .push(format!("{why}: sent to the backup line, no buyer pinged"));
                    call.straight_to_backup = true;
                }
                UnattestedAction::NotPayable => {
                    call.record.notes.push(format!("{why}: not payable"));
                    call.not_payable = Some(why);
                }
            }
        }
    }

    if let (Some(rule), Some(caller)) = (&campaign.duplicate, &call.facts.caller)
        && let Some(previous) = services
            .recent
            .previous(
                &campaign.id,
                caller.as_str(),
                std::time::Duration::from_secs(u64::from(rule.window_secs)),
            )
            .await
    {
        use crate::catalog::spec::DuplicateAction;
        tracing::info!(previous_at = %previous.at, action = ?rule.action, "duplicate caller");
        call.record.notes.push(format!(
            "duplicate caller (previous call {}, {}): {:?}",
            previous.at.format("%Y-%m-%d %H:%M:%S UTC"),
            previous.destination.as_deref().unwrap_or("no buyer"),
            rule.action
        ));
        match rule.action {
            DuplicateAction::Backup => call.straight_to_backup = true,
            DuplicateAction::NotPayable => {
                call.not_payable = Some("duplicate caller within the campaign's window".into())
            }
            DuplicateAction::RoutePrevious => call.prefer_destination = previous.destination,
        }
    }

    // Qualify.
    if let Some(ivr) = &campaign.ivr {
        call.record.stage_reached = Stage::Ivr;
        if !channel.info().answered
            && let Err(e) = channel.answer().await
        {
            return (e.into(), None);
        }
        let walked = ivr::walk(channel, ivr, campaign.opt_out_key, &services.metrics).await;
        let (result, error) = match walked {
            Ok(result) => (result, None),
            Err((e, partial)) => (partial, Some(e)),
        };
        call.record.ivr_tags = result.tags;
        call.record.ivr_path = result.path;
        call.record.notes.extend(result.notes);
        if let Some(e) = error {
            return (e.into(), None);
        }
        if let Some(node) = result.opted_out {
            return (opt_out(channel, call, services, node).await, None);
        }
        call.record.times.ivr_done_at = Some(Utc::now());
    }

    // The IVR consent step, unless the publisher already sent evidence.
    if let Some((prompt, key)) = &campaign.consent_step
        && !call.consent
    {
        match ask_consent(channel, call, services, prompt, *key, campaign.opt_out_key).await {
            Ok(ConsentAnswer::OptOut) => {
                return (
                    opt_out(channel, call, services, "consent".into()).await,
                    None,
                );
            }
            Ok(ConsentAnswer::Given | ConsentAnswer::NotGiven) => {}
            Err(e) => return (e.into(), None),
        }
    }
    if campaign.require_consent && !call.consent {
        use crate::catalog::spec::WithoutConsent;
        match campaign.without_consent {
            WithoutConsent::Backup => {
                call.record
                    .notes
                    .push("no consent on record: no pings, straight to the backup line".into());
                call.straight_to_backup = true;
            }
            WithoutConsent::StaticOnly => {
                call.record
                    .notes
                    .push("no consent on record: static-price destinations only".into());
                call.static_only = true;
            }
        }
    }
    call.facts = CallFacts::derive(
        call.facts.caller.as_ref(),
        &call.record.ivr_tags,
        &route.source,
        Utc::now(),
    );

    // Auction, raced against the caller leaving.
    call.record.stage_reached = Stage::Auction;
    if call.straight_to_backup {
        // No buyer will get this caller: do not share their data in pings.
        call.record.stage_reached = Stage::Connect;
        let result = match connect::connect(channel, call, Vec::new(), services).await {
            Ok(result) => result,
            Err(e) => return (e.into(), None),
        };
        let ending = if result.caller_gone() || channel.presence().is_gone() {
            Ending::CallerGone
        } else {
            Ending::HangUp(match &result.answered {
                Some(_) => HangupCause::NormalClearing,
                None => {
                    HangupCause::after_failed_leg(result.last_failure.unwrap_or(LegStatus::Failed))
                }
            })
        };
        return (ending, Some(result));
    }
    let call_id = call.record.call_id.to_string();
    let exclude = HashSet::new();
    let input = AuctionInput {
        call_id: &call_id,
        route: &route,
        facts: &call.facts,
        now: Utc::now(),
        exclude: &exclude,
        consent: call.consent,
        static_only: call.static_only,
        test: false,
    };
    let mut presence = channel.presence();
    let gate = services.gate();
    let outcome = tokio::select! {
        outcome = services.auctioneer.run(&input, &gate, services.scorer.as_ref()) => outcome,
        _ = presence.gone() => {
            tracing::info!("caller hung up during the auction");
            call.record.notes.push("auction cancelled: the caller hung up".into());
            return (Ending::CallerGone, None);
        }
    };
    record_auction_metrics(services, &campaign.id, &outcome);
    call.record.auction_us = Some(outcome.took.as_micros() as u64);
    call.record.times.auction_closed_at = Some(Utc::now());
    tracing::debug!(
        took_us = outcome.took.as_micros() as u64,
        pinged = outcome.pinged,
        offers = outcome.offers.len(),
        "auction closed"
    );
    call.record.bids = outcome.bids;
    call.note_shared(outcome.shared);
    let mut offers = outcome.offers;
    if let Some(previous) = &call.prefer_destination {
        // The buyer who had this caller before goes first, if it bid.
        if let Some(at) = offers.iter().position(|o| &o.destination.id == previous) {
            let preferred = offers.remove(at);
            offers.insert(0, preferred);
        } else {
            call.record.notes.push(format!(
                "previous buyer's destination {previous} did not bid; routed normally"
            ));
        }
    }

    // Connect.
    call.record.stage_reached = Stage::Connect;
    let result = match connect::connect(channel, call, offers, services).await {
        Ok(result) => result,
        Err(e) => return (e.into(), None),
    };
    if result.answered.is_some() {
        call.record.stage_reached = Stage::Bridged;
    }
    let ending = if result.caller_gone() || channel.presence().is_gone() {
        Ending::CallerGone
    } else if result.answered.is_some() {
        Ending::HangUp(HangupCause::NormalClearing)
    } else {
        // Nobody took the call: tell the caller, then end with the last
        // leg's real cause.
        let sorry = PromptName::new(&services.config.calls.sorry_prompt).ok();
        if let Some(sorry) = sorry {
            let played = async {
                if !channel.info().answered {
                    channel.answer().await?;
                }
                channel.play(&sorry).await
            }
            .await;
            if let Err(e) = played
                && e.ends_call_control()
            {
                return (e.into(), Some(result));
            }
        }
        Ending::HangUp(HangupCause::after_failed_leg(
            result.last_failure.unwrap_or(LegStatus::Failed),
        ))
    };
    (ending, Some(result))
}

fn record_auction_metrics(
    services: &Services,
    campaign: &str,
    outcome: &crate::auction::AuctionOutcome,
) {
    let m = &services.metrics;
    m.auctions
        .get_or_create(&CampaignLabel {
            campaign: campaign.to_string(),
        })
        .inc();
    m.auction_seconds.observe(outcome.took.as_secs_f64());
    for (reason, count) in &outcome.ineligible {
        m.ineligible
            .get_or_create(&ReasonLabel {
                reason: (*reason).to_string(),
            })
            .inc_by(*count as u64);
    }
    for bid in &outcome.bids {
        if bid.status == crate::ledger::record::BidStatus::Ineligible {
            continue;
        }
        m.bids
            .get_or_create(&BidLabels {
                buyer: bid.buyer_id.clone(),
                status: bid.status.as_str().into(),
            })
            .inc();
        if let Some(us) = bid.latency_us {
            m.bid_latency_seconds
                .get_or_create(&BuyerLabel {
                    buyer: bid.buyer_id.clone(),
                })
                .observe(us as f64 / 1e6);
        }
    }
}

/// Ends the call on the switch and completes the record.
async fn finish<C: CallChannel>(
    channel: &mut C,
    call: &mut Call,
    services: &Services,
    ending: Ending,
    connected: Option<ConnectResult>,
) {
    if let Err(e) = channel.disarm_failsafe().await {
        tracing::debug!(error = %e, "disarming the failsafe");
    }
    match &ending {
        Ending::HangUp(cause) => {
            if let Err(e) = channel.mark_settled().await {
                tracing::debug!(error = %e, "marking the call settled");
            }
            let caller_already_gone = channel.presence().is_gone();
            if !caller_already_gone {
                if let Err(e) = channel.hangup(*cause).await {
                    tracing::warn!(error = %e, "hanging up the caller");
                }
                call.record.hangup_cause = Some(cause.name().to_string());
                call.record.hung_up_by =
                    Some(match connected.as_ref().and_then(|c| c.answered.as_ref()) {
                        Some((_, outcome)) if outcome.ended_by == Some(Party::Buyer) => {
                            Party::Buyer
                        }
                        _ => Party::Daemon,
                    });
            } else {
                call.record.hangup_cause = Some("NORMAL_CLEARING".into());
                call.record.hung_up_by = Some(Party::Caller);
            }
        }
        Ending::HandBack => {
            call.record
                .notes
                .push("handed back to the dialplan's failover path".into());
            call.record.hung_up_by = None;
        }
        Ending::CallerGone => {
            // The dialplan must not dial the backup for a caller who left.
            if let Err(e) = channel.mark_settled().await {
                tracing::debug!(error = %e, "marking the call settled after hang-up");
            }
            call.record.hangup_cause = Some("NORMAL_CLEARING".into());
            call.record.hung_up_by = Some(Party::Caller);
            if call.record.stage_reached < Stage::Bridged {
                tracing::info!(stage = call.record.stage_reached.as_str(), "caller hung up");
            }
        }
        Ending::LostControl(why) => {
            tracing::error!(why = %why, "lost control of the call; the switch's failover path takes over");
            call.record
                .notes
                .push(format!("lost control of the call: {why}"));
            call.record.hung_up_by = Some(Party::Switch);
        }
    }
    call.record.times.ended_at = Utc::now();
    call.note_bridges();

    // Settle the money.
    if let (Some(route), Some(result)) = (&call.route, connected.as_ref()) {
        let settlement = settle::settle(result, route, call.not_payable.as_deref());
        call.record.disposition = settlement.disposition;
        call.record.winner = settlement.winner;
        call.record.talk_ms = settlement.talk_ms;
        call.record.min_talk_secs = settlement.min_talk_secs;
        call.record.payable = settlement.payable;
        call.record.payable_reason = settlement.payable_reason;
        call.record.revenue = settlement.revenue;
        call.record.payout = settlement.payout;
        if let Some((Taker::Buyer(_), _)) | Some((Taker::Backup, _)) = &result.answered {
            call.record.stage_reached = Stage::Settled;
        }
        if call.record.payable {
            let label = CampaignLabel {
                campaign: route.campaign.id.clone(),
            };
            services.metrics.payable_calls.get_or_create(&label).inc();
            services
                .metrics
                .revenue_cents
                .get_or_create(&label)
                .inc_by(call.record.revenue.0.max(0) as u64);
        }
    } else if call.record.disposition == Disposition::Failed {
        call.record.disposition = match &ending {
            Ending::CallerGone => Disposition::Abandoned,
            _ => Disposition::Failed,
        };
        if matches!(ending, Ending::CallerGone) {
            call.record.payable_reason = format!(
                "caller hung up during {}",
                call.record.stage_reached.as_str()
            );
        }
    }
    // A caller a buyer took counts for the campaign's duplicate rule.
    if let (Some(campaign), Some(caller), Some(winner)) = (
        &call.record.campaign_id,
        &call.record.caller,
        &call.record.winner,
    ) {
        services.recent.remember(
            campaign,
            caller,
            Some(winner.destination_id.clone()),
            call.record.times.arrived_at,
        );
    }
}
