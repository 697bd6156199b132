//! Run ids: unique, time-ordered strings.

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// The id of one run of a workflow.
///
/// Generated ids are UUIDs of version 7 in their usual text form
/// (`0190a0b4-7d2c-7c4e-9a51-3f0e8c2b6d41`): milliseconds since the epoch, then random bits,
/// so they sort by creation time (and, within one process, in the order made) and do not
/// collide across processes and machines.
/// A caller may choose its own id instead (an order number, say) with
/// [`Engine::start_with_id`](crate::Engine::start_with_id).
///
/// A run id is 1 to [`RunId::MAX_LEN`] (255) bytes of UTF-8 text without control characters
/// (no NUL, newline or tab). Building a `RunId` from any string is allowed, but the engine
/// refuses an id outside these limits with [`Error::InvalidRunId`](crate::Error::InvalidRunId)
/// wherever one comes in: starting a run, waiting for it, asking its status or history.
///
/// ```
/// let id = durable::RunId::from("order-1234");
/// assert_eq!(id.as_str(), "order-1234");
/// assert!(id.check().is_ok());
/// assert!(durable::RunId::from("").check().is_err());
/// let (first, second) = (durable::RunId::generate(), durable::RunId::generate());
/// assert!(first < second, "in the order made");
/// assert_eq!(first.as_str().len(), 36);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(Arc<str>);

impl RunId {
    /// A fresh unique id.
    pub fn generate() -> Self {
        RunId(uuid::Uuid::now_v7().hyphenated().to_string().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The longest run id the engine accepts, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Whether the engine accepts this id: 1 to [`MAX_LEN`](Self::MAX_LEN) bytes, no control
    /// characters.
    ///
    /// ```
    /// use durable::RunId;
    ///
    /// assert!(RunId::from("order-7").check().is_ok());
    /// let err = RunId::from("a\0b").check().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid run id \"a\\0b\": it holds the control character '\\0' at byte 1; a run id \
    ///      is 1 to 255 bytes of text without control characters"
    /// );
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        let id = self.as_str();
        let reason = if id.is_empty() {
            "it is empty".to_owned()
        } else if id.len() > Self::MAX_LEN {
            format!("it is {} bytes long", id.len())
        } else if let Some((at, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
            format!("it holds the control character {c:?} at byte {at}")
        } else {
            return Ok(());
        };
        // Show at most the id's first 64 characters: it may be megabytes long.
        let mut shown: String = id.chars().take(64).collect();
        if shown.len() < id.len() {
            shown.push_str("...");
        }
        Err(Error::InvalidRunId {
            id: format!("{shown:?}"),
            reason,
        })
    }
}

impl From<&str> for RunId {
    fn from(s: &str) -> Self {
        RunId(s.into())
    }
}

impl From<String> for RunId {
    fn from(s: String) -> Self {
        RunId(s.into())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(RunId::from)
    }
}
