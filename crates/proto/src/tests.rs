use super::*;

/// The seed's messages, character for character.
const SEED_REGISTER_PEER: &str =
    r#"{"msg_type": "register_peer", "peer_id": "peer_1", "capabilities": {}}"#;
const SEED_HEARTBEAT: &str = r#"{"msg_type": "heartbeat", "peer_id": "peer_1"}"#;
const SEED_PEER_RESULT: &str = r#"{"msg_type": "task_result", "task_id": "123", "result": {}}"#;
const SEED_REGISTER_GAMER: &str = r#"{"msg_type": "register_gamer", "gamer_id": "gamer_1"}"#;
const SEED_TASK_REQUEST: &str =
    r#"{"msg_type": "task_request", "task_id": "123", "task_type": "physics", "data": {}}"#;

fn decode(text: &str) -> ToCoordinator {
    ToCoordinator::decode(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn decode_err(text: &str) -> DecodeError {
    ToCoordinator::decode(text).expect_err(text)
}

#[test]
fn seed_messages_decode() {
    match decode(SEED_REGISTER_PEER) {
        ToCoordinator::RegisterPeer(m) => {
            assert_eq!(m.peer_id, "peer_1");
            assert_eq!(m.capabilities.unwrap().get(), "{}");
            assert!(m.token.is_none() && m.running.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(decode(SEED_HEARTBEAT), ToCoordinator::Heartbeat(m) if m.peer_id == "peer_1"));
    match decode(SEED_PEER_RESULT) {
        ToCoordinator::TaskResult(m) => {
            assert_eq!(m.task_id, "123");
            assert_eq!(m.result.unwrap().get(), "{}");
            assert!(m.error.is_none() && m.attempt.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode(SEED_REGISTER_GAMER),
        ToCoordinator::RegisterGamer(m) if m.gamer_id == "gamer_1"
    ));
    match decode(SEED_TASK_REQUEST) {
        ToCoordinator::TaskRequest(m) => {
            assert_eq!(m.task_id.as_deref(), Some("123"));
            assert_eq!(m.task_type, "physics");
            assert_eq!(m.data.get(), "{}");
            assert!(m.priority.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn coordinator_messages_have_the_seeds_shape() {
    let ack = FromCoordinator::RegistrationAck(RegistrationAck::registered()).encode();
    assert_eq!(ack, r#"{"msg_type":"registration_ack","status":"registered"}"#);

    let assignment = FromCoordinator::TaskAssignment(TaskAssignment {
        task_id: "123".into(),
        task_data: json(r#"{"x": 1}"#).unwrap(),
        id: Some("t-42".into()),
        task_type: "physics".into(),
        attempt: 1,
        timeout_s: None,
    })
    .encode();
    let v: serde_json::Value = serde_json::from_str(&assignment).unwrap();
    assert_eq!(v["msg_type"], "task_assignment");
    assert_eq!(v["task_id"], "123");
    assert_eq!(v["id"], "t-42");
    assert_eq!(v["task_data"], serde_json::json!({"x": 1}));

    let result = FromCoordinator::TaskResult(TaskResultOut {
        task_id: "123".into(),
        result: json("{}").unwrap(),
        id: None,
        status: None,
        attempt: None,
        peer_id: None,
    })
    .encode();
    assert_eq!(result, r#"{"msg_type":"task_result","task_id":"123","result":{}}"#);
}

#[test]
fn raw_payloads_are_forwarded_verbatim() {
    let text = r#"{"msg_type":"task_request","task_type":"echo","data":{"b": [1, 2.50, "x"]}}"#;
    let ToCoordinator::TaskRequest(req) = decode(text) else { panic!() };
    assert_eq!(req.data.get(), r#"{"b": [1, 2.50, "x"]}"#);
}

#[test]
fn null_result_is_a_result() {
    let ToCoordinator::TaskResult(m) =
        decode(r#"{"msg_type":"task_result","task_id":"1","result":null}"#)
    else {
        panic!()
    };
    assert_eq!(m.result.unwrap().get(), "null");
}

#[test]
fn every_message_round_trips() {
    let frames = [
        SEED_REGISTER_PEER,
        SEED_HEARTBEAT,
        SEED_PEER_RESULT,
        SEED_REGISTER_GAMER,
        SEED_TASK_REQUEST,
        r#"{"msg_type":"task_started","task_id":"t-1","attempt":2}"#,
        r#"{"msg_type":"return_task","task_id":"t-1","attempt":2,"reason":"shutdown"}"#,
        r#"{"msg_type":"drain","peer_id":"p"}"#,
        r#"{"msg_type":"cancel_task","task_id":"9"}"#,
        r#"{"msg_type":"task_status","task_id":"9"}"#,
        r#"{"msg_type":"task_result","task_id":"1","error":{"code":"internal","message":"boom"},"attempt":1}"#,
        r#"{"msg_type":"task_progress","task_id":"t-1","attempt":1,"seq":0,"text":"Hel","tokens":2}"#,
        r#"{"msg_type":"task_progress","task_id":"t-1","attempt":1,"seq":1,"text":"lo"}"#,
    ];
    for frame in frames {
        let msg = decode(frame);
        let again = decode(&msg.encode());
        assert_eq!(format!("{msg:?}"), format!("{again:?}"), "{frame}");
    }
}

#[test]
fn malformed_json_is_reported() {
    for text in ["", "{", "not json", r#"{"msg_type": }"#] {
        assert_eq!(decode_err(text).code(), "malformed_json", "{text}");
    }
    // Valid JSON that is not an object.
    assert_eq!(decode_err("[1,2]").code(), "malformed_json");
    assert_eq!(decode_err("42").code(), "malformed_json");
    // serde would read a struct from an array, field by field: refused.
    for text in ["[]", r#"["register_gamer"]"#, r#" ["register_gamer", "g1"]"#, r#""x""#] {
        assert_eq!(decode_err(text).code(), "malformed_json", "{text}");
    }
}

#[test]
fn missing_or_unknown_type_is_reported() {
    assert_eq!(decode_err(r#"{"peer_id":"p"}"#), DecodeError::MissingType);
    assert_eq!(decode_err(r#"{"msg_type":"nope"}"#), DecodeError::UnknownType("nope".into()));
    // A coordinator-only message sent by a client is unknown in this direction.
    assert_eq!(decode_err(r#"{"msg_type":"task_assignment"}"#).code(), "unknown_msg_type");
    // A msg_type that is not a string is no type.
    assert_eq!(decode_err(r#"{"msg_type":7}"#), DecodeError::MissingType);
    assert_eq!(decode_err(r#"{"msg_type":null}"#), DecodeError::MissingType);
    assert_eq!(decode_err(r#"{"msg_type":["register_gamer"]}"#), DecodeError::MissingType);
}

#[test]
fn wrong_fields_name_the_problem() {
    let err = decode_err(r#"{"msg_type":"register_peer"}"#);
    assert_eq!(err.code(), "invalid_message");
    assert_eq!(err.msg_type(), Some("register_peer"));
    assert!(err.to_string().contains("peer_id"), "{err}");

    let err = decode_err(r#"{"msg_type":"heartbeat","peer_id":5}"#);
    assert!(err.to_string().contains("invalid heartbeat"), "{err}");

    let err = decode_err(r#"{"msg_type":"task_result","task_id":"1"}"#);
    assert!(err.to_string().contains("`result` or an `error`"), "{err}");

    let err = decode_err(r#"{"msg_type":"register_gamer","gamer_id":""}"#);
    assert!(err.to_string().contains("must not be empty"), "{err}");

    let long = "x".repeat(MAX_ID_LEN + 1);
    let err = decode_err(&format!(r#"{{"msg_type":"register_gamer","gamer_id":"{long}"}}"#));
    assert!(err.to_string().contains("longer than"), "{err}");
}

#[test]
fn task_request_limits() {
    let bad = [
        (r#""timeout_s":-1"#, "timeout_s"),
        (r#""timeout_s":0"#, "timeout_s"),
        (r#""queue_timeout_s":1e12"#, "queue_timeout_s"),
        (r#""max_attempts":0"#, "max_attempts"),
        (r#""max_attempts":1000"#, "max_attempts"),
        (r#""priority":"URGENT""#, "priority"),
        (r#""priority":1.5"#, "priority"),
        (r#""task_type":"""#, "task_type"),
        (r#""verify":{"replicas":0}"#, "verify.replicas"),
        (r#""verify":{"replicas":17}"#, "verify.replicas"),
        (r#""verify":{"replicas":2,"quorum":3}"#, "verify.quorum"),
        (r#""verify":{"replicas":2,"quorum":0}"#, "verify.quorum"),
        (r#""verify":{"replicas":2,"votes":2}"#, "votes"),
        (r#""verify":"2/2""#, "VerifyPolicy"),
    ];
    for (field, name) in bad {
        let text = format!(r#"{{"msg_type":"task_request","task_type":"echo",{field}}}"#);
        let err = decode_err(&text);
        assert_eq!(err.code(), "invalid_message", "{text}");
        assert!(err.to_string().contains(name), "{text}: {err}");
    }
}

#[test]
fn a_verification_policy_is_an_optional_field() {
    let text = r#"{"msg_type":"task_request","task_type":"physics","verify":{"replicas":3,"quorum":2,"adaptive":true}}"#;
    let ToCoordinator::TaskRequest(req) = decode(text) else { panic!() };
    let v = req.verify.unwrap();
    assert_eq!((v.replicas, v.quorum(), v.adaptive), (3, 2, true));
    let text = r#"{"msg_type":"task_request","task_type":"physics","verify":{"replicas":2}}"#;
    let ToCoordinator::TaskRequest(req) = decode(text) else { panic!() };
    assert_eq!((req.verify.unwrap().quorum(), req.verify.unwrap().adaptive), (2, false));
    let ToCoordinator::TaskRequest(req) = decode(SEED_TASK_REQUEST) else { panic!() };
    assert!(req.verify.is_none());
}

#[test]
fn a_declared_owner_is_read_leniently() {
    let caps = Capabilities::from_value(serde_json::json!({"owner": " alice "}));
    assert_eq!(caps.owner.as_deref(), Some("alice"));
    for bad in [serde_json::json!({"owner": 5}), serde_json::json!({"owner": ""})] {
        let caps = Capabilities::from_value(bad);
        assert!(caps.owner.is_none() && caps.warnings[0].contains("owner"), "{caps:?}");
    }
}

#[test]
fn priorities_by_name_or_number() {
    for (given, expected) in [
        (r#""LOW""#, 0),
        (r#""normal""#, 1),
        (r#""High""#, 2),
        (r#""CRITICAL""#, 3),
        ("7", 7),
        ("-2", -2),
        (r#""5""#, 5),
    ] {
        let text =
            format!(r#"{{"msg_type":"task_request","task_type":"echo","priority":{given}}}"#);
        let ToCoordinator::TaskRequest(req) = decode(&text) else { panic!() };
        assert_eq!(req.priority, Some(Priority(expected)), "{given}");
    }
}

#[test]
fn a_heartbeat_carries_gpu_use_and_the_seed_literal_still_decodes() {
    let ToCoordinator::Heartbeat(seed) = decode(SEED_HEARTBEAT) else { panic!() };
    assert_eq!(seed.gpus, None);
    let text = r#"{"msg_type":"heartbeat","peer_id":"p","gpus":[{"card":"card0","busy_percent":37,"vram_used_mb":812,"vram_total_mb":8192},{"card":"card1"}]}"#;
    let ToCoordinator::Heartbeat(h) = decode(text) else { panic!() };
    let gpus = h.gpus.unwrap();
    assert_eq!(
        gpus[0],
        GpuUsage {
            card: "card0".into(),
            busy_percent: Some(37.0),
            vram_used_mb: Some(812),
            vram_total_mb: Some(8192)
        }
    );
    assert_eq!((gpus[1].busy_percent, gpus[1].vram_used_mb), (None, None));
    let err = decode_err(
        r#"{"msg_type":"heartbeat","peer_id":"p","gpus":[{"card":"c","busy_percent":"x"}]}"#,
    );
    assert!(err.to_string().contains("invalid heartbeat"), "{err}");
}

#[test]
fn unknown_fields_are_ignored() {
    let text = r#"{"msg_type":"heartbeat","peer_id":"p","gpu_temp":71,"extra":{"a":[1]}}"#;
    assert!(matches!(decode(text), ToCoordinator::Heartbeat(_)));
}

#[test]
fn coordinator_messages_decode_for_clients() {
    let text = r#"{"msg_type":"task_assignment","task_id":"t-4","task_data":{"a":1},"task_type":"echo","attempt":2,"timeout_s":3.5}"#;
    let FromCoordinator::TaskAssignment(a) = FromCoordinator::decode(text).unwrap() else {
        panic!()
    };
    assert_eq!((a.task_id.as_str(), a.attempt, a.timeout_s), ("t-4", 2, Some(3.5)));
    assert_eq!(a.task_data.get(), r#"{"a":1}"#);
    // A seed-shaped assignment (no attempt) still decodes.
    let seed = r#"{"msg_type": "task_assignment", "task_id": "123", "task_data": {}}"#;
    assert!(matches!(FromCoordinator::decode(seed), Ok(FromCoordinator::TaskAssignment(_))));
}

#[test]
fn capabilities_are_read_leniently() {
    let caps = Capabilities::from_json(Some(
        &json(
            r#"{"task_types":["echo","gpu"],"max_concurrent":4,"cores":8,"memory_gb":16,
                "gpus":[{"name":"RX 580","vram_mb":8192,"vendor":"AMD"},"GTX 1060"],
                "models":["resnet50"],"owner":"alice","echoes_ids":true}"#,
        )
        .unwrap(),
    ));
    assert_eq!(caps.task_types, Some(vec!["echo".into(), "gpu".into()]));
    assert_eq!(caps.slots(), 4);
    assert_eq!(caps.cores, Some(8));
    assert_eq!(caps.memory_mb, Some(16 * 1024));
    assert_eq!(caps.gpus.len(), 2);
    assert_eq!(caps.gpus[0].vram_mb, Some(8192));
    assert_eq!(caps.gpus[1].name, "GTX 1060");
    assert_eq!(caps.models, vec!["resnet50".to_owned()]);
    assert_eq!(caps.raw["owner"], "alice");
    assert!(caps.echoes_ids);
    assert!(caps.warnings.is_empty());
}

#[test]
fn odd_capabilities_never_refuse_a_peer() {
    for text in [
        "{}",
        "null",
        "[]",
        "\"gpu\"",
        r#"{"task_types":"echo"}"#,
        r#"{"max_concurrent":0}"#,
        r#"{"max_concurrent":-3}"#,
        r#"{"max_concurrent":"lots"}"#,
        r#"{"gpus":[1,2]}"#,
        r#"{"gpu":"RX 580"}"#,
        r#"{"memory_mb":"big"}"#,
        r#"{"echoes_ids":"yes"}"#,
    ] {
        let caps = Capabilities::from_json(Some(&json(text).unwrap()));
        assert!(caps.slots() >= 1, "{text}");
    }
    let caps = Capabilities::from_json(Some(&json(r#"{"max_concurrent":"lots"}"#).unwrap()));
    assert_eq!(caps.slots(), 1);
    assert_eq!(caps.warnings.len(), 1);
    assert_eq!(Capabilities::from_json(None).task_types, None);
    // A seed-literal peer answers by `task_id`: unless it says otherwise.
    assert!(!Capabilities::from_json(None).echoes_ids);
    let caps = Capabilities::from_json(Some(&json(r#"{"echoes_ids":"yes"}"#).unwrap()));
    assert!(!caps.echoes_ids);
    assert_eq!(caps.warnings.len(), 1);
    let caps = Capabilities::from_json(Some(&json(r#"{"slots":100000}"#).unwrap()));
    assert_eq!(caps.slots(), capabilities::MAX_SLOTS);
}

#[test]
fn task_progress_decodes_in_both_directions() {
    let ToCoordinator::TaskProgress(p) = decode(
        r#"{"msg_type": "task_progress", "task_id": "7", "id": "t-7", "attempt": 2, "seq": 5, "text": "Hé", "tokens": 2}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        p,
        TaskProgress {
            task_id: "7".into(),
            id: Some("t-7".into()),
            attempt: 2,
            seq: 5,
            text: "Hé".into(),
            tokens: Some(2)
        }
    );
    // `seq`, `attempt` and `text` are required; the task id is checked.
    for bad in [
        r#"{"msg_type":"task_progress","task_id":"t-7","attempt":1,"text":"x"}"#,
        r#"{"msg_type":"task_progress","task_id":"t-7","seq":0,"text":"x"}"#,
        r#"{"msg_type":"task_progress","task_id":"t-7","attempt":1,"seq":0}"#,
        r#"{"msg_type":"task_progress","task_id":"","attempt":1,"seq":0,"text":"x"}"#,
        r#"{"msg_type":"task_progress","task_id":"t-7","attempt":1,"seq":-1,"text":"x"}"#,
    ] {
        assert_eq!(decode_err(bad).code(), "invalid_message", "{bad}");
    }
    let out = FromCoordinator::TaskProgress(TaskProgressOut {
        task_id: "mine".into(),
        id: "t-7".into(),
        attempt: 1,
        seq: 0,
        text: "Hel".into(),
        tokens: Some(2),
    });
    let text = out.encode();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"msg_type": "task_progress", "task_id": "mine", "id": "t-7",
                           "attempt": 1, "seq": 0, "text": "Hel", "tokens": 2})
    );
    let Ok(FromCoordinator::TaskProgress(back)) = FromCoordinator::decode(&text) else { panic!() };
    assert_eq!(back.text, "Hel");
}

#[test]
fn models_may_be_names_or_objects() {
    let caps = Capabilities::from_json(Some(
        &json(
            r#"{"models": ["resnet50",
                {"name": "llama3", "task_type": "generate", "format": "gguf",
                 "size_bytes": 2019377696, "context_length": 4096, "quantization": "Q4_K_M",
                 "n_params": 3212749824},
                {"name": "resnet50", "task_type": "inference", "format": "onnx"},
                {"format": "gguf"}, 7]}"#,
        )
        .unwrap(),
    ));
    // Names stay usable as before, sorted and deduplicated.
    assert_eq!(caps.models, vec!["llama3".to_owned(), "resnet50".to_owned()]);
    assert_eq!(caps.model_info.len(), 3);
    let llama = &caps.model_info[1];
    assert_eq!(llama.quantization.as_deref(), Some("Q4_K_M"));
    assert_eq!(llama.context_length, Some(4096));
    assert_eq!(llama.size_bytes, Some(2_019_377_696));
    // The nameless object and the number are warned about, not fatal.
    assert_eq!(caps.warnings.len(), 2, "{:?}", caps.warnings);
    assert!(caps.serves_model("llama3", "generate"));
    assert!(!caps.serves_model("llama3", "inference"));
    // A plain name counts for every task type.
    assert!(caps.serves_model("resnet50", "generate"));
    assert!(!caps.serves_model("mistral", "generate"));
    let odd = Capabilities::from_json(Some(&json(r#"{"models": "llama3"}"#).unwrap()));
    assert!(odd.models.is_empty());
    assert_eq!(odd.warnings.len(), 1);
}

#[test]
fn a_frame_that_did_not_decode_still_names_its_task() {
    let bad = r#"{"msg_type": "task_request", "task_id": "t\u00e9", "task_type": "x",
                  "requirements": {"min_vram_mb": 1180591620717411303424}}"#;
    assert!(ToCoordinator::decode(bad).is_err());
    assert_eq!(task_id_of(bad).as_deref(), Some("té"));
    for none in [
        r#"{"msg_type": "task_request"}"#,
        r#"{"msg_type": "task_request", "task_id": 7}"#,
        r#"{"msg_type": "task_request", "task_id": ""}"#,
        r#"{"msg_type": "task_request", "task_id": "a\u0001"}"#,
        r#"["task_id", "x"]"#,
        "not json",
    ] {
        assert_eq!(task_id_of(none), None, "{none}");
    }
}
