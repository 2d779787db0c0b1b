//! Eligibility of a campaign with 1,000 destinations (goal: ≤ 100 µs for
//! all of them), the per-call cost the auction pays before any ping.
//! Targeting, hours and the gate mix the way a large catalog would.

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;

use bidbridge::auction::eligibility::{CallFacts, OpenGate, check};
use bidbridge::catalog::Snapshot;
use bidbridge::catalog::spec::{CatalogDoc, DocFormat};
use bidbridge::phone::E164;
use criterion::{Criterion, criterion_group, criterion_main};

fn catalog(destinations: usize) -> Snapshot {
    let mut text = String::from(
        "[[publishers]]\nid = \"p\"\nname = \"P\"\n\n[[campaigns]]\nid = \"c\"\nname = \"C\"\nvertical = \"insurance.auto\"\n\n\
         [[numbers]]\nnumber = \"+18005550100\"\ncampaign = \"c\"\npublisher = \"p\"\nsource = \"search\"\n",
    );
    let states = ["IL", "TX", "CA", "NY", "FL", "WI", "IN", "OH"];
    for i in 0..destinations {
        let targeting = match i % 5 {
            0 => String::new(),
            1 => format!("targeting = {{ states = [\"{}\", \"{}\"] }}", states[i % 8], states[(i + 3) % 8]),
            2 => "targeting = { tags = [\"product=auto\"], zip_prefixes = [\"606\", \"100\"] }".to_string(),
            3 => "targeting = { exclude_sources = [\"facebook\"], exclude_area_codes = [\"773\"] }".to_string(),
            _ => "timezone = \"America/Chicago\"\nhours = { mon = [\"00:00-24:00\"], tue = [\"00:00-24:00\"], wed = [\"00:00-24:00\"], thu = [\"00:00-24:00\"], fri = [\"00:00-24:00\"], sat = [\"00:00-24:00\"], sun = [\"00:00-24:00\"] }".to_string(),
        };
        text.push_str(&format!(
            "\n[[buyers]]\nid = \"b{i}\"\nname = \"B{i}\"\n\n[[buyers.destinations]]\nid = \"d{i}\"\ncampaigns = [\"c\"]\n\
             static_price = \"10.00\"\ndial = {{ sip = \"sip:d{i}@127.0.0.1\" }}\n{targeting}\n"
        ));
    }
    let doc = CatalogDoc::parse(&text, DocFormat::Toml).expect("catalog");
    Snapshot::build(&doc).expect("valid")
}

fn eligibility(c: &mut Criterion) {
    let snapshot = catalog(1000);
    let campaign = snapshot.campaigns["c"].clone();
    let caller = E164::parse_strict("+13125550111").unwrap();
    let tags: BTreeMap<String, String> = [
        ("product".to_string(), "auto".to_string()),
        ("zip".to_string(), "60601".to_string()),
    ]
    .into();
    let facts = CallFacts::derive(Some(&caller), &tags, "search", chrono::Utc::now());
    let target = facts.target_facts(&campaign.vertical);
    let exclude = HashSet::new();
    let now = chrono::Utc::now();
    c.bench_function("eligibility of 1000 destinations", |b| {
        b.iter(|| {
            let mut eligible = 0;
            for destination in &campaign.destinations {
                if check(destination, black_box(&target), now, &exclude, &OpenGate).is_ok() {
                    eligible += 1;
                }
            }
            black_box(eligible)
        })
    });
}

criterion_group!(benches, eligibility);
criterion_main!(benches);
