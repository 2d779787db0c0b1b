//! The daemon against recorded FreeSWITCH 1.10 sessions
//! (`../shared/fixtures/esl/`), byte for byte.
//!
//! A `MockConnection` (freeswitch-esl-tokio's scripted peer) connects to
//! the daemon's ESL port like FreeSWITCH's `socket` application and sends
//! the recorded frames verbatim. The daemon must send the commands the
//! real switch accepted, in the recorded order; each recorded command
//! releases the frames FreeSWITCH sent after it. The only rewrite is the
//! `Application-UUID` echo, mapped from the recorder's `Event-UUID` to the
//! daemon's own (same length, so frames keep their byte counts).
//!
//! The recorder set channel variables with the `set` application; the
//! daemon sets them with `api uuid_setvar` (no CHANNEL_EXECUTE pair to
//! parse). A recorded `set name=value` is matched by the daemon's
//! `uuid_setvar <the channel's uuid> name value`, answered with the
//! api's `+OK`, and the set's execute events are not delivered (the switch
//! sends none for an api).
//!
//! Commands the daemon sends that the recorder did not (it is a fuller
//! client: `resume`, the failsafe `api sched_transfer`/`sched_del`, its
//! own variables) are answered as FreeSWITCH answers them. Commands
//! the recorder sent that a correct daemon must not (02: a `sendmsg` after
//! the caller hung up; 04a: `event plain ALL`) are skipped, and their
//! events delivered anyway.
//!
//! Then the call record in PostgreSQL must read every outcome right.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bidbridge::config::SessionEventFormat;
use common::esl::{Record, Transcript, app_of, command_header, event_field, verb};
use common::{TestDb, eventually, test_config};
use freeswitch_esl_tokio::mock::MockConnection;
use tokio::net::TcpStream;

/// Campaign and buyers that make the daemon issue the recorded commands:
/// prompts in /opt/freeswitch/share/sounds/prompts, the greeting, one menu,
/// and three buyers ranked no-answer, busy, answer (static prices).
fn catalog(endpoints: [&str; 3], ring_timeouts: [u32; 3], with_ivr_menu: bool) -> String {
    let dial = |e: &str| {
        if let Some(uri) = e.strip_prefix("sofia/harness/") {
            format!("{{ sip = \"{uri}\" }}")
        } else {
            let mut parts = e.trim_start_matches("loopback/").split('/');
            format!(
                "{{ extension = \"{}\", context = \"{}\" }}",
                parts.next().unwrap(),
                parts.next().unwrap()
            )
        }
    };
    let menu = if with_ivr_menu {
        r#"
[[campaigns.ivr.nodes]]
id = "product"
prompt = "welcome"
invalid_prompt = "invalid"
options = { "1" = { tag = "product=auto" }, "2" = { tag = "product=home" } }
"#
    } else {
        r#"
[[campaigns.ivr.nodes]]
id = "product"
prompt = "welcome"
options = { "1" = { tag = "product=auto" } }
"#
    };
    let mut text = format!(
        r#"
[[publishers]]
id = "pub"
name = "Publisher"

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"
min_talk_secs = 5

[campaigns.ivr]
greeting = "{greeting}"
start = "product"
{menu}
[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"
"#,
        greeting = if with_ivr_menu { "greeting" } else { "welcome" },
    );
    for (i, (endpoint, timeout)) in endpoints.iter().zip(ring_timeouts).enumerate() {
        let price = ["15.00", "12.00", "10.00"][i];
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"b{i}\"\nname = \"Buyer {i}\"\n\n[[buyers.destinations]]\nid = \"d{i}\"\ncampaigns = [\"auto\"]\nstatic_price = \"{price}\"\ndial = {}\nring_timeout_secs = {timeout}\n",
            dial(endpoint)
        ));
    }
    text
}

/// `CHANNEL_EXECUTE` or `CHANNEL_EXECUTE_COMPLETE` when `frame` is one of
/// a `set` application's events.
fn set_event(frame: &str) -> Option<&'static str> {
    if event_field(frame, "Application").as_deref() != Some("set") {
        return None;
    }
    match event_field(frame, "Event-Name").as_deref() {
        Some("CHANNEL_EXECUTE") => Some("CHANNEL_EXECUTE"),
        Some("CHANNEL_EXECUTE_COMPLETE") => Some("CHANNEL_EXECUTE_COMPLETE"),
        _ => None,
    }
}

fn is_hangup(frame: &str) -> bool {
    event_field(frame, "Event-Name").as_deref() == Some("CHANNEL_HANGUP")
}

/// mod_commands' answer to an `api uuid_setvar` that set the variable.
const API_OK: &str = "Content-Type: api/response\nContent-Length: 4\n\n+OK\n";

/// How the peer answers a command the recording does not have.
fn synthesized_reply(command: &str, hung_up: bool, last_set_complete: Option<&str>) -> Vec<String> {
    match verb(command) {
        "resume" => vec!["Content-Type: command/reply\nReply-Text: +OK\n\n".into()],
        // mod_event_socket.c's reply to a nixevent naming at least one event.
        "nixevent" => vec!["Content-Type: command/reply\nReply-Text: +OK events nixed\n\n".into()],
        "api" => vec![API_OK.into()],
        "sendmsg" => {
            let mut frames = vec!["Content-Type: command/reply\nReply-Text: +OK\n\n".to_string()];
            // A live channel runs the app and reports its completion, built
            // from the recorded completion of a `set`.
            if !hung_up
                && let (Some(template), Some(id)) =
                    (last_set_complete, command_header(command, "Event-UUID"))
                && let Some(old) = event_field(template, "Application-UUID")
            {
                frames.push(template.replace(&old, id));
            }
            frames
        }
        other => panic!(
            "daemon sent `{other}`, which neither the recording nor FreeSWITCH's usual answers cover:\n{command}"
        ),
    }
}

/// `(name, value)` of a recorded `set` application.
fn recorded_set(recorded: &str) -> Option<(&str, &str)> {
    if verb(recorded) != "sendmsg" || app_of(recorded).as_deref() != Some("set") {
        return None;
    }
    command_header(recorded, "execute-app-arg")?.split_once('=')
}

/// `(uuid, name, value)` of the daemon's `api uuid_setvar`.
fn daemon_setvar(daemon: &str) -> Option<(&str, &str, &str)> {
    let line = daemon.lines().next()?.strip_prefix("api uuid_setvar ")?;
    let mut words = line.splitn(3, ' ');
    Some((
        words.next()?,
        words.next()?,
        words.next().unwrap_or_default(),
    ))
}

/// Does the daemon's `uuid_setvar` on `channel` set what the recorded `set` did?
fn same_variable_set(daemon: &str, recorded: &str, channel: &str) -> bool {
    match (daemon_setvar(daemon), recorded_set(recorded)) {
        (Some((uuid, name, value)), Some((want_name, want_value))) => {
            uuid == channel && name == want_name && value == want_value
        }
        _ => false,
    }
}

/// Is the daemon's command the recorded one (same verb; for sendmsg the
/// same application and, for bridges, the same endpoint and ring timeout)?
fn same_command(daemon: &str, recorded: &str) -> bool {
    if verb(daemon) != verb(recorded) {
        return false;
    }
    if verb(daemon) == "myevents" {
        // The same serialisation: `myevents` alone is plain.
        let format = |c: &str| {
            c.lines()
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or("plain")
                .to_string()
        };
        return format(daemon) == format(recorded);
    }
    if verb(daemon) != "sendmsg" {
        return true;
    }
    if app_of(daemon) != app_of(recorded) {
        return false;
    }
    match app_of(daemon).as_deref() {
        Some("bridge") => {
            let arg = |c: &str| {
                command_header(c, "execute-app-arg")
                    .unwrap_or_default()
                    .to_string()
            };
            let endpoint = |a: &str| a.rsplit('}').next().unwrap_or_default().to_string();
            let (d, r) = (arg(daemon), arg(recorded));
            let timeout_ok = match r.find("originate_timeout=") {
                Some(at) => {
                    let want: String = r[at..]
                        .chars()
                        .take_while(|c| *c != '}' && *c != ',')
                        .collect();
                    d.contains(&want)
                }
                None => true,
            };
            endpoint(&d) == endpoint(&r) && timeout_ok
        }
        Some("set") => {
            command_header(daemon, "execute-app-arg") == command_header(recorded, "execute-app-arg")
        }
        Some("playback") => {
            command_header(daemon, "execute-app-arg") == command_header(recorded, "execute-app-arg")
        }
        Some("play_and_get_digits") => {
            // Same prompt file; the daemon asks for one try at a time.
            let file = |c: &str| {
                command_header(c, "execute-app-arg")
                    .and_then(|a| a.split(' ').nth(5).map(str::to_string))
            };
            file(daemon) == file(recorded)
        }
        _ => true,
    }
}

struct Replay {
    /// Recorded SEND index → the frames FreeSWITCH sent after it.
    steps: Vec<(String, Vec<String>)>,
    /// The controlled channel (`Unique-ID` of the connect reply).
    channel: String,
}

impl Replay {
    fn new(transcript: &Transcript) -> Replay {
        let mut steps: Vec<(String, Vec<String>)> = Vec::new();
        for record in &transcript.records {
            match record {
                Record::Send { bytes, .. } => {
                    steps.push((String::from_utf8_lossy(bytes).to_string(), Vec::new()))
                }
                Record::Recv { bytes, .. } => {
                    if let Some(last) = steps.last_mut() {
                        last.1.push(String::from_utf8_lossy(bytes).to_string());
                    }
                }
                Record::Eof => {}
            }
        }
        let channel = steps
            .first()
            .and_then(|(_, frames)| frames.first())
            .and_then(|reply| common::esl::header(reply, "Unique-ID"))
            .expect("the connect reply names the channel")
            .to_string();
        Replay { steps, channel }
    }
}

/// Plays `transcript` against the daemon at `esl`. Returns the daemon's
/// commands in order.
async fn replay(esl: std::net::SocketAddr, transcript: &Transcript) -> Vec<String> {
    let stream = TcpStream::connect(esl)
        .await
        .expect("connect to the daemon");
    let mut switch = MockConnection::from_stream(stream);
    let replay = Replay::new(transcript);
    let mut uuids: HashMap<String, String> = HashMap::new();
    let mut sent_by_daemon = Vec::new();
    let mut hung_up = false;
    let mut last_set_complete: Option<String> = None;
    let mut step = 0;

    // Events the daemon nixed: the switch stops sending them, so the replay
    // drops them too (mod_event_socket clears their entry in the listener's
    // event list; frames that are not events are never affected).
    let mut nixed: HashSet<String> = HashSet::new();
    let deliver = |frames: &[String],
                   uuids: &HashMap<String, String>,
                   nixed: &HashSet<String>,
                   skip_replies: bool|
     -> Vec<String> {
        frames
            .iter()
            .filter(|f| !(skip_replies && f.starts_with("Content-Type: command/reply")))
            .filter(|f| !event_field(f, "Event-Name").is_some_and(|name| nixed.contains(&name)))
            .map(|f| {
                let mut f = f.clone();
                for (recorded, ours) in uuids {
                    f = f.replace(recorded.as_str(), ours.as_str());
                }
                f
            })
            .collect()
    };

    loop {
        let command =
            match tokio::time::timeout(Duration::from_millis(1500), switch.read_command()).await {
                Ok(Ok(c)) => c,
                Ok(Err(_)) => break, // the daemon closed the session
                Err(_) => {
                    // The daemon waits on the switch. After a hang-up the recorder
                    // sent commands a correct daemon does not: skip them, deliver
                    // what the switch sent after them.
                    assert!(
                        hung_up,
                        "daemon idle before the caller hung up; at recorded step {step}: {:?}",
                        replay.steps.get(step).map(|s| &s.0)
                    );
                    let Some((recorded, frames)) = replay.steps.get(step) else {
                        break;
                    };
                    assert_ne!(verb(recorded), "exit", "daemon never sent exit");
                    for f in deliver(frames, &uuids, &nixed, true) {
                        switch.send_raw(&f).await.unwrap();
                    }
                    step += 1;
                    continue;
                }
            };
        sent_by_daemon.push(command.clone());
        if let Some(names) = command
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("nixevent "))
        {
            nixed.extend(names.split_whitespace().map(str::to_string));
        }
        // Optional recorded subscriptions the daemon does not need.
        while let Some((recorded, frames)) = replay.steps.get(step)
            && verb(recorded) == "event"
            && verb(&command) != "event"
        {
            let _ = frames;
            step += 1;
        }
        let by_api = replay
            .steps
            .get(step)
            .is_some_and(|(recorded, _)| same_variable_set(&command, recorded, &replay.channel));
        if by_api {
            let (_, frames) = &replay.steps[step];
            switch.send_raw(API_OK).await.unwrap();
            for f in deliver(frames, &uuids, &nixed, true) {
                match set_event(&f) {
                    Some("CHANNEL_EXECUTE_COMPLETE") => last_set_complete = Some(f),
                    Some(_) => {}
                    None => {
                        hung_up |= is_hangup(&f);
                        switch.send_raw(&f).await.unwrap();
                    }
                }
            }
            step += 1;
            continue;
        }
        let matches = replay
            .steps
            .get(step)
            .is_some_and(|(recorded, _)| same_command(&command, recorded));
        if matches {
            let (recorded, frames) = &replay.steps[step];
            if let (Some(theirs), Some(ours)) = (
                command_header(recorded, "Event-UUID"),
                command_header(&command, "Event-UUID"),
            ) {
                uuids.insert(theirs.to_string(), ours.to_string());
            }
            for f in deliver(frames, &uuids, &nixed, false) {
                hung_up |= is_hangup(&f);
                if set_event(&f) == Some("CHANNEL_EXECUTE_COMPLETE") {
                    last_set_complete = Some(f.clone());
                }
                switch.send_raw(&f).await.unwrap();
            }
            step += 1;
            if verb(&command) == "exit" {
                break;
            }
            continue;
        }
        // Not the recorded command: must be one FreeSWITCH answers plainly.
        if verb(&command) == "exit" {
            // The daemon ends after a hang-up the recorder answered later.
            assert!(hung_up, "daemon sent exit at recorded step {step}");
            switch
                .send_raw("Content-Type: command/reply\nReply-Text: +OK bye\n\n")
                .await
                .unwrap();
            break;
        }
        for f in synthesized_reply(&command, hung_up, last_set_complete.as_deref()) {
            switch.send_raw(&f).await.unwrap();
        }
    }
    switch.drop_connection().await;
    sent_by_daemon
}

struct Daemon {
    db: TestDb,
    running: bidbridge::server::Running,
    _journal: tempfile::TempDir,
}

/// The event serialisation the recording asked for (`myevents` alone is
/// plain): the daemon is configured to ask for the same.
fn recorded_event_format(transcript: &Transcript) -> SessionEventFormat {
    let json = transcript.records.iter().any(|r| match r {
        Record::Send { bytes, .. } => bytes.starts_with(b"myevents json"),
        _ => false,
    });
    if json {
        SessionEventFormat::Json
    } else {
        SessionEventFormat::Plain
    }
}

/// A daemon with `catalog_toml`, asking for events as `transcript` did.
async fn daemon(catalog_toml: &str, transcript: &Transcript) -> Daemon {
    let db = TestDb::migrated().await;
    db.apply_catalog(catalog_toml).await;
    let journal = tempfile::tempdir().unwrap();
    let mut config = test_config(&db, journal.path());
    config.freeswitch.event_format = recorded_event_format(transcript);
    let running = bidbridge::server::start(config)
        .await
        .expect("daemon starts");
    let catalog = running.services.catalog.clone();
    assert!(eventually(Duration::from_secs(10), || async { catalog.is_loaded() }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Daemon {
        db,
        running,
        _journal: journal,
    }
}

/// The call's record, once written.
async fn record(db: &TestDb) -> tokio_postgres::Row {
    let client = db.client().await;
    for _ in 0..100 {
        if let Ok(row) = client.query_one("SELECT * FROM calls", &[]).await {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no call record written");
}

async fn attempts(db: &TestDb) -> Vec<(String, String, i64, Option<i64>, Option<String>)> {
    let client = db.client().await;
    client
        .query("SELECT destination_id, outcome, ring_ms, talk_ms, cause FROM bridge_attempts ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn apps(commands: &[String]) -> Vec<String> {
    commands.iter().filter_map(|c| app_of(c)).collect()
}

async fn check_failover_call(name: &str, endpoints: [&str; 3]) {
    let transcript = Transcript::load(name);
    let d = daemon(&catalog(endpoints, [3, 20, 20], true), &transcript).await;
    let commands = replay(d.running.esl_addr.unwrap(), &transcript).await;
    let apps = apps(&commands);
    // The recorded sequence, in order (with the daemon's own sets between).
    let recorded = [
        "answer",
        "playback",
        "play_and_get_digits",
        "bridge",
        "bridge",
        "bridge",
        "hangup",
    ];
    let mut at = 0;
    for app in &apps {
        if at < recorded.len() && app == recorded[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        recorded.len(),
        "daemon's applications {apps:?} do not contain the recorded order {recorded:?}"
    );
    assert_eq!(verb(commands.last().unwrap()), "exit");
    // The times below come without CHANNEL_UNBRIDGE and
    // CHANNEL_HANGUP_COMPLETE: the daemon nixes them and the replay, like
    // the switch, stops sending them.
    let nixevent = commands
        .iter()
        .find(|c| verb(c) == "nixevent")
        .expect("daemon nixes unused events");
    for name in ["CHANNEL_UNBRIDGE", "CHANNEL_HANGUP_COMPLETE"] {
        assert!(nixevent.split_whitespace().any(|w| w == name), "{nixevent}");
    }
    // The recording's two `set`s, as api calls, before the first bridge.
    let first_bridge = commands
        .iter()
        .position(|c| app_of(c).as_deref() == Some("bridge"))
        .unwrap();
    let set_before_bridge: Vec<(&str, &str)> = commands[..first_bridge]
        .iter()
        .filter_map(|c| daemon_setvar(c).map(|(_, name, value)| (name, value)))
        .collect();
    for wanted in [
        ("continue_on_fail", "true"),
        ("hangup_after_bridge", "false"),
    ] {
        assert!(
            set_before_bridge.contains(&wanted),
            "{wanted:?} not set before the bridge: {set_before_bridge:?}"
        );
    }

    let call = record(&d.db).await;
    assert_eq!(call.get::<_, String>("disposition"), "sold");
    assert_eq!(
        call.get::<_, serde_json::Value>("ivr_tags"),
        serde_json::json!({"product": "auto"})
    );
    assert_eq!(
        call.get::<_, Option<String>>("winner_destination_id")
            .as_deref(),
        Some("d2")
    );
    assert!(
        call.get::<_, bool>("payable"),
        "{:?}",
        call.get::<_, String>("payable_reason")
    );
    assert_eq!(call.get::<_, Option<i64>>("revenue_cents"), Some(1000));
    let talk: i64 = call.get::<_, Option<i64>>("talk_ms").unwrap();
    assert!(
        (5000..5100).contains(&talk),
        "talk {talk} ms (switch timestamps say ~5.02 s)"
    );

    let attempts = attempts(&d.db).await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(
        (attempts[0].0.as_str(), attempts[0].1.as_str()),
        ("d0", "no_answer")
    );
    assert!(
        (1900..3000).contains(&attempts[0].2),
        "no-answer rang {} ms",
        attempts[0].2
    );
    assert_eq!(attempts[0].4.as_deref(), Some("NO_ANSWER"));
    assert_eq!(
        (attempts[1].0.as_str(), attempts[1].1.as_str()),
        ("d1", "busy")
    );
    assert_eq!(attempts[1].4.as_deref(), Some("USER_BUSY"));
    assert_eq!(
        (attempts[2].0.as_str(), attempts[2].1.as_str()),
        ("d2", "answered")
    );
    assert_eq!(attempts[2].3, Some(talk));
    d.running.shutdown();
}

#[tokio::test]
async fn transcript_01_no_answer_busy_answered_over_loopback_legs() {
    check_failover_call(
        "01_outbound_ivr_bridge_failover.esl",
        [
            "loopback/buyer_noanswer/default",
            "loopback/buyer_busy/default",
            "loopback/buyer_answer/default",
        ],
    )
    .await;
}

#[tokio::test]
async fn transcript_06_no_answer_busy_answered_over_sip_buyers() {
    check_failover_call(
        "06_outbound_ivr_bridge_failover_sip_buyers.esl",
        [
            "sofia/harness/sip:buyer-noanswer@127.0.0.1:5092",
            "sofia/harness/sip:buyer-busy@127.0.0.1:5091",
            "sofia/harness/sip:buyer-answer@127.0.0.1:5090",
        ],
    )
    .await;
}

#[tokio::test]
async fn transcript_04a_same_call_with_every_event_subscribed() {
    check_failover_call(
        "04a_outbound_ivr_bridge_failover_plain_all.esl",
        [
            "loopback/buyer_noanswer/default",
            "loopback/buyer_busy/default",
            "loopback/buyer_answer/default",
        ],
    )
    .await;
}

#[tokio::test]
async fn transcript_04b_same_call_with_json_events() {
    check_failover_call(
        "04b_outbound_ivr_bridge_failover_json_all.esl",
        [
            "loopback/buyer_noanswer/default",
            "loopback/buyer_busy/default",
            "loopback/buyer_answer/default",
        ],
    )
    .await;
}

#[tokio::test]
async fn transcript_02_caller_hangs_up_during_the_greeting() {
    let transcript = Transcript::load("02_outbound_caller_hangup_during_ivr.esl");
    let d = daemon(
        &catalog(
            [
                "loopback/a/default",
                "loopback/b/default",
                "loopback/c/default",
            ],
            [20, 20, 20],
            false,
        ),
        &transcript,
    )
    .await;
    let commands = replay(d.running.esl_addr.unwrap(), &transcript).await;
    // Nothing after the hang-up but the goodbye: no collect, no bridge.
    assert_eq!(apps(&commands), vec!["answer", "playback"], "{commands:?}");
    let call = record(&d.db).await;
    assert_eq!(call.get::<_, String>("disposition"), "abandoned");
    assert_eq!(call.get::<_, String>("stage_reached"), "ivr");
    assert_eq!(
        call.get::<_, Option<String>>("hung_up_by").as_deref(),
        Some("caller")
    );
    assert!(attempts(&d.db).await.is_empty());
    d.running.shutdown();
}

#[tokio::test]
async fn transcript_03_caller_hangs_up_while_the_buyer_rings() {
    // 03 has no menu: greeting, then straight to the bridge.
    let transcript = Transcript::load("03_outbound_caller_hangup_bridge_ringing.esl");
    let d = daemon(&greeting_only_catalog(), &transcript).await;
    let commands = replay(d.running.esl_addr.unwrap(), &transcript).await;
    assert_eq!(
        apps(&commands).iter().filter(|a| *a == "bridge").count(),
        1,
        "{commands:?}"
    );
    let call = record(&d.db).await;
    assert_eq!(call.get::<_, String>("disposition"), "abandoned");
    assert_eq!(call.get::<_, String>("stage_reached"), "connect");
    let attempts = attempts(&d.db).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].1, "caller_gone");
    assert_eq!(attempts[0].4.as_deref(), Some("ORIGINATOR_CANCEL"));
    assert!(
        (4000..5000).contains(&attempts[0].2),
        "rang {} ms before the caller left",
        attempts[0].2
    );
    d.running.shutdown();
}

/// A campaign whose IVR is only a greeting (the recording in 03 plays one
/// prompt and bridges).
fn greeting_only_catalog() -> String {
    r#"
[[publishers]]
id = "pub"
name = "Publisher"

[[campaigns]]
id = "auto"
name = "Auto"
vertical = "insurance.auto"

[campaigns.ivr]
greeting = "greeting"

[[numbers]]
number = "+18005550100"
campaign = "auto"
publisher = "pub"

[[buyers]]
id = "b0"
name = "Buyer"

[[buyers.destinations]]
id = "d0"
campaigns = ["auto"]
static_price = "10.00"
dial = { extension = "buyer_noanswer", context = "default" }
ring_timeout_secs = 30
"#
    .to_string()
}
