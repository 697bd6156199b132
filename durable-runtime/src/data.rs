//! The default workflow state: a JSON object passed from step to step.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// How deeply arrays and objects may nest in a state the engine journals (a workflow's input,
/// each step's output, a map's batch result, a `fan_out` operation's output).
///
/// A step whose output nests deeper fails (terminally, like any output that cannot be encoded)
/// with an error naming the workflow, run and step, and nothing of it is written: serde_json
/// cannot read JSON nested past 127 levels back, so such a state would leave its run
/// unreadable. Non-finite floats (NaN, infinities) are refused the same way, since JSON cannot
/// represent them.
///
/// ```
/// use durable::{Data, State};
///
/// let mut deep = serde_json::json!(0);
/// for _ in 0..durable::data::MAX_DEPTH {
///     deep = serde_json::json!([deep]);
/// }
/// // 100 levels: a value of its own may be that deep, but the state object is one more level.
/// assert!(Data::new().assign("deep", &deep).into_json().is_err());
/// assert!(Data::new().assign("deep", &deep[0]).into_json().is_ok());
/// // 101 levels: refused as soon as it is assigned.
/// assert!(Data::new().try_assign("deeper", serde_json::json!([deep])).is_err());
/// ```
pub const MAX_DEPTH: usize = 100;

/// The default state of a workflow: a JSON object that each step reads and extends.
///
/// It mirrors the `data` map of the Elixir library this crate learned from: a step takes the
/// state, [`assign`](Data::assign)s what it produced and returns it. Any other
/// `Serialize + DeserializeOwned` type can be a workflow's state instead (`state = MyType`).
///
/// ```
/// use durable::Data;
///
/// let data = Data::new().assign("user_id", 42).assign("email_sent", true);
/// assert_eq!(data.get::<u64>("user_id"), Some(42));
/// assert_eq!(data.get::<bool>("email_sent"), Some(true));
/// assert_eq!(data.get::<String>("missing"), None);
/// ```
///
/// A value JSON cannot hold (NaN, an infinity, a map whose keys are not strings or numbers, nesting deeper than
/// [`MAX_DEPTH`]) is never stored as `null` behind your back: [`assign`](Data::assign)
/// remembers the refusal and the step that returns this state fails with it, naming the key.
///
/// ```
/// # use durable::{workflow, Data, Engine, StepError};
/// # use durable::store::memory::MemoryStore;
/// async fn average(data: Data) -> Result<Data, StepError> {
///     let (sum, count) = (10.0, 0.0);
///     Ok(data.assign("average", sum / count)) // infinity
/// }
/// workflow! { stats { step average; } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
/// # let engine = Engine::builder(MemoryStore::new()).register(stats).build().await?;
/// let err = engine.run(stats, Data::new()).await.unwrap_err();
/// assert!(err.to_string().contains("step `average` failed after 1 attempt: the step's output \
///     does not encode as JSON: key `average`: it holds the number inf"), "{err}");
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Data(pub Map<String, Value>, Option<Refused>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = f.debug_tuple("Data");
        t.field(&self.0);
        if let Some(refused) = &self.1 {
            t.field(refused);
        }
        t.finish()
    }
}

/// The first value [`Data::assign`] or [`Data::set`] could not store, with why.
#[derive(Debug, Clone, PartialEq)]
struct Refused {
    key: String,
    message: String,
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.1 {
            Some(refused) => Err(serde::ser::Error::custom(format_args!(
                "key `{}`: {}",
                refused.key, refused.message
            ))),
            None => self.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(Data::from)
    }
}

impl Data {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the state with `key` set to `value` (serialized to JSON).
    ///
    /// A value JSON cannot hold (NaN or an infinity, a map with non-string keys, nesting deeper
    /// than [`MAX_DEPTH`]) is not stored: the state remembers the refusal, and the step that
    /// returns it fails with an error naming `key`. Use [`try_assign`](Data::try_assign) to
    /// handle that error in the step instead.
    ///
    /// A value refused for its nesting is not dropped either: a value nested, say, 100,000
    /// levels deep would overflow the stack as Rust drops it, level by level, and abort the
    /// process. It is forgotten instead (its memory is not freed); pass a reference
    /// (`assign(key, &value)`) to keep such a value yours.
    pub fn assign(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.set(key, value);
        self
    }

    /// Like [`assign`](Data::assign), but reports a value that cannot be serialized.
    ///
    /// ```
    /// let data = durable::Data::new().try_assign("n", 1)?;
    /// assert_eq!(data.get::<i32>("n"), Some(1));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn try_assign(
        mut self,
        key: impl Into<String>,
        value: impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        self.0.insert(key.into(), crate::encode::into_value(value)?);
        Ok(self)
    }

    /// Sets `key` in place; a value JSON cannot hold is refused as by [`assign`](Data::assign).
    ///
    /// ```
    /// let mut data = durable::Data::new();
    /// data.set("n", 1);
    /// assert_eq!(data.get::<i32>("n"), Some(1));
    /// data.set("ratio", f64::NAN);
    /// assert!(!data.contains("ratio"));
    /// assert!(serde_json::to_string(&data).unwrap_err().to_string().starts_with(
    ///     "key `ratio`: it holds the number NaN, which JSON cannot represent"
    /// ));
    /// ```
    pub fn set(&mut self, key: impl Into<String>, value: impl Serialize) {
        let key = key.into();
        match crate::encode::into_value(value) {
            Ok(value) => {
                // A later good value for the same key replaces the refused one.
                if self.1.as_ref().is_some_and(|r| r.key == key) {
                    self.1 = None;
                }
                self.0.insert(key, value);
            }
            Err(e) => {
                self.0.remove(&key);
                if self.1.is_none() {
                    self.1 = Some(Refused {
                        key,
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Reads `key` as a `T`; `None` when it is missing or has another shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.0.get(key).and_then(|v| T::deserialize(v).ok())
    }

    /// The raw JSON value under `key`.
    ///
    /// ```
    /// let data = durable::Data::new().assign("n", 1);
    /// assert_eq!(data.value("n"), Some(&serde_json::json!(1)));
    /// ```
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// assert!(durable::Data::new().assign("n", 1).contains("n"));
    /// ```
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

impl From<Map<String, Value>> for Data {
    fn from(map: Map<String, Value>) -> Self {
        Data(map, None)
    }
}

impl From<Data> for Value {
    fn from(data: Data) -> Self {
        Value::Object(data.0)
    }
}

/// Builds a [`Data`] from `key => value` pairs.
///
/// ```
/// let data = durable::data! { "user_id" => 7, "name" => "Ada" };
/// assert_eq!(data.get::<String>("name").as_deref(), Some("Ada"));
/// ```
#[macro_export]
macro_rules! data {
    () => { $crate::Data::new() };
    ($($key:expr => $value:expr),+ $(,)?) => {
        $crate::Data::new()$(.assign($key, $value))+
    };
}

/// Converts between a workflow's state type and the JSON the journal stores.
///
/// Implemented for every `Serialize + DeserializeOwned + Send` type, [`Data`] included.
/// [`into_json`](State::into_json) refuses non-finite floats and nesting deeper than
/// [`MAX_DEPTH`], where serde_json would write `null` or text it cannot read back.
///
/// ```
/// use durable::State;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Reading { celsius: f64 }
///
/// assert!(Reading { celsius: 21.5 }.into_json().is_ok());
/// assert!(Reading { celsius: f64::NAN }.into_json().is_err());
/// ```
pub trait State: Serialize + DeserializeOwned + Send + 'static {
    /// The state as a JSON value.
    fn into_json(self) -> Result<Value, serde_json::Error>;
    /// The state from a JSON value.
    fn from_json(value: Value) -> Result<Self, serde_json::Error>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> State for T {
    fn into_json(self) -> Result<Value, serde_json::Error> {
        // A state refused for its nesting may nest thousands of levels deep: dropping it
        // recursively could overflow the stack, so it is taken apart without recursion.
        crate::encode::into_value_static(self)
    }
    fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }
}
