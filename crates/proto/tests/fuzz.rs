//! The wire decoders under the corpus and the mutation fuzzer
//! (`test_support::fuzz`): no input panics, and whatever decodes re-encodes
//! to something that decodes to the same message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proto::{Capabilities, FromCoordinator, ToCoordinator};
use test_support::fuzz;

fn to_coordinator(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(msg) = ToCoordinator::decode(text) {
        let encoded = msg.encode();
        let again = ToCoordinator::decode(&encoded)
            .unwrap_or_else(|e| panic!("{encoded} does not decode again: {e}"));
        assert_eq!(again.encode(), encoded, "the round trip changed the message");
        if let ToCoordinator::RegisterPeer(m) = &msg {
            capabilities_of(m.capabilities.as_ref());
        }
    }
}

fn capabilities_of(raw: Option<&proto::Json>) {
    let caps = Capabilities::from_json(raw);
    assert!((1..=4096).contains(&caps.slots()), "slots {}", caps.slots());
}

fn capabilities(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(json) = proto::json(text) {
        capabilities_of(Some(&json));
    }
}

fn from_coordinator(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(msg) = FromCoordinator::decode(text) {
        let encoded = msg.encode();
        FromCoordinator::decode(&encoded)
            .unwrap_or_else(|e| panic!("{encoded} does not decode again: {e}"));
    }
}

/// Corpus entries made to be refused.
const REFUSED: [&str; 3] = ["not_an_object", "no_type", "huge_number"];

#[test]
fn the_corpus_replays() {
    for (target, check) in [
        ("to_coordinator", to_coordinator as fn(&[u8])),
        ("capabilities", capabilities),
        ("from_coordinator", from_coordinator),
    ] {
        for (path, bytes) in fuzz::corpus(target) {
            check(&bytes);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if target == "to_coordinator" && !REFUSED.iter().any(|n| name.starts_with(n)) {
                let text = String::from_utf8(bytes).unwrap();
                ToCoordinator::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}

#[test]
fn fuzz_to_coordinator() {
    assert!(fuzz::run("to_coordinator", to_coordinator) > 0);
}

#[test]
fn fuzz_capabilities() {
    assert!(fuzz::run("capabilities", capabilities) > 0);
}

#[test]
fn fuzz_from_coordinator() {
    assert!(fuzz::run("from_coordinator", from_coordinator) > 0);
}
