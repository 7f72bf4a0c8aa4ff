use super::*;

#[test]
fn every_closed_name_reads_back() {
    for s in TaskState::ALL {
        assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
    }
    for e in AttemptEnd::ALL {
        assert_eq!(e.as_str().parse::<AttemptEnd>(), Ok(*e));
    }
    for w in WorkerStatus::ALL {
        assert_eq!(w.as_str().parse::<WorkerStatus>(), Ok(*w));
    }
    for c in CloseReason::ALL {
        assert_eq!(c.as_str().parse::<CloseReason>(), Ok(*c));
    }
    for v in VerifyStatus::ALL {
        assert_eq!(v.as_str().parse::<VerifyStatus>(), Ok(*v));
    }
    for v in Verdict::ALL {
        assert_eq!(v.as_str().parse::<Verdict>(), Ok(*v));
    }
    assert!("fine".parse::<VerifyStatus>().is_err() && "ok".parse::<Verdict>().is_err());
}

#[test]
fn an_unknown_closed_name_is_an_error_naming_it() {
    let err = "exploded".parse::<TaskState>().unwrap_err();
    assert_eq!(err.to_string(), "unknown task state `exploded`");
    assert!("".parse::<AttemptEnd>().is_err());
    assert!("Healthy".parse::<WorkerStatus>().is_err(), "names are case-sensitive");
}

#[test]
fn aliases_read_as_their_value() {
    assert_eq!("late".parse::<WorkerStatus>(), Ok(WorkerStatus::Unhealthy));
    assert_eq!(WorkerStatus::Unhealthy.as_str(), "unhealthy");
}

#[test]
fn open_codes_keep_unknown_names_and_match_constants() {
    let known = FailureCode::new("timed_out");
    assert_eq!(known, FailureCode::TIMED_OUT);
    assert!(known.is_known());
    let other = FailureCode::new("gpu_on_fire");
    assert_eq!(other.as_str(), "gpu_on_fire");
    assert!(!other.is_known());
    assert!(!other.retryable_by_default());
    assert!(FailureCode::INTERNAL.retryable_by_default());
    assert!(!FailureCode::INVALID_INPUT.retryable_by_default());
    assert!(FailureCode::RUN_TIMEOUT.is_timeout());
}

#[test]
fn close_codes_are_distinct() {
    let mut codes: Vec<u16> = CloseReason::ALL.iter().map(|c| c.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), CloseReason::ALL.len());
}

#[cfg(feature = "serde")]
#[test]
fn codes_serialize_as_their_names() {
    assert_eq!(serde_json::to_string(&TaskState::TimedOut).unwrap(), "\"timed_out\"");
    let s: TaskState = serde_json::from_str("\"running\"").unwrap();
    assert_eq!(s, TaskState::Running);
    assert!(serde_json::from_str::<TaskState>("\"bogus\"").is_err());
    let c: ErrorCode = serde_json::from_str("\"brand_new\"").unwrap();
    assert_eq!(c.as_str(), "brand_new");
    assert_eq!(serde_json::to_string(&ErrorCode::BUSY).unwrap(), "\"busy\"");
}
