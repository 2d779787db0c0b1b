//! docs/buyer-protocol.md and its JSON Schemas must agree with the types the
//! daemon really sends and parses: every example in the document is run
//! through the daemon's own code, and the schemas' property lists are
//! compared with what the types serialise.

use std::collections::BTreeSet;

use bidbridge::auction::protocol::{NativeRequest, NativeResponse, parse_response};
use bidbridge::catalog::dial::DialTarget;
use bidbridge::catalog::spec::PingDialect;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/buyer-protocol.md"
    ))
    .unwrap()
}

fn schema(name: &str) -> serde_json::Value {
    let path = format!("{}/docs/schema/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The ```json blocks of the document, in order.
fn json_blocks() -> Vec<serde_json::Value> {
    let text = doc();
    text.split("```json\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|body| {
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("example does not parse: {e}\n{body}"))
        })
        .collect()
}

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_request_example_is_what_the_daemon_sends() {
    let request = &json_blocks()[0];
    let typed: NativeRequest =
        serde_json::from_value(request.clone()).expect("the example is a NativeRequest");
    let reserialised = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &reserialised, request,
        "the example must be exactly the daemon's serialisation"
    );
    let schema = schema("native-request.json");
    assert_eq!(
        keys(&schema["properties"]),
        keys(request),
        "schema properties vs request fields"
    );
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(required, keys(request));
    let caller_props = keys(&schema["properties"]["caller"]["properties"]);
    for field in [
        "area_code",
        "state",
        "zip",
        "local_time",
        "number_hash",
        "number",
    ] {
        assert!(caller_props.contains(field), "schema lacks caller.{field}");
    }
}

#[test]
fn the_response_examples_parse_as_documented() {
    let blocks = json_blocks();
    let gateway =
        DialTarget::from_parts(Some("+13125550100"), Some("carrier1"), None, None, None).unwrap();
    let bid = serde_json::to_vec(&blocks[1]).unwrap();
    let parsed = parse_response(
        PingDialect::Native,
        200,
        &bid,
        "USD",
        &gateway,
        chrono::Utc::now(),
    )
    .expect("a bid");
    assert_eq!(parsed.price, bidbridge::money::Cents(1450));
    assert_eq!(parsed.bid_id.as_deref(), Some("ns-88213"));
    assert_eq!(
        parsed.destination.unwrap().to_string(),
        "+13125550142 via carrier1"
    );
    let no_bid = serde_json::to_vec(&blocks[2]).unwrap();
    assert!(
        parse_response(
            PingDialect::Native,
            200,
            &no_bid,
            "USD",
            &gateway,
            chrono::Utc::now()
        )
        .is_err()
    );
    let typed: NativeResponse = serde_json::from_value(blocks[1].clone()).unwrap();
    let bid_fields = keys(&serde_json::to_value(typed.bid.unwrap()).unwrap());
    let schema = schema("native-response.json");
    let schema_fields = keys(&schema["properties"]["bid"]["oneOf"][1]["properties"]);
    assert_eq!(
        schema_fields, bid_fields,
        "schema bid properties vs NativeBid fields"
    );
}
