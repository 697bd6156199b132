//! The definition of a workflow: the tree of steps and blocks that `workflow!` builds.

use std::fmt::Write as _;
use std::time::Duration;

use crate::data::State;
use crate::merge::{Merge, OnError};
use crate::retry::RetryPolicy;
use crate::step::ErasedStep;

/// A workflow type, as `workflow!` generates it: a unit struct naming the workflow.
///
/// ```
/// use durable::{workflow, Data, StepError, Workflow};
///
/// async fn hello(data: Data) -> Result<Data, StepError> {
///     Ok(data.assign("greeting", "hello"))
/// }
///
/// workflow! {
///     /// Says hello.
///     greet { step hello; }
/// }
///
/// let definition = greet.definition();
/// assert_eq!(definition.name(), "greet");
/// assert_eq!(definition.description(), "Says hello.");
/// assert_eq!(definition.step_names(), ["hello"]);
/// ```
pub trait Workflow: Send + Sync + 'static {
    /// The state passed from step to step ([`Data`](crate::Data) unless `state = T` is given).
    type State: State;

    /// The workflow's name, unique within an engine.
    const NAME: &'static str;

    /// Builds the definition the engine runs.
    fn definition(&self) -> Definition;
}

/// A workflow's tree of steps and blocks, with its name and fingerprint.
pub struct Definition {
    name: &'static str,
    description: &'static str,
    nodes: Vec<Node>,
    fingerprint: String,
    /// The workflow's state type, when it is not `Data`: what the engine writes into the
    /// state is checked against it.
    state: Option<StateType>,
}

/// A typed state (any [`State`] but [`Data`](crate::Data)), as the engine checks what it
/// writes into the state: a parallel block's `parallel_results` and `parallel_errors`, a
/// map's batch result.
///
/// A field the type lacks (or holds in a narrower type) would be dropped by serde when the
/// next step decodes the state, so the block that wrote it stops the run with
/// [`Error::BadState`](crate::Error::BadState) instead.
///
/// ```
/// use durable::definition::StateType;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order {
///     id: u64,
/// }
///
/// let order = StateType::of::<Order>().expect("a typed state");
/// assert!(order.name().ends_with("Order"));
/// let state = serde_json::json!({ "id": 7, "parallel_results": {} });
/// assert_eq!(order.round_trip(&state).unwrap(), serde_json::json!({ "id": 7 }));
/// // `Data` keeps every key: nothing to check.
/// assert!(StateType::of::<durable::Data>().is_none());
/// ```
#[derive(Clone, Copy)]
pub struct StateType {
    name: &'static str,
    round_trip: fn(&serde_json::Value) -> Result<serde_json::Value, serde_json::Error>,
}

impl StateType {
    /// The check for `S`, or `None` for [`Data`](crate::Data), which holds any JSON object.
    pub fn of<S: State>() -> Option<Self> {
        if std::any::TypeId::of::<S>() == std::any::TypeId::of::<crate::Data>() {
            return None;
        }
        Some(Self {
            name: std::any::type_name::<S>(),
            round_trip: |value| S::from_json(value.clone())?.into_json(),
        })
    }

    /// The type's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `state` decoded into the type and encoded again: what the next step would see.
    pub fn round_trip(
        &self,
        state: &serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Error> {
        (self.round_trip)(state)
    }
}

impl std::fmt::Debug for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StateType").field(&self.name).finish()
    }
}

/// One element of a workflow's body.
#[non_exhaustive]
pub enum Node {
    /// A single step.
    Step(StepNode),
    /// Branches that run concurrently from one snapshot of the state, then merge.
    Parallel(ParallelNode),
    /// A named sequence of nodes, usable as one branch of a parallel block or one node of a dag.
    Seq(SeqNode),
    /// Nodes that each start as soon as the nodes they come after have finished.
    Dag(DagNode),
    /// The same nodes run for every element of an array in the state.
    Map(MapNode),
    /// A durable sleep: the run suspends until a time, holding no task meanwhile.
    Sleep(SleepNode),
    /// `wait_for NAME(timeout = ...)`: waits for a signal named `NAME`; its payload goes into
    /// the state under `NAME`.
    Wait(WaitNode),
    /// `callback NAME = submit_fn(timeout = ...)`: hands a token to `submit_fn`, then waits
    /// for the callback's completion; its payload goes into the state under `NAME`.
    Callback(CallbackNode),
    /// `call NAME = other_workflow(...)`: runs another registered workflow as a child run
    /// and waits for its end; its output goes into the state under `NAME`.
    Call(CallNode),
}

/// `call NAME = other_workflow(...)`: starts a run of another registered workflow as a
/// child of this run, and waits for it, suspended (holding no task), until it ends.
///
/// The child's input is the value under `NAME` in the state (`{}` when there is none); its
/// run id is derived from the parent's run id and the item's journal path
/// (`"<parent>/<path>"`, or a hashed form past [`RunId::MAX_LEN`](crate::RunId::MAX_LEN)),
/// so a parent resumed after a crash attaches to the child it started instead of starting
/// another. The child's output goes into the state under `NAME`; a child that fails or is
/// cancelled fails the item (`options.optional` skips it). `options.timeout` bounds the wait
/// (the child is then cancelled and the item fails). There is no retry: the child's steps
/// have their own.
///
/// ```
/// use durable::{workflow, Data, StepError, Workflow};
/// use durable::definition::Node;
///
/// async fn charge_card(d: Data) -> Result<Data, StepError> { Ok(d.assign("paid", true)) }
/// async fn ship(d: Data) -> Result<Data, StepError> { Ok(d) }
///
/// workflow! { payment { step charge_card; } }
/// workflow! { order { call payment = payment; step ship; } }
///
/// let def = order.definition();
/// let Node::Call(call) = &def.nodes()[0] else { unreachable!() };
/// assert_eq!((call.name, call.workflow), ("payment", "payment"));
/// assert!(def.to_mermaid().contains(r#"payment[["call payment = payment"]]"#));
/// assert!(def.to_dot().contains(r#""payment" [shape=box3d, label="call payment = payment"];"#));
/// ```
#[non_exhaustive]
pub struct CallNode {
    /// The item's name: the state key of the child's input and output, and its journal path.
    pub name: &'static str,
    /// The child workflow's name ([`Workflow::NAME`]).
    pub workflow: &'static str,
    /// Builds the child workflow's definition (its fingerprint is the child run's).
    pub definition: fn() -> Definition,
    /// `timeout` (of the wait for the child) and `optional`; `retry` is not used.
    pub options: StepOptions,
}

/// `wait_for NAME(...)`: the run waits (suspended, holding nothing but its row) until a
/// signal named `NAME` is sent to it (see [`Engine::signal`](crate::Engine::signal)), taking
/// the oldest one not taken yet; the signal's payload goes into the state under `NAME`.
/// `options.timeout` bounds each attempt's wait: a timeout is a failed attempt, retried by
/// `options.retry` (each attempt waits anew) and skipped when `options.optional`.
#[non_exhaustive]
pub struct WaitNode {
    /// The signal's name, the key its payload lands under and the wait's journal path.
    pub name: &'static str,
    /// `retry`, `timeout` (of the wait) and `optional`.
    pub options: StepOptions,
}

/// `callback NAME = submit_fn(...)`: journals a fresh token, runs `submit` with it as a
/// step (retried by `options.retry`, each attempt with the same token), then waits for
/// [`Engine::complete_callback`](crate::Engine::complete_callback) (its payload goes into the
/// state under `NAME`) or [`fail_callback`](crate::Engine::fail_callback) (the item fails).
/// `options.timeout` bounds the wait; a timeout or a failed callback fails the item for
/// good (no retry: the token is good once), unless `options.optional`.
#[non_exhaustive]
pub struct CallbackNode {
    /// The callback's name, the key its payload lands under and its journal path.
    pub name: &'static str,
    /// The submit function's path as written, for the graph.
    pub submit_name: &'static str,
    /// The submit function.
    pub submit: crate::callback::ErasedSubmit,
    /// `retry` (of `submit`), `timeout` (of the wait) and `optional`.
    pub options: StepOptions,
}

/// A durable sleep (`sleep NAME(for = 10m);` or `sleep NAME(until = FIELD);`): the run
/// journals the absolute time it wakes (computed once), suspends, and goes on with its state
/// unchanged once that time has passed, in this process or the next one.
///
/// ```
/// use durable::{workflow, Data, StepError, Workflow};
/// use durable::definition::{Node, Wake};
/// use std::time::Duration;
///
/// async fn remind(d: Data) -> Result<Data, StepError> { Ok(d) }
///
/// workflow! { nudge { sleep wait_a_day(for = 24h); step remind; } }
///
/// let def = nudge.definition();
/// let Node::Sleep(sleep) = &def.nodes()[0] else { unreachable!() };
/// assert_eq!(sleep.wake, Wake::For(Duration::from_secs(86_400)));
/// assert!(def.to_mermaid().contains(r#"wait_a_day(["sleep wait_a_day<br/>for 86400s"])"#));
/// assert!(def.to_mermaid().contains("wait_a_day --> remind"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SleepNode {
    /// Its name, under which the journal records its wake time.
    pub name: &'static str,
    /// How long, or until when.
    pub wake: Wake,
}

/// When a [`SleepNode`] ends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Wake {
    /// This long after the sleep starts.
    For(Duration),
    /// At the time in this field of the state: a Unix timestamp in milliseconds (an integer)
    /// or an RFC 3339 date and time (a string such as `"2030-01-31T09:00:00Z"` or
    /// `"2030-01-31T10:00:00.5+01:00"`). A time already past ends the sleep at once.
    Until(&'static str),
}

/// A map block: its nodes run once per element of the state's array `over`, with the element
/// as their state; the batch result goes into the state under `name`.
#[non_exhaustive]
pub struct MapNode {
    /// The block's name: the state key of its batch result, and its items' journal prefix.
    pub name: &'static str,
    /// The state's field holding the array (empty when `items` is given).
    pub over: &'static str,
    /// A list written in the workflow itself, as JSON array text, instead of a state field.
    pub items: Option<&'static str>,
    /// Concurrency and completion policy.
    pub options: MapOptions,
    /// The nodes each item runs, in order.
    pub nodes: Vec<Node>,
    /// The items' type (`item = T`) when it is not `Data`: what the engine writes into an
    /// item's state is checked against it. See [`Node::with_item_state`].
    pub item_state: Option<StateType>,
}

/// How a map block runs its items, or a parallel block its branches, and decides it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MapOptions {
    /// The most items running at once; all of them when `None`.
    pub max_concurrency: Option<usize>,
    /// Done (completed) as soon as this many items succeeded.
    pub min_successful: Option<usize>,
    /// Done (failed) as soon as more items than this failed.
    pub tolerated_failures: Option<usize>,
    /// Done (failed) as soon as more than this percentage of all items failed.
    pub tolerated_failure_percentage: Option<f64>,
}

impl MapOptions {
    /// Whether a completion policy is given (`min_successful` or a tolerated failure count or
    /// percentage), as opposed to a concurrency limit alone.
    pub fn has_policy(&self) -> bool {
        self.min_successful.is_some()
            || self.tolerated_failures.is_some()
            || self.tolerated_failure_percentage.is_some()
    }
}

/// A named sequence: its nodes run one after another.
#[non_exhaustive]
pub struct SeqNode {
    /// The sequence's name, unique in its workflow (a dag's `after` can name it).
    pub name: &'static str,
    /// Its nodes, in order.
    pub nodes: Vec<Node>,
}

/// A dependency graph of nodes.
#[non_exhaustive]
pub struct DagNode {
    /// The nodes, in declaration order.
    pub nodes: Vec<Node>,
    /// For each node, the names of the nodes (in this dag) it comes after.
    pub after: Vec<Vec<&'static str>>,
}

/// A step: a named async function with its options.
#[non_exhaustive]
pub struct StepNode {
    /// The step's name, unique in its workflow; its journal entries are keyed by it.
    pub name: &'static str,
    /// The function, its state type erased.
    pub func: ErasedStep,
    /// Retries and the like.
    pub options: StepOptions,
}

/// A step's options.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// How a failing attempt is retried; one attempt by default.
    pub retry: RetryPolicy,
    /// How long one attempt may run before it is cancelled and counted as failed.
    pub timeout: Option<Duration>,
    /// Whether the workflow goes on without this step when it fails for good.
    pub optional: bool,
}

/// A parallel block.
#[non_exhaustive]
pub struct ParallelNode {
    /// `parallel NAME(...)`: the state key of its batch result and the journal key of its
    /// decision; `None` for an unnamed block, which stores neither.
    pub name: Option<&'static str>,
    /// How the branches' results combine.
    pub merge: Merge,
    /// What a failed branch does to the others, when no completion policy is given.
    pub on_error: OnError,
    /// How many branches run at once (in declaration order) and the completion policy, with
    /// a map's meaning; a policy needs a `name`.
    pub options: MapOptions,
    /// The branches, in declaration order.
    pub branches: Vec<Node>,
}

impl Definition {
    /// A definition with its fingerprint computed from the structure of `nodes`.
    pub fn new(name: &'static str, description: &'static str, nodes: Vec<Node>) -> Self {
        let mut canonical = String::new();
        for node in &nodes {
            node.describe(&mut canonical);
        }
        Self {
            name,
            description,
            fingerprint: format!("{:016x}", fnv1a(canonical.as_bytes())),
            nodes,
            state: None,
        }
    }

    /// The definition with its state type `S`: unless `S` is [`Data`](crate::Data), what
    /// the engine writes into the state (`parallel_results`, `parallel_errors`, a map's
    /// result) is checked to survive a round trip through `S`. [`EngineBuilder::register`]
    /// does this with the workflow's `State`; a hand-built definition whose steps take a
    /// typed state calls it itself.
    ///
    /// [`EngineBuilder::register`]: crate::EngineBuilder::register
    ///
    /// ```
    /// use durable::{Definition, Node};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Order {
    ///     id: u64,
    /// }
    ///
    /// let definition = Definition::new("checkout", "", Vec::<Node>::new()).with_state::<Order>();
    /// assert!(definition.state_type().is_some());
    /// ```
    pub fn with_state<S: State>(mut self) -> Self {
        self.state = StateType::of::<S>();
        self
    }

    /// The state type the engine checks its writes against; `None` for `Data`.
    pub fn state_type(&self) -> Option<StateType> {
        self.state
    }

    /// The workflow's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The workflow's doc comment.
    pub fn description(&self) -> &'static str {
        self.description
    }

    /// The top-level nodes, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A hash of the workflow's structure: step names, block kinds, nesting, order and merge
    /// strategies. Retry options, error strategies and the steps' code do not change it.
    /// A run resumes only under the fingerprint it started with.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The signals the workflow waits for (its `wait_for` items' names), depth first in
    /// declaration order, each once.
    ///
    /// ```
    /// use durable::{workflow, Data, StepError, Workflow};
    ///
    /// async fn prepare(d: Data) -> Result<Data, StepError> { Ok(d) }
    /// workflow! { review { step prepare; wait_for approved(timeout = 1h); } }
    ///
    /// assert_eq!(review.definition().signal_names(), ["approved"]);
    /// assert_eq!(review.definition().step_names(), ["prepare", "approved"]);
    /// ```
    pub fn signal_names(&self) -> Vec<&'static str> {
        fn walk(nodes: &[Node], names: &mut Vec<&'static str>) {
            for node in nodes {
                match node {
                    Node::Wait(wait) if !names.contains(&wait.name) => names.push(wait.name),
                    other => walk(other.children(), names),
                }
            }
        }
        let mut names = Vec::new();
        walk(&self.nodes, &mut names);
        names
    }

    /// Every step's name (`wait_for`, `callback` and `call` items' included), depth first in
    /// declaration order.
    pub fn step_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        fn walk(nodes: &[Node], names: &mut Vec<&'static str>) {
            for node in nodes {
                match node {
                    Node::Step(step) => names.push(step.name),
                    Node::Wait(wait) => names.push(wait.name),
                    Node::Callback(callback) => names.push(callback.name),
                    Node::Call(call) => names.push(call.name),
                    other => walk(other.children(), names),
                }
            }
        }
        walk(&self.nodes, &mut names);
        names
    }
}

impl Node {
    /// A step node.
    pub fn step(name: &'static str, func: ErasedStep, options: StepOptions) -> Self {
        Node::Step(StepNode {
            name,
            func,
            options,
        })
    }

    /// A parallel block.
    pub fn parallel(merge: Merge, on_error: OnError, branches: Vec<Node>) -> Self {
        Node::parallel_with(None, merge, on_error, MapOptions::default(), branches)
    }

    /// A parallel block with a name, a concurrency limit or a completion policy.
    ///
    /// # Panics
    ///
    /// When a completion policy is given without a name, which it needs to store its batch
    /// result and journal its decision: the `workflow!` macro reports this at compile time.
    pub fn parallel_with(
        name: Option<&'static str>,
        merge: Merge,
        on_error: OnError,
        options: MapOptions,
        branches: Vec<Node>,
    ) -> Self {
        assert!(
            name.is_some() || !options.has_policy(),
            "a parallel block with a completion policy needs a name"
        );
        Node::Parallel(ParallelNode {
            name,
            merge,
            on_error,
            options,
            branches,
        })
    }

    /// A map block over the state's array `over`.
    pub fn map(
        name: &'static str,
        over: &'static str,
        options: MapOptions,
        nodes: Vec<Node>,
    ) -> Self {
        Node::Map(MapNode {
            name,
            over,
            items: None,
            options,
            nodes,
            item_state: None,
        })
    }

    /// A map block over a list written in the workflow (`over = [1, 2, 3]`), as JSON array
    /// text.
    ///
    /// # Panics
    ///
    /// When `items` is not a JSON array: the `workflow!` macro only writes valid ones.
    pub fn map_items(
        name: &'static str,
        items: &'static str,
        options: MapOptions,
        nodes: Vec<Node>,
    ) -> Self {
        assert!(
            matches!(serde_json::from_str(items), Ok(serde_json::Value::Array(_))),
            "map `{name}`: its items must be a JSON array, not {items}"
        );
        Node::Map(MapNode {
            name,
            over: "",
            items: Some(items),
            options,
            nodes,
            item_state: None,
        })
    }

    /// A map block whose items' state is `T` (`item = T`): unless `T` is
    /// [`Data`](crate::Data), what the engine writes into an item's state is checked to
    /// survive a round trip through `T`. Other nodes are returned unchanged.
    ///
    /// ```
    /// use durable::definition::{MapOptions, Node};
    ///
    /// let map = Node::map_items("ping", r#"["eu", "us"]"#, MapOptions::default(), Vec::new())
    ///     .with_item_state::<String>();
    /// let Node::Map(map) = map else { unreachable!() };
    /// assert_eq!(map.item_state.map(|t| t.name()), Some("alloc::string::String"));
    /// ```
    pub fn with_item_state<T: State>(mut self) -> Self {
        if let Node::Map(map) = &mut self {
            map.item_state = StateType::of::<T>();
        }
        self
    }

    /// `wait_for name(...)`: see [`WaitNode`].
    pub fn wait_for(name: &'static str, options: StepOptions) -> Self {
        Node::Wait(WaitNode { name, options })
    }

    /// `call name = workflow(...)`: see [`CallNode`].
    pub fn call(
        name: &'static str,
        workflow: &'static str,
        definition: fn() -> Definition,
        options: StepOptions,
    ) -> Self {
        Node::Call(CallNode {
            name,
            workflow,
            definition,
            options,
        })
    }

    /// `callback name = submit(...)`: see [`CallbackNode`].
    pub fn callback(
        name: &'static str,
        submit_name: &'static str,
        submit: crate::callback::ErasedSubmit,
        options: StepOptions,
    ) -> Self {
        Node::Callback(CallbackNode {
            name,
            submit_name,
            submit,
            options,
        })
    }

    /// A durable sleep of `duration` (`sleep NAME(for = 10m);`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use durable::Node;
    ///
    /// let nap = Node::sleep_for("nap", Duration::from_secs(600));
    /// assert_eq!(nap.name(), "nap");
    /// ```
    pub fn sleep_for(name: &'static str, duration: Duration) -> Self {
        Node::Sleep(SleepNode {
            name,
            wake: Wake::For(duration),
        })
    }

    /// A durable sleep until the time in the state's `field` (`sleep NAME(until = FIELD);`):
    /// see [`Wake::Until`] for the forms it takes.
    ///
    /// ```
    /// use durable::Node;
    ///
    /// let wait = Node::sleep_until("until_due", "due_at");
    /// assert_eq!(wait.name(), "until_due");
    /// ```
    pub fn sleep_until(name: &'static str, field: &'static str) -> Self {
        Node::Sleep(SleepNode {
            name,
            wake: Wake::Until(field),
        })
    }

    /// A named sequence.
    pub fn seq(name: &'static str, nodes: Vec<Node>) -> Self {
        Node::Seq(SeqNode { name, nodes })
    }

    /// A dependency graph: each node with the names of the nodes it comes after.
    ///
    /// # Panics
    ///
    /// When an `after` names no node of this dag, the node itself, or closes a cycle: the
    /// `workflow!` macro reports these at compile time, so only hand-built definitions can.
    pub fn dag(entries: Vec<(Node, Vec<&'static str>)>) -> Self {
        let (nodes, after): (Vec<Node>, Vec<Vec<&'static str>>) = entries.into_iter().unzip();
        let names: Vec<&str> = nodes.iter().map(Node::name).collect();
        for (i, deps) in after.iter().enumerate() {
            for dep in deps {
                assert!(
                    names.contains(dep),
                    "dag node `{}` comes after unknown node `{dep}`",
                    names[i]
                );
                assert!(*dep != names[i], "dag node `{dep}` comes after itself");
            }
        }
        let dag = DagNode { nodes, after };
        assert!(
            dag.order().is_some(),
            "the dag's `after` lists form a cycle"
        );
        Node::Dag(dag)
    }

    /// The name the journal and error messages use for this node.
    pub fn name(&self) -> &'static str {
        match self {
            Node::Step(step) => step.name,
            Node::Seq(seq) => seq.name,
            Node::Map(map) => map.name,
            Node::Parallel(block) => block.name.unwrap_or("parallel"),
            Node::Dag(_) => "dag",
            Node::Sleep(sleep) => sleep.name,
            Node::Wait(wait) => wait.name,
            Node::Callback(callback) => callback.name,
            Node::Call(call) => call.name,
        }
    }

    /// The nodes directly inside this one.
    pub fn children(&self) -> &[Node] {
        match self {
            Node::Step(_) | Node::Sleep(_) | Node::Wait(_) | Node::Callback(_) | Node::Call(_) => {
                &[]
            }
            Node::Parallel(block) => &block.branches,
            Node::Seq(seq) => &seq.nodes,
            Node::Dag(dag) => &dag.nodes,
            Node::Map(map) => &map.nodes,
        }
    }

    /// Appends this node's canonical structure (what the fingerprint hashes).
    fn describe(&self, out: &mut String) {
        match self {
            Node::Step(step) => {
                let _ = write!(out, "step {};", step.name);
            }
            Node::Wait(wait) => {
                let _ = write!(out, "wait_for {};", wait.name);
            }
            Node::Callback(callback) => {
                let _ = write!(
                    out,
                    "callback {} = {};",
                    callback.name, callback.submit_name
                );
            }
            // The child's own structure is its runs' fingerprint, not the parent's.
            Node::Call(call) => {
                let _ = write!(out, "call {} = {};", call.name, call.workflow);
            }
            // Its duration or field is not hashed, like a step's options: a run asleep keeps
            // the wake time it journaled, whatever the definition says now.
            Node::Sleep(sleep) => {
                let _ = write!(out, "sleep {};", sleep.name);
            }
            Node::Parallel(block) => {
                match block.name {
                    Some(name) => write!(out, "parallel {name} {} {{", block.merge.as_str()),
                    None => write!(out, "parallel {} {{", block.merge.as_str()),
                }
                .ok();
                for branch in &block.branches {
                    branch.describe(out);
                }
                out.push('}');
            }
            Node::Seq(seq) => {
                let _ = write!(out, "seq {} {{", seq.name);
                for node in &seq.nodes {
                    node.describe(out);
                }
                out.push('}');
            }
            Node::Map(map) => {
                let _ = write!(
                    out,
                    "map {} over {}{} {{",
                    map.name,
                    map.over,
                    map.items.unwrap_or("")
                );
                for node in &map.nodes {
                    node.describe(out);
                }
                out.push('}');
            }
            Node::Dag(dag) => {
                out.push_str("dag {");
                for (node, after) in dag.nodes.iter().zip(&dag.after) {
                    let _ = write!(out, "after [{}] ", after.join(","));
                    node.describe(out);
                }
                out.push('}');
            }
        }
    }
}

impl DagNode {
    /// The indices of the nodes each node comes after.
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        let index = |name: &str| self.nodes.iter().position(|n| n.name() == name);
        self.after
            .iter()
            .map(|deps| deps.iter().filter_map(|d| index(d)).collect())
            .collect()
    }

    /// A topological order of the nodes, or `None` when the dependencies form a cycle.
    pub fn order(&self) -> Option<Vec<usize>> {
        let deps = self.dependencies();
        let mut done = vec![false; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        while order.len() < self.nodes.len() {
            let ready =
                (0..self.nodes.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))?;
            done[ready] = true;
            order.push(ready);
        }
        Some(order)
    }
}

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
