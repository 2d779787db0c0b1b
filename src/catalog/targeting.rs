//! Who a destination wants: include and exclude lists over the caller's
//! state, area code, ZIP (from the IVR), IVR tags and traffic source.
//!
//! Semantics (documented in docs/catalog.md):
//! - an empty include list accepts everyone; a non-empty one requires a match;
//! - an exclude list always wins over an include list;
//! - `zips` match exactly, `zip_prefixes` by prefix; a ZIP rule on a call
//!   with no ZIP does not match (the buyer asked for ZIPs it can check);
//! - `tags` are `key=value`: tags with the same key are alternatives (OR),
//!   different keys must all hold (AND).
//!
//! [`Targeting::check`] is on the auction's hot path (1,000 destinations in
//! well under 100 µs), so lists are compiled to sorted vectors and hash sets.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::ivr::parse_tag;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetingSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_states: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub area_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_area_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zip_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_zips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_sources: Vec<String>,
    /// Verticals this destination accepts; empty = whatever the campaign sells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verticals: Vec<String>,
}

impl TargetingSpec {
    pub fn normalize(&mut self) {
        for list in [
            &mut self.states,
            &mut self.exclude_states,
            &mut self.area_codes,
            &mut self.exclude_area_codes,
            &mut self.zips,
            &mut self.zip_prefixes,
            &mut self.exclude_zips,
            &mut self.tags,
            &mut self.exclude_tags,
            &mut self.sources,
            &mut self.exclude_sources,
            &mut self.verticals,
        ] {
            list.sort();
            list.dedup();
        }
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, list) in [
            ("states", &self.states),
            ("exclude_states", &self.exclude_states),
        ] {
            for s in list {
                if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
                    out.push((
                        field.to_string(),
                        format!("`{s}` is not a two-letter state code like IL"),
                    ));
                }
            }
        }
        for (field, list) in [
            ("area_codes", &self.area_codes),
            ("exclude_area_codes", &self.exclude_area_codes),
        ] {
            for a in list {
                if a.len() != 3 || !a.bytes().all(|b| b.is_ascii_digit()) {
                    out.push((
                        field.to_string(),
                        format!("`{a}` is not a three-digit area code"),
                    ));
                }
            }
        }
        for (field, list) in [
            ("zips", &self.zips),
            ("zip_prefixes", &self.zip_prefixes),
            ("exclude_zips", &self.exclude_zips),
        ] {
            for z in list {
                if z.is_empty() || z.len() > 10 || !z.bytes().all(|b| b.is_ascii_digit()) {
                    out.push((
                        field.to_string(),
                        format!("`{z}` is not a ZIP (digits only)"),
                    ));
                }
            }
        }
        for (field, list) in [("tags", &self.tags), ("exclude_tags", &self.exclude_tags)] {
            for t in list {
                if parse_tag(t).is_none() {
                    out.push((field.to_string(), format!("`{t}` is not key=value")));
                }
            }
        }
        out
    }
}

/// What a call offers to targeting.
#[derive(Debug, Clone, Copy)]
pub struct TargetFacts<'a> {
    pub vertical: &'a str,
    pub state: Option<&'a str>,
    pub area_code: Option<&'a str>,
    pub zip: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    pub source: &'a str,
}

/// Why targeting turned a destination down (recorded per bid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Vertical,
    State,
    AreaCode,
    Zip,
    Tag,
    Source,
}

impl Mismatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Vertical => "targeting: vertical",
            Mismatch::State => "targeting: state",
            Mismatch::AreaCode => "targeting: area code",
            Mismatch::Zip => "targeting: zip",
            Mismatch::Tag => "targeting: tags",
            Mismatch::Source => "targeting: source",
        }
    }
}

/// The compiled form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targeting {
    states: HashSet<String>,
    exclude_states: HashSet<String>,
    area_codes: HashSet<String>,
    exclude_area_codes: HashSet<String>,
    zips: HashSet<String>,
    zip_prefixes: Vec<String>,
    exclude_zips: HashSet<String>,
    /// key → accepted values (OR within a key, AND across keys).
    tags: HashMap<String, HashSet<String>>,
    exclude_tags: HashSet<(String, String)>,
    sources: HashSet<String>,
    exclude_sources: HashSet<String>,
    verticals: HashSet<String>,
    /// Nothing to check: the common case, skipped in one branch.
    empty: bool,
}

impl Targeting {
    pub fn compile(spec: &TargetingSpec) -> Targeting {
        let set = |list: &Vec<String>| list.iter().cloned().collect::<HashSet<_>>();
        let mut tags: HashMap<String, HashSet<String>> = HashMap::new();
        for (k, v) in spec.tags.iter().filter_map(|t| parse_tag(t)) {
            tags.entry(k.to_string()).or_default().insert(v.to_string());
        }
        Targeting {
            states: set(&spec.states),
            exclude_states: set(&spec.exclude_states),
            area_codes: set(&spec.area_codes),
            exclude_area_codes: set(&spec.exclude_area_codes),
            zips: set(&spec.zips),
            zip_prefixes: spec.zip_prefixes.clone(),
            exclude_zips: set(&spec.exclude_zips),
            tags,
            exclude_tags: spec
                .exclude_tags
                .iter()
                .filter_map(|t| parse_tag(t))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sources: set(&spec.sources),
            exclude_sources: set(&spec.exclude_sources),
            verticals: set(&spec.verticals),
            empty: *spec == TargetingSpec::default(),
        }
    }

    pub fn check(&self, facts: &TargetFacts<'_>) -> Result<(), Mismatch> {
        if self.empty {
            return Ok(());
        }
        if !self.verticals.is_empty() && !self.verticals.contains(facts.vertical) {
            return Err(Mismatch::Vertical);
        }
        if !include_exclude(&self.states, &self.exclude_states, facts.state) {
            return Err(Mismatch::State);
        }
        if !include_exclude(&self.area_codes, &self.exclude_area_codes, facts.area_code) {
            return Err(Mismatch::AreaCode);
        }
        if let Some(zip) = facts.zip
            && self.exclude_zips.contains(zip)
        {
            return Err(Mismatch::Zip);
        }
        if !self.zips.is_empty() || !self.zip_prefixes.is_empty() {
            let ok = facts.zip.is_some_and(|zip| {
                self.zips.contains(zip)
                    || self
                        .zip_prefixes
                        .iter()
                        .any(|p| zip.starts_with(p.as_str()))
            });
            if !ok {
                return Err(Mismatch::Zip);
            }
        }
        for (key, values) in &self.tags {
            if !facts.tags.get(key).is_some_and(|v| values.contains(v)) {
                return Err(Mismatch::Tag);
            }
        }
        if !self.exclude_tags.is_empty()
            && facts
                .tags
                .iter()
                .any(|(k, v)| self.exclude_tags.contains(&(k.clone(), v.clone())))
        {
            return Err(Mismatch::Tag);
        }
        if !include_exclude(&self.sources, &self.exclude_sources, Some(facts.source)) {
            return Err(Mismatch::Source);
        }
        Ok(())
    }
}

/// An unknown value (no state for a non-NANP caller) fails a non-empty
/// include list and passes an exclude list.
fn include_exclude(
    include: &HashSet<String>,
    exclude: &HashSet<String>,
    value: Option<&str>,
) -> bool {
    match value {
        Some(v) => !exclude.contains(v) && (include.is_empty() || include.contains(v)),
        None => include.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(tags: &'a BTreeMap<String, String>, zip: Option<&'a str>) -> TargetFacts<'a> {
        TargetFacts {
            vertical: "insurance.auto",
            state: Some("IL"),
            area_code: Some("312"),
            zip,
            tags,
            source: "google",
        }
    }

    #[test]
    fn empty_targeting_takes_everyone() {
        let t = Targeting::compile(&TargetingSpec::default());
        let tags = BTreeMap::new();
        assert_eq!(t.check(&facts(&tags, None)), Ok(()));
    }

    #[test]
    fn include_exclude_and_tags() {
        let spec = TargetingSpec {
            states: vec!["IL".into(), "WI".into()],
            exclude_area_codes: vec!["773".into()],
            tags: vec![
                "product=auto".into(),
                "product=home".into(),
                "insured=yes".into(),
            ],
            zip_prefixes: vec!["606".into()],
            ..Default::default()
        };
        let t = Targeting::compile(&spec);
        let mut tags = BTreeMap::from([
            ("product".to_string(), "home".to_string()),
            ("insured".to_string(), "yes".to_string()),
        ]);
        assert_eq!(t.check(&facts(&tags, Some("60601"))), Ok(()));
        assert_eq!(t.check(&facts(&tags, Some("53201"))), Err(Mismatch::Zip));
        assert_eq!(t.check(&facts(&tags, None)), Err(Mismatch::Zip));
        tags.remove("insured");
        assert_eq!(t.check(&facts(&tags, Some("60601"))), Err(Mismatch::Tag));

        let spec = TargetingSpec {
            exclude_sources: vec!["google".into()],
            ..Default::default()
        };
        assert_eq!(
            Targeting::compile(&spec).check(&facts(&tags, None)),
            Err(Mismatch::Source)
        );
        let spec = TargetingSpec {
            states: vec!["TX".into()],
            ..Default::default()
        };
        assert_eq!(
            Targeting::compile(&spec).check(&facts(&tags, None)),
            Err(Mismatch::State)
        );
    }

    #[test]
    fn problems_name_the_list() {
        let spec = TargetingSpec {
            states: vec!["Illinois".into()],
            tags: vec!["x".into()],
            ..Default::default()
        };
        let p = spec.problems();
        assert!(p.iter().any(|(f, _)| f == "states"));
        assert!(p.iter().any(|(f, _)| f == "tags"));
    }
}
