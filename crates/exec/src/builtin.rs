//! The built-in executors: `echo` returns its input, `sleep` waits.
//! Both exist for tests, demos and benchmarks of the cluster itself.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{ExecError, Executor, Output, RunContext, to_output};

/// `echo`: returns the task's input unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Executor for Echo {
    fn task_type(&self) -> &str {
        "echo"
    }

    fn run(&self, input: &str, _ctx: &RunContext) -> Result<Output, ExecError> {
        RawValue::from_string(input.to_owned()).map_err(ExecError::invalid)
    }
}

/// `sleep`: waits `{"ms": N}` milliseconds, waking to honour cancellation,
/// and returns `{"slept_ms": N}`.
#[derive(Debug, Clone, Copy)]
pub struct Sleep {
    /// The longest sleep a task may ask for.
    pub max_ms: u64,
}

impl Default for Sleep {
    fn default() -> Sleep {
        Sleep { max_ms: 10 * 60 * 1000 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    ms: u64,
}

impl Executor for Sleep {
    fn task_type(&self) -> &str {
        "sleep"
    }

    fn run(&self, input: &str, ctx: &RunContext) -> Result<Output, ExecError> {
        let SleepInput { ms } = serde_json::from_str(input).map_err(ExecError::invalid)?;
        if ms > self.max_ms {
            return Err(ExecError::LimitExceeded(format!(
                "sleep of {ms} ms is over the limit of {} ms",
                self.max_ms
            )));
        }
        let total = Duration::from_millis(ms);
        let tick = Duration::from_millis(10);
        let start = std::time::Instant::now();
        loop {
            ctx.check()?;
            let elapsed = start.elapsed();
            if elapsed >= total {
                break;
            }
            std::thread::sleep(tick.min(total - elapsed));
        }
        to_output(&serde_json::json!({ "slept_ms": ms }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_input_verbatim() {
        let out = Echo.run(r#"{"a": [1, 2]}"#, &RunContext::unbounded()).unwrap();
        assert_eq!(out.get(), r#"{"a": [1, 2]}"#);
    }

    #[test]
    fn echo_rejects_malformed_json() {
        let err = Echo.run("{nope", &RunContext::unbounded()).unwrap_err();
        assert_eq!(err.code(), "invalid_input");
    }

    #[test]
    fn sleep_sleeps_and_reports() {
        let out = Sleep::default().run(r#"{"ms": 1}"#, &RunContext::unbounded()).unwrap();
        assert_eq!(out.get(), r#"{"slept_ms":1}"#);
    }

    #[test]
    fn sleep_rejects_bad_input_and_over_limit() {
        let ctx = RunContext::unbounded();
        assert_eq!(
            Sleep::default().run(r#"{"ms": -1}"#, &ctx).unwrap_err().code(),
            "invalid_input"
        );
        assert_eq!(
            Sleep::default().run(r#"{"sec": 1}"#, &ctx).unwrap_err().code(),
            "invalid_input"
        );
        let small = Sleep { max_ms: 5 };
        assert_eq!(small.run(r#"{"ms": 6}"#, &ctx).unwrap_err().code(), "limit_exceeded");
    }

    #[test]
    fn sleep_stops_when_cancelled() {
        let ctx = RunContext::unbounded();
        ctx.cancel();
        let err = Sleep::default().run(r#"{"ms": 60000}"#, &ctx).unwrap_err();
        assert_eq!(err, ExecError::Cancelled);
    }

    #[test]
    fn sleep_stops_at_deadline() {
        let ctx = RunContext::new(Some(std::time::Instant::now()));
        let err = Sleep::default().run(r#"{"ms": 60000}"#, &ctx).unwrap_err();
        assert_eq!(err, ExecError::TimedOut);
    }
}
