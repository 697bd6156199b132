//! A run's inbox: messages from outside (signals, callback completions) that the run takes
//! when its walk reaches what waits for them.
//!
//! [`Store::deliver`](super::Store::deliver) appends a message, numbered from 1 per run, in one
//! transaction that also refuses an unknown or finished run and wakes a suspended one. A
//! message is never marked consumed in the inbox: the journal event that took it records its
//! inbox sequence number, so the unconsumed messages are those no journal event names, and
//! taking a message is exactly-once by the journal's own fencing.
//!
//! A message that comes while its run is still running (after a wait looked, before the
//! run's suspension commits) wakes nothing; the suspension itself then finds it: it carries
//! the last message its waits had seen ([`Finish::Suspended`](super::Finish::Suspended)'s
//! `inbox_seen`), and the store leaves the run awake when a later one is there, in the
//! transaction that would have suspended it. So whichever commits first, the message or the
//! suspension, the run is awake after both, and no crash between two steps can lose that.

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

/// Why a store refuses inbox message `message` of `run`: it does not match its checksum. A
/// callback's token is a secret, so a callback message is named by its number alone.
pub(crate) fn damaged_message(run: &crate::RunId, message: &InboxMessage) -> String {
    let what = match message.kind.as_str() {
        kinds::SIGNAL => format!("(signal `{}`)", message.name),
        kinds::CALLBACK => "(a callback's completion)".to_owned(),
        kinds::CHILD => format!("(the end of the child run of `{}`)", message.name),
        other => format!("(of kind `{other}`)"),
    };
    format!(
        "run {run}: inbox message {} {what} does not match its checksum, so the store was \
         damaged or changed outside durable; the run is left as it is and does not take the \
         message: restore the store from a backup",
        message.seq
    )
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
/// let nap = Finish::Suspended { wake_at: None, inbox_seen: None };
/// assert_eq!(child_end_payload(&nap), None);
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
