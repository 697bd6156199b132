//! What a journal entry records: the one place the journal's payload format lives.
//!
//! Every journal entry is an [`Event`]. The walk (`walk/`) writes events through [`Event::encode`]
//! and reads them back through [`Event::decode`]; history reads them the same way. A store
//! sees only the entry's [`EntryKind`] (a short name in its own column, queryable) and the
//! payload as opaque text: it never needs to know what the variants mean.
//!
//! A payload that is already JSON text (a step's output, its changes, an operation's output)
//! is the payload as it is: encoding moves it into the entry and decoding moves it back out,
//! without parsing it or wrapping it in another object, so journaling a step costs no
//! second serialization. The failure events' payloads are small serde-derived objects.
//!
//! Journals written by earlier versions keep reading: before operations had their own kinds,
//! an operation's result was a `step_completed` entry and its failure an `attempt_failed`
//! entry, both at a path holding `#` (`step/fan_out#1[3]`); [`Event::decode`] reads those as
//! [`Event::OpCompleted`] and [`Event::OpFailed`].
//!
//! Adding an event: a variant here, its [`EntryKind`] (name in [`EntryKind::as_str`] and
//! [`EntryKind::parse`]), one arm in [`Event::encode`] and one in [`Event::decode`]; then one
//! replay arm in the walk (`walk/mod.rs`, `RunTask::new`) and one history arm
//! (`engine/records.rs`, `StepRecord::from_entry`). The compiler points at each `match`.

use serde::{Deserialize, Serialize};

/// What a journal entry records: the name a store keeps in its `kind` column.
///
/// ```
/// use durable::store::EntryKind;
///
/// assert_eq!(EntryKind::StepChanged.as_str(), "step_changed");
/// assert_eq!(EntryKind::parse("op_completed"), Some(EntryKind::OpCompleted));
/// assert_eq!(EntryKind::parse("timer_set"), None);
/// assert_eq!(EntryKind::SleepStarted.as_str(), "sleep_started");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A step finished; the payload is its whole output state. Also a map's or a named
    /// parallel block's decision, at the block's path, with the state after it.
    StepCompleted,
    /// A step finished; the payload is what it changed against its input (keys set or
    /// changed, nested objects recursively, and removed keys), which replay applies to the
    /// same input. Written for steps whose input and output are JSON objects, so a step that
    /// sets one field of a large state journals a few bytes. Also a map's decision, as the
    /// change of the map's key.
    StepChanged,
    /// An attempt failed and another will follow; the payload is
    /// `{"error": "...", "retry_at": <unix ms>}`.
    AttemptFailed,
    /// A step failed for good (retries spent or a terminal error); the payload is
    /// `{"error": "..."}`.
    StepFailed,
    /// A sub-operation of a step (`step/fan_out#1[3]`) finished; the payload is its output.
    OpCompleted,
    /// A sub-operation of a step failed; the payload is `{"error": "..."}`. Kept for the
    /// history: a failed operation runs again when its step is retried.
    OpFailed,
    /// A durable sleep started; the payload is `{"wake_at": <unix ms>}`, the absolute time it
    /// ends, computed once. Replay reads it: the sleep is over once that time has passed.
    SleepStarted,
    /// A failed run was resumed ([`Engine::resume_failed`](crate::Engine::resume_failed)) at
    /// the step that failed; the payload is `{"attempts": n}`, how many attempts had failed:
    /// the step starts again with a fresh budget.
    Resumed,
    /// A `wait_for` or `callback` item started waiting (one entry per attempt); the payload is
    /// `{"deadline": <unix ms or null>}`, the absolute time the wait times out, fixed once.
    WaitStarted,
    /// A `wait_for` or `callback` item took a message of the run's inbox; the payload is
    /// `{"inbox": <the message's inbox seq>, "value": <its payload>}`. The value goes into the
    /// state under the item's name; the inbox seq marks the message as taken.
    Received,
    /// A `callback` item made its token, before its submit function first ran; the payload is
    /// `{"token": "..."}`.
    CallbackCreated,
    /// A `call` item created its child run (or found it created, and attached to it); the
    /// payload is `{"child": "<the child's run id>"}`. Replay attaches to that run.
    ChildStarted,
}

impl EntryKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::StepCompleted => "step_completed",
            EntryKind::StepChanged => "step_changed",
            EntryKind::AttemptFailed => "attempt_failed",
            EntryKind::StepFailed => "step_failed",
            EntryKind::OpCompleted => "op_completed",
            EntryKind::OpFailed => "op_failed",
            EntryKind::SleepStarted => "sleep_started",
            EntryKind::Resumed => "resumed",
            EntryKind::WaitStarted => "wait_started",
            EntryKind::Received => "received",
            EntryKind::CallbackCreated => "callback_created",
            EntryKind::ChildStarted => "child_started",
        }
    }

    /// The kind named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "step_completed" => EntryKind::StepCompleted,
            "step_changed" => EntryKind::StepChanged,
            "attempt_failed" => EntryKind::AttemptFailed,
            "step_failed" => EntryKind::StepFailed,
            "op_completed" => EntryKind::OpCompleted,
            "op_failed" => EntryKind::OpFailed,
            "sleep_started" => EntryKind::SleepStarted,
            "resumed" => EntryKind::Resumed,
            "wait_started" => EntryKind::WaitStarted,
            "received" => EntryKind::Received,
            "callback_created" => EntryKind::CallbackCreated,
            "child_started" => EntryKind::ChildStarted,
            _ => return None,
        })
    }
}

/// One journal event: what happened at one step path (the entry's `step`), on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A step, or a map's or named parallel block's decision, finished with this whole state
    /// (JSON text).
    StepCompleted { output: String },
    /// A step, or a map's decision, finished with these changes against its input (JSON text
    /// of `crate::changes`).
    StepChanged { changes: String },
    /// An attempt failed; the next is due at `retry_at` (milliseconds since the Unix epoch).
    AttemptFailed { error: String, retry_at: u64 },
    /// A step failed for good.
    StepFailed { error: String },
    /// A step's sub-operation finished with this output (JSON text).
    OpCompleted { output: String },
    /// A step's sub-operation failed.
    OpFailed { error: String },
    /// A durable sleep started; it ends at `wake_at` (milliseconds since the Unix epoch).
    SleepStarted { wake_at: u64 },
    /// A failed run was resumed at this step, whose `attempts` had failed: they no longer
    /// count, and the step's final failure is forgotten.
    Resumed { attempts: u32 },
    /// A wait started; it times out at `deadline` (milliseconds since the Unix epoch).
    WaitStarted { deadline: Option<u64> },
    /// A wait took inbox message `inbox`, whose payload is `value` (JSON text).
    Received { inbox: u64, value: String },
    /// A callback's token.
    CallbackCreated { token: String },
    /// A `call` item's child run.
    ChildStarted { child: String },
}

/// The payload of [`Event::ChildStarted`].
#[derive(Serialize, Deserialize)]
struct ChildStarted {
    child: String,
}

/// The payload of [`Event::WaitStarted`].
#[derive(Serialize, Deserialize)]
struct WaitStarted {
    deadline: Option<u64>,
}

/// The payload of [`Event::Received`], as read back.
#[derive(Deserialize)]
struct Received {
    inbox: u64,
    value: serde_json::Value,
}

/// The payload of [`Event::CallbackCreated`].
#[derive(Serialize, Deserialize)]
struct CallbackCreated {
    token: String,
}

/// The payload of [`Event::SleepStarted`].
#[derive(Serialize, Deserialize)]
struct SleepStarted {
    wake_at: u64,
}

/// The payload of [`Event::Resumed`].
#[derive(Serialize, Deserialize)]
struct Resumed {
    attempts: u32,
}

/// The payload of [`Event::AttemptFailed`].
#[derive(Serialize, Deserialize)]
struct AttemptFailed {
    error: String,
    retry_at: u64,
}

/// The payload of [`Event::StepFailed`] and [`Event::OpFailed`].
#[derive(Serialize, Deserialize)]
struct Failed {
    error: String,
}

impl Event {
    /// The entry's kind and payload. A text payload moves into the entry as it is; the
    /// failures' payloads cannot fail to encode (a string and a number).
    pub(crate) fn encode(self) -> (EntryKind, String) {
        match self {
            Event::StepCompleted { output } => (EntryKind::StepCompleted, output),
            Event::StepChanged { changes } => (EntryKind::StepChanged, changes),
            Event::AttemptFailed { error, retry_at } => (
                EntryKind::AttemptFailed,
                text(&AttemptFailed { error, retry_at }),
            ),
            Event::StepFailed { error } => (EntryKind::StepFailed, text(&Failed { error })),
            Event::OpCompleted { output } => (EntryKind::OpCompleted, output),
            Event::OpFailed { error } => (EntryKind::OpFailed, text(&Failed { error })),
            Event::SleepStarted { wake_at } => {
                (EntryKind::SleepStarted, text(&SleepStarted { wake_at }))
            }
            Event::Resumed { attempts } => (EntryKind::Resumed, text(&Resumed { attempts })),
            Event::WaitStarted { deadline } => {
                (EntryKind::WaitStarted, text(&WaitStarted { deadline }))
            }
            // The value is JSON text already (an inbox message's payload): spliced in as it is.
            Event::Received { inbox, value } => (
                EntryKind::Received,
                format!("{{\"inbox\":{inbox},\"value\":{value}}}"),
            ),
            Event::CallbackCreated { token } => {
                (EntryKind::CallbackCreated, text(&CallbackCreated { token }))
            }
            Event::ChildStarted { child } => {
                (EntryKind::ChildStarted, text(&ChildStarted { child }))
            }
        }
    }

    /// The event an entry of `kind` at path `step` with `payload` records, reading the forms
    /// earlier versions wrote too. A text payload moves out as it is, unparsed (its reader
    /// decodes it when it needs it, depth-checked); a failure's payload is parsed here, and
    /// an unreadable one is an error that reads after "its journal entry".
    pub(crate) fn decode(kind: EntryKind, step: &str, payload: String) -> Result<Event, String> {
        // Before operations had kinds of their own, a `#` in the path marked one.
        let op = step.contains('#');
        Ok(match kind {
            EntryKind::StepCompleted if op => Event::OpCompleted { output: payload },
            EntryKind::StepCompleted => Event::StepCompleted { output: payload },
            EntryKind::StepChanged => Event::StepChanged { changes: payload },
            EntryKind::AttemptFailed if op => {
                let AttemptFailed { error, .. } = parse(kind, &payload)?;
                Event::OpFailed { error }
            }
            EntryKind::AttemptFailed => {
                let AttemptFailed { error, retry_at } = parse(kind, &payload)?;
                Event::AttemptFailed { error, retry_at }
            }
            EntryKind::StepFailed => Event::StepFailed {
                error: parse::<Failed>(kind, &payload)?.error,
            },
            EntryKind::OpCompleted => Event::OpCompleted { output: payload },
            EntryKind::OpFailed => Event::OpFailed {
                error: parse::<Failed>(kind, &payload)?.error,
            },
            EntryKind::WaitStarted => Event::WaitStarted {
                deadline: parse::<WaitStarted>(kind, &payload)?.deadline,
            },
            EntryKind::Received => {
                let Received { inbox, value } = parse(kind, &payload)?;
                Event::Received {
                    inbox,
                    value: value.to_string(),
                }
            }
            EntryKind::CallbackCreated => Event::CallbackCreated {
                token: parse::<CallbackCreated>(kind, &payload)?.token,
            },
            EntryKind::SleepStarted => Event::SleepStarted {
                wake_at: parse::<SleepStarted>(kind, &payload)?.wake_at,
            },
            EntryKind::Resumed => Event::Resumed {
                attempts: parse::<Resumed>(kind, &payload)?.attempts,
            },
            EntryKind::ChildStarted => Event::ChildStarted {
                child: parse::<ChildStarted>(kind, &payload)?.child,
            },
        })
    }
}

/// A failure event's payload, depth-checked before serde_json reads it.
fn parse<T: serde::de::DeserializeOwned>(kind: EntryKind, payload: &str) -> Result<T, String> {
    crate::encode::readable(payload)
        .and_then(|()| serde_json::from_str(payload).map_err(|e| e.to_string()))
        .map_err(|e| format!("(`{}`) does not decode: {e}", kind.as_str()))
}

/// A failure event's payload, encoded through `crate::encode::to_text` like every journaled
/// value.
fn text<T: Serialize>(payload: &T) -> String {
    crate::encode::to_text(payload).expect("a failure payload is a string and a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(event: Event, step: &str) -> (EntryKind, String) {
        let (kind, payload) = event.clone().encode();
        assert_eq!(Event::decode(kind, step, payload.clone()), Ok(event));
        (kind, payload)
    }

    #[test]
    fn every_event_decodes_as_it_was_encoded_and_text_payloads_are_kept_as_they_are() {
        let output = r#"{"b":1,"a":[1,2]}"#.to_owned();
        assert_eq!(
            round_trip(
                Event::StepCompleted {
                    output: output.clone()
                },
                "s"
            ),
            (EntryKind::StepCompleted, output.clone())
        );
        assert_eq!(
            round_trip(
                Event::StepChanged {
                    changes: output.clone()
                },
                "s"
            ),
            (EntryKind::StepChanged, output.clone())
        );
        assert_eq!(
            round_trip(Event::OpCompleted { output: "7".into() }, "s/fan_out#1[0]"),
            (EntryKind::OpCompleted, "7".to_owned())
        );
        let attempt = Event::AttemptFailed {
            error: "a \"quoted\" error".into(),
            retry_at: 1_700_000_000_000,
        };
        assert_eq!(
            round_trip(attempt, "s"),
            (
                EntryKind::AttemptFailed,
                r#"{"error":"a \"quoted\" error","retry_at":1700000000000}"#.to_owned()
            )
        );
        let failed = Event::StepFailed { error: "no".into() };
        assert_eq!(
            round_trip(failed, "s"),
            (EntryKind::StepFailed, r#"{"error":"no"}"#.to_owned())
        );
        let op_failed = Event::OpFailed { error: "no".into() };
        assert_eq!(
            round_trip(op_failed, "s/fan_out#1[2]"),
            (EntryKind::OpFailed, r#"{"error":"no"}"#.to_owned())
        );
        assert_eq!(
            round_trip(Event::WaitStarted { deadline: Some(7) }, "approved"),
            (EntryKind::WaitStarted, r#"{"deadline":7}"#.to_owned())
        );
        assert_eq!(
            round_trip(Event::WaitStarted { deadline: None }, "approved"),
            (EntryKind::WaitStarted, r#"{"deadline":null}"#.to_owned())
        );
        assert_eq!(
            round_trip(
                Event::Received {
                    inbox: 3,
                    value: r#"{"by":"ann"}"#.into()
                },
                "approved"
            ),
            (
                EntryKind::Received,
                r#"{"inbox":3,"value":{"by":"ann"}}"#.to_owned()
            )
        );
        assert_eq!(
            round_trip(Event::CallbackCreated { token: "t".into() }, "paid"),
            (EntryKind::CallbackCreated, r#"{"token":"t"}"#.to_owned())
        );
        let sleep = Event::SleepStarted {
            wake_at: 1_700_000_000_000,
        };
        assert_eq!(
            round_trip(sleep, "nap"),
            (
                EntryKind::SleepStarted,
                r#"{"wake_at":1700000000000}"#.to_owned()
            )
        );
        assert_eq!(
            round_trip(Event::Resumed { attempts: 3 }, "s"),
            (EntryKind::Resumed, r#"{"attempts":3}"#.to_owned())
        );
    }

    #[test]
    fn operations_journaled_before_they_had_kinds_read_as_operations() {
        let decode = |kind, step, payload: &str| Event::decode(kind, step, payload.to_owned());
        assert_eq!(
            decode(EntryKind::StepCompleted, "enrich/fan_out#1[0]", "0"),
            Ok(Event::OpCompleted { output: "0".into() })
        );
        assert_eq!(
            decode(
                EntryKind::AttemptFailed,
                "enrich/fan_out#1[1]",
                r#"{"error":"down","retry_at":0}"#
            ),
            Ok(Event::OpFailed {
                error: "down".into()
            })
        );
        // A path without `#` is a step's.
        assert_eq!(
            decode(EntryKind::StepCompleted, "map[1]/enrich", "0"),
            Ok(Event::StepCompleted { output: "0".into() })
        );
    }

    #[test]
    fn an_unreadable_failure_payload_is_an_error_naming_its_kind() {
        let err = Event::decode(EntryKind::StepFailed, "s", "{\"error\": tru".into()).unwrap_err();
        assert!(
            err.starts_with("(`step_failed`) does not decode: "),
            "{err}"
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = Event::decode(EntryKind::AttemptFailed, "s", deep).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        let err = Event::decode(EntryKind::OpFailed, "s#1", r#"{"retry_at":0}"#.into());
        assert!(err.unwrap_err().contains("missing field `error`"));
    }
}
