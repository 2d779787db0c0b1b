//! A campaign's IVR tree: prompts, valid digits, retries, and the tags the
//! caller's answers add to the call (`product=auto`, `zip=60601`).
//!
//! The tree is data; `crate::flow::ivr` walks it through a `CallChannel`.
//! Validation here guarantees the walk ends: every `next` names a node and
//! there are no cycles, so a caller can never be stuck in a loop of menus.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::dial::PromptName;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrSpec {
    /// Played once when the call is answered, before the first node
    /// ("Thank you for calling ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<PromptName>,
    /// Id of the first node; absent for an IVR that only plays its greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<IvrNodeSpec>,
}

fn three() -> u8 {
    3
}

fn is_three(v: &u8) -> bool {
    *v == 3
}

fn five_seconds() -> u32 {
    5_000
}

fn is_five_seconds(v: &u32) -> bool {
    *v == 5_000
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One menu or entry step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrNodeSpec {
    pub id: String,
    pub prompt: PromptName,
    /// A menu: each valid key and where it leads.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, IvrBranch>,
    /// An entry of a fixed number of digits (a ZIP code) stored as a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<IvrCollect>,
    /// How many times the prompt is offered before `default` applies.
    #[serde(default = "three", skip_serializing_if = "is_three")]
    pub tries: u8,
    /// Time the caller has to answer after each prompt.
    #[serde(default = "five_seconds", skip_serializing_if = "is_five_seconds")]
    pub timeout_ms: u32,
    /// Played after a wrong key before the next try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_prompt: Option<PromptName>,
    /// Where the caller goes when the tries run out without a valid answer.
    #[serde(default, skip_serializing_if = "is_default")]
    pub default: IvrBranch,
}

/// A branch: optionally tag the call, then go to `next` or end the IVR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrBranch {
    /// `key=value` added to the call's tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Next node; absent means the IVR is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrCollect {
    /// Exact number of digits expected.
    pub digits: u8,
    /// Tag key the entry is stored under (`zip`).
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Tag keys and values: what buyers see, so keep them plain.
pub fn valid_tag_part(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Splits `key=value`, both parts checked.
pub fn parse_tag(tag: &str) -> Option<(&str, &str)> {
    let (key, value) = tag.split_once('=')?;
    (valid_tag_part(key) && valid_tag_part(value)).then_some((key, value))
}

impl IvrSpec {
    pub fn node(&self, id: &str) -> Option<&IvrNodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn normalize(&mut self) {
        self.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// `(field, message)` for each problem; empty when the tree is usable.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let ids: BTreeSet<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        if ids.len() != self.nodes.len() {
            out.push(("nodes".to_string(), "two nodes share an id".to_string()));
        }
        match &self.start {
            Some(start) if !ids.contains(start.as_str()) => {
                out.push(("start".to_string(), format!("no node `{start}`")))
            }
            Some(_) => {}
            None if self.greeting.is_none() => out.push((
                "start".to_string(),
                "an IVR needs a start node, a greeting, or both".to_string(),
            )),
            None if !self.nodes.is_empty() => out.push((
                "start".to_string(),
                "nodes are given but no start node".to_string(),
            )),
            None => {}
        }
        for node in &self.nodes {
            let at = |field: &str| format!("nodes[{}].{field}", node.id);
            if !valid_tag_part(&node.id) {
                out.push((at("id"), "letters, digits, _ - . only".into()));
            }
            let dangling = |field: String, next: &Option<String>| -> Option<(String, String)> {
                let next = next.as_ref()?;
                (!ids.contains(next.as_str())).then(|| (field, format!("no node `{next}`")))
            };
            match (&node.collect, node.options.is_empty()) {
                (Some(collect), true) => {
                    out.extend(dangling(at("collect.next"), &collect.next));
                    if !(1..=20).contains(&collect.digits) {
                        out.push((at("collect.digits"), "expected 1 to 20".into()));
                    }
                    if !valid_tag_part(&collect.tag) {
                        out.push((
                            at("collect.tag"),
                            "a tag key: letters, digits, _ - .".into(),
                        ));
                    }
                }
                (None, false) => {
                    for (key, branch) in &node.options {
                        out.extend(dangling(at(&format!("options.{key}.next")), &branch.next));
                        let is_key = key.len() == 1
                            && matches!(key.as_bytes()[0], b'0'..=b'9' | b'*' | b'#');
                        if !is_key {
                            out.push((
                                at("options"),
                                format!("`{key}` is not a phone key (0-9, *, #)"),
                            ));
                        }
                        if let Some(tag) = &branch.tag
                            && parse_tag(tag).is_none()
                        {
                            out.push((
                                at(&format!("options.{key}.tag")),
                                format!("`{tag}` is not key=value"),
                            ));
                        }
                    }
                }
                _ => out.push((
                    at("options"),
                    "give either `options` (a menu) or `collect` (an entry), not both or neither"
                        .into(),
                )),
            }
            out.extend(dangling(at("default.next"), &node.default.next));
            if let Some(tag) = &node.default.tag
                && parse_tag(tag).is_none()
            {
                out.push((at("default.tag"), format!("`{tag}` is not key=value")));
            }
            if !(1..=9).contains(&node.tries) {
                out.push((at("tries"), "expected 1 to 9".into()));
            }
            if !(500..=60_000).contains(&node.timeout_ms) {
                out.push((at("timeout_ms"), "expected 500 to 60000".into()));
            }
        }
        if out.is_empty()
            && let Some(cycle_at) = self.find_cycle()
        {
            out.push((
                format!("nodes[{cycle_at}]"),
                "the tree loops back to this node; callers could never leave".into(),
            ));
        }
        out
    }

    /// A node that can reach itself, if any (depth-first, colouring).
    fn find_cycle(&self) -> Option<String> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = self
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), Mark::New))
            .collect();
        fn successors(node: &IvrNodeSpec) -> Vec<&str> {
            let mut next: Vec<&str> = node
                .options
                .values()
                .filter_map(|b| b.next.as_deref())
                .collect();
            next.extend(node.collect.as_ref().and_then(|c| c.next.as_deref()));
            next.extend(node.default.next.as_deref());
            next
        }
        fn visit<'a>(
            spec: &'a IvrSpec,
            id: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
        ) -> Option<String> {
            match marks.get(id) {
                Some(Mark::Active) => return Some(id.to_string()),
                Some(Mark::Done) | None => return None,
                Some(Mark::New) => {}
            }
            marks.insert(id, Mark::Active);
            if let Some(node) = spec.node(id) {
                for next in successors(node) {
                    if let Some(found) = visit(spec, next, marks) {
                        return Some(found);
                    }
                }
            }
            marks.insert(id, Mark::Done);
            None
        }
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        ids.into_iter().find_map(|id| visit(self, id, &mut marks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(name: &str) -> PromptName {
        PromptName::new(name).unwrap()
    }

    fn menu(id: &str, options: &[(&str, Option<&str>, Option<&str>)]) -> IvrNodeSpec {
        IvrNodeSpec {
            id: id.into(),
            prompt: prompt("menu"),
            options: options
                .iter()
                .map(|(k, tag, next)| {
                    (
                        k.to_string(),
                        IvrBranch {
                            tag: tag.map(String::from),
                            next: next.map(String::from),
                        },
                    )
                })
                .collect(),
            collect: None,
            tries: 3,
            timeout_ms: 5000,
            invalid_prompt: None,
            default: IvrBranch::default(),
        }
    }

    #[test]
    fn good_tree_has_no_problems() {
        let mut zip = menu("zip", &[]);
        zip.collect = Some(IvrCollect {
            digits: 5,
            tag: "zip".into(),
            next: None,
        });
        let spec = IvrSpec {
            greeting: None,
            start: Some("product".into()),
            nodes: vec![
                menu(
                    "product",
                    &[
                        ("1", Some("product=auto"), Some("zip")),
                        ("2", Some("product=home"), Some("zip")),
                    ],
                ),
                zip,
            ],
        };
        assert_eq!(spec.problems(), vec![]);
    }

    #[test]
    fn dangling_next_and_cycles_are_refused() {
        let spec = IvrSpec {
            greeting: None,
            start: Some("a".into()),
            nodes: vec![menu("a", &[("1", None, Some("nowhere"))])],
        };
        assert!(
            spec.problems()
                .iter()
                .any(|(f, m)| f == "nodes[a].options.1.next" && m.contains("nowhere"))
        );

        let spec = IvrSpec {
            greeting: None,
            start: Some("a".into()),
            nodes: vec![
                menu("a", &[("1", None, Some("b"))]),
                menu("b", &[("2", None, Some("a"))]),
            ],
        };
        assert!(spec.problems().iter().any(|(_, m)| m.contains("loops")));
    }

    #[test]
    fn bad_keys_and_tags_are_refused() {
        let spec = IvrSpec {
            greeting: None,
            start: Some("a".into()),
            nodes: vec![menu(
                "a",
                &[("12", None, None), ("3", Some("novalue"), None)],
            )],
        };
        let problems = spec.problems();
        assert!(problems.iter().any(|(_, m)| m.contains("not a phone key")));
        assert!(problems.iter().any(|(_, m)| m.contains("not key=value")));
    }
}
