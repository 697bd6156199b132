//! A run's inbox: messages from outside (signals, callback completions) that the run takes
//! when its walk reaches what waits for them.
//!
//! [`Store::deliver`](super::Store::deliver) appends a message, numbered from 1 per run, in one
//! transaction that also refuses an unknown or finished run and wakes a suspended one. A
//! message is never marked consumed in the inbox: the journal event that took it records its
//! inbox sequence number, so the unconsumed messages are those no journal event names, and
//! taking a message is exactly-once by the journal's own fencing.

/// What kind of message an [`InboxMessage`] is (the store keeps the name as text).
pub mod kinds {
    /// A signal sent with `engine.signal(workflow, run, name, payload)`: `name` is the signal's name.
    pub const SIGNAL: &str = "signal";
    /// A callback's completion (`engine.complete_callback` / `fail_callback`): `name` is the
    /// callback's token, the payload `{"ok": <value>}` or `{"error": "..."}`. A store refuses
    /// a second callback message with the same token for a run (a token is good once).
    pub const CALLBACK: &str = "callback";
    /// A child run's end, delivered by the store in the transaction that finishes the child
    /// (see [`ParentLink`](crate::store::ParentLink)): `name` is the parent's `call` path, the
    /// payload `{"ok": <output>}`, `{"error": "..."}` or `{"cancelled": "reason"}`.
    pub const CHILD: &str = "child";
}

/// One message of a run's inbox, as [`Store::load_inbox`](super::Store::load_inbox) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// Its position in the run's inbox, from 1, in delivery order.
    pub seq: u64,
    /// What kind of message it is (see [`kinds`]).
    pub kind: String,
    /// The signal's name, or the callback's token.
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// When it was delivered, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// The payload of the [`child`](kinds::CHILD) message a store delivers to a child run's
/// parent when `finish` ends the child: `{"ok": <output>}`, `{"error": "<error>"}` or
/// `{"cancelled": "<reason>"}`; `None` for a suspension, which ends nothing.
///
/// ```
/// use durable::store::{child_end_payload, Finish};
///
/// let done = child_end_payload(&Finish::Completed(r#"{"n":1}"#.into()));
/// assert_eq!(done.as_deref(), Some(r#"{"ok":{"n":1}}"#));
/// let failed = child_end_payload(&Finish::Failed("boom".into()));
/// assert_eq!(failed.as_deref(), Some(r#"{"error":"boom"}"#));
/// assert_eq!(child_end_payload(&Finish::Suspended { wake_at: None }), None);
/// ```
pub fn child_end_payload(finish: &super::Finish) -> Option<String> {
    use super::Finish;
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    Some(match finish {
        // The output is JSON text already (it went through the encoder).
        Finish::Completed(output) => format!("{{\"ok\":{output}}}"),
        Finish::Failed(error) => format!("{{\"error\":{}}}", quoted(error)),
        Finish::Cancelled(reason) => format!("{{\"cancelled\":{}}}", quoted(reason)),
        Finish::Suspended { .. } => return None,
    })
}
