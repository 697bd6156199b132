//! The default workflow state: a JSON object passed from step to step.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Data(pub Map<String, Value>);

impl Data {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the state with `key` set to `value` (serialized to JSON).
    ///
    /// A value that cannot be serialized (a map with non-string keys, say) is stored as `null`;
    /// use [`try_assign`](Data::try_assign) to see that error.
    pub fn assign(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.0.insert(key.into(), value);
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
        self.0.insert(key.into(), serde_json::to_value(value)?);
        Ok(self)
    }

    /// Sets `key` in place.
    ///
    /// ```
    /// let mut data = durable::Data::new();
    /// data.set("n", 1);
    /// assert_eq!(data.get::<i32>("n"), Some(1));
    /// ```
    pub fn set(&mut self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.0.insert(key.into(), value);
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
        Data(map)
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
pub trait State: Serialize + DeserializeOwned + Send + 'static {
    /// The state as a JSON value.
    fn into_json(self) -> Result<Value, serde_json::Error>;
    /// The state from a JSON value.
    fn from_json(value: Value) -> Result<Self, serde_json::Error>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> State for T {
    fn into_json(self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }
}
