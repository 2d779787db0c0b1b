//! Walking a campaign's IVR tree through a [`CallChannel`].
//!
//! Each node gets up to `tries` collects. A menu accepts one of its keys; an
//! entry node accepts exactly `digits` digits (a terminator may end it, a
//! timeout after a complete entry is fine). A wrong answer plays the
//! node's invalid-entry prompt before the next try; no valid answer after
//! the last try takes the node's `default` branch. A prompt the switch
//! cannot play is an operator problem: it is noted on the record, counted
//! in metrics, and the node's default branch is taken at once instead of
//! making the caller sit through silent retries.
//!
//! The campaign's opt-out key, when it has one, is a valid answer at every
//! node (menus and entries alike: an entry of exactly that one key): the
//! walk stops there and reports the node, and the flow puts the caller on
//! the do-not-call list.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::ivr::{IvrBranch, IvrNodeSpec, IvrSpec, parse_tag};
use crate::metrics::Metrics;
use crate::pbx::{CallChannel, ChannelError, CollectOutcome, CollectRequest, PlayOutcome};

/// A walk never visits more nodes than this (validation already forbids
/// cycles; this is the belt to that brace).
const MAX_STEPS: usize = 64;

/// What the walk produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IvrResult {
    pub tags: BTreeMap<String, String>,
    /// `(node, answer)`; answers are digits, `no_input`, `invalid` or `prompt_failed`.
    pub path: Vec<(String, String)>,
    pub notes: Vec<String>,
    /// The node where the caller pressed the opt-out key.
    pub opted_out: Option<String>,
}

/// The answer recorded in the path for an opt-out.
pub const OPT_OUT_ANSWER: &str = "opt_out";

/// Walks `ivr` from its start node. Returns early only when the channel
/// fails (the caller hung up, the switch went away).
pub async fn walk<C: CallChannel>(
    channel: &mut C,
    ivr: &IvrSpec,
    opt_out_key: Option<char>,
    metrics: &Metrics,
) -> Result<IvrResult, (ChannelError, IvrResult)> {
    let mut result = IvrResult::default();
    if let Some(greeting) = &ivr.greeting {
        match channel.play(greeting).await {
            Ok(PlayOutcome::Played) => {}
            Ok(PlayOutcome::PromptFailed { detail }) => {
                metrics.prompt_failures.inc();
                tracing::error!(%detail, "OPERATOR ALERT: IVR greeting could not be played");
                result.notes.push(format!("greeting failed: {detail}"));
            }
            Err(e) => return Err((e, result)),
        }
    }
    let mut next = ivr.start.clone();
    let mut steps = 0;
    while let Some(id) = next.take() {
        steps += 1;
        let Some(node) = ivr.node(&id) else { break };
        if steps > MAX_STEPS {
            result
                .notes
                .push(format!("IVR stopped after {MAX_STEPS} steps at node {id}"));
            break;
        }
        let (branch, answer) =
            match ask(channel, node, opt_out_key, metrics, &mut result.notes).await {
                Ok(v) => v,
                Err(e) => return Err((e, result)),
            };
        if answer == OPT_OUT_ANSWER {
            result.path.push((id.clone(), answer));
            result.opted_out = Some(id);
            break;
        }
        if let Some((key, value)) = branch.tag.as_deref().and_then(parse_tag) {
            result.tags.insert(key.to_string(), value.to_string());
        }
        result.path.push((id, answer));
        next = branch.next.clone();
    }
    Ok(result)
}

/// One node: returns the branch taken and the answer to record.
async fn ask<C: CallChannel>(
    channel: &mut C,
    node: &IvrNodeSpec,
    opt_out_key: Option<char>,
    metrics: &Metrics,
    notes: &mut Vec<String>,
) -> Result<(IvrBranch, String), ChannelError> {
    let request = CollectRequest {
        prompt: node.prompt.clone(),
        max_digits: node.collect.as_ref().map(|c| c.digits).unwrap_or(1),
        timeout: Duration::from_millis(u64::from(node.timeout_ms)),
        terminator: node.collect.as_ref().map(|_| '#'),
    };
    let mut last = "no_input";
    for _ in 0..node.tries.max(1) {
        let entry = match channel.collect(&request).await? {
            CollectOutcome::Digits(d) => d,
            CollectOutcome::Timeout { partial } => {
                // A complete fixed-length entry that the caller did not end
                // with # is still complete.
                match &node.collect {
                    Some(c) if partial.len() == usize::from(c.digits) => partial,
                    _ if partial.is_empty() => {
                        last = "no_input";
                        continue;
                    }
                    _ => partial,
                }
            }
            CollectOutcome::PromptFailed { detail } => {
                metrics.prompt_failures.inc();
                tracing::error!(node = %node.id, %detail, "OPERATOR ALERT: IVR prompt could not be played; taking the node's default branch");
                notes.push(format!("prompt failed at IVR node {}: {detail}", node.id));
                return Ok((node.default.clone(), "prompt_failed".to_string()));
            }
        };
        // Checked before the node's own answers: validation keeps the key
        // off every menu, and a one-key entry is never a complete entry.
        if let Some(key) = opt_out_key
            && entry.len() == 1
            && entry.starts_with(key)
        {
            let stop = IvrBranch {
                tag: None,
                next: None,
            };
            return Ok((stop, OPT_OUT_ANSWER.to_string()));
        }
        match &node.collect {
            Some(collect) => {
                if entry.len() == usize::from(collect.digits)
                    && entry.bytes().all(|b| b.is_ascii_digit())
                {
                    let branch = IvrBranch {
                        tag: Some(format!("{}={entry}", collect.tag)),
                        next: collect.next.clone(),
                    };
                    return Ok((branch, entry));
                }
            }
            None => {
                if let Some(branch) = node.options.get(&entry) {
                    return Ok((branch.clone(), entry));
                }
            }
        }
        last = "invalid";
        if let Some(invalid) = &node.invalid_prompt
            && let PlayOutcome::PromptFailed { detail } = channel.play(invalid).await?
        {
            metrics.prompt_failures.inc();
            notes.push(format!(
                "invalid-entry prompt failed at IVR node {}: {detail}",
                node.id
            ));
        }
    }
    Ok((node.default.clone(), last.to_string()))
}
