//! Durable sleeps: the absolute wake time is journaled once (`SleepStarted`), the run suspends
//! until then, and replay finds the sleep over once that time has passed.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::now_millis;
use crate::definition::{SleepNode, Wake};
use crate::error::{RunFailure, StepFailure};
use crate::store::Event;

use super::{path_in, Abort, Done, RunTask};

impl RunTask {
    /// A sleep: journals when it ends the first time it is reached, then suspends the run
    /// until then (see "Suspension" in the module above). Its state goes on unchanged.
    pub(super) async fn exec_sleep(
        self: &Arc<Self>,
        sleep: &SleepNode,
        input: Value,
        scope: &str,
    ) -> Result<Done, Abort> {
        let path = path_in(scope, sleep.name);
        let history = self.history.get(&path);
        if let Some(message) = history.and_then(|h| h.unreadable.as_ref()) {
            let message = format!("its journal entry {message}");
            return Err(Abort::Engine(self.bad_state(&path, message)));
        }
        let (wake_at, seq) = match history.and_then(|h| h.sleep) {
            Some(started) => started,
            None => {
                let wake_at = match &sleep.wake {
                    Wake::For(duration) => now_millis().saturating_add(duration.as_millis() as u64),
                    Wake::Until(field) => wake_time(&input, field).map_err(|error| {
                        let failure = StepFailure {
                            step: path.clone(),
                            attempts: 1,
                            error,
                        };
                        Abort::Failed(RunFailure {
                            message: format!("sleep `{path}`: {}", failure.error),
                            steps: vec![failure],
                        })
                    })?,
                };
                let entry = self.entry(&path, 1, Event::SleepStarted { wake_at });
                (wake_at, self.append(vec![entry], None).await?)
            }
        };
        if now_millis() >= wake_at {
            return Ok(Done {
                state: input,
                seq,
                skipped: Vec::new(),
            });
        }
        Err(Abort::Suspend {
            until: Some(wake_at),
            reason: format!("sleep `{path}` until {wake_at} (unix ms)"),
        })
    }
}

/// The wake time in the state's `field`: Unix milliseconds, or an RFC 3339 date and time.
fn wake_time(state: &Value, field: &str) -> Result<u64, String> {
    let value = state.get(field).unwrap_or(&Value::Null);
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            format!(
                "field `{field}` holds {n}, which is not a time: give Unix milliseconds (a \
                 whole number, not negative) or an RFC 3339 string such as \
                 \"2030-01-31T09:00:00Z\""
            )
        }),
        Value::String(text) => rfc3339_millis(text).ok_or_else(|| {
            format!(
                "field `{field}` holds \"{text}\", which is not an RFC 3339 date and time \
                 (such as \"2030-01-31T09:00:00Z\" or \"2030-01-31T10:00:00.5+01:00\"), nor \
                 after 1970"
            )
        }),
        Value::Null => Err(format!(
            "the state has no field `{field}` to sleep until: set it to Unix milliseconds or \
             an RFC 3339 string such as \"2030-01-31T09:00:00Z\" before the sleep"
        )),
        other => Err(format!(
            "field `{field}` holds {other}, which is not a time: give Unix milliseconds or an \
             RFC 3339 string such as \"2030-01-31T09:00:00Z\""
        )),
    }
}

/// An RFC 3339 date and time (`2030-01-31T09:00:00Z`, `2030-01-31 10:00:00.5+01:00`; jiff also
/// reads the ISO 8601 forms close to it) in Unix milliseconds, fractions past the millisecond
/// dropped; `None` when it does not parse, has no offset, or is before 1970.
pub(crate) fn rfc3339_millis(text: &str) -> Option<u64> {
    let at: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(at.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_times_read_as_unix_milliseconds() {
        assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_millis("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            rfc3339_millis("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            rfc3339_millis("2023-11-14 21:13:20.123456-01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            rfc3339_millis("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20.Z",
            "1969-12-31T23:59:59Z",
            "tomorrow at nine o'clock",
        ] {
            assert_eq!(rfc3339_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_wake_field_is_milliseconds_or_rfc3339_and_anything_else_is_named() {
        let state = json!({"ms": 1_700_000_000_000u64, "text": "2023-11-14T22:13:20Z",
                           "neg": -5, "flag": true, "word": "soon"});
        assert_eq!(wake_time(&state, "ms"), Ok(1_700_000_000_000));
        assert_eq!(wake_time(&state, "text"), Ok(1_700_000_000_000));
        let missing = wake_time(&state, "due").unwrap_err();
        assert!(missing.contains("no field `due`"), "{missing}");
        for field in ["neg", "flag", "word"] {
            let err = wake_time(&state, field).unwrap_err();
            assert!(err.contains(&format!("field `{field}` holds")), "{err}");
        }
    }
}
