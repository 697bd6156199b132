//! The definition of a workflow: the tree of steps and blocks that `workflow!` builds.

use std::fmt::Write as _;

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
}

/// One element of a workflow's body.
pub enum Node {
    /// A single step.
    Step(StepNode),
    /// Branches that run concurrently from one snapshot of the state, then merge.
    Parallel(ParallelNode),
}

/// A step: a named async function with its options.
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
}

/// A parallel block.
pub struct ParallelNode {
    /// How the branches' results combine.
    pub merge: Merge,
    /// What a failed branch does to the others.
    pub on_error: OnError,
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
        }
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

    /// Every step's name, depth first in declaration order.
    pub fn step_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        fn walk(nodes: &[Node], names: &mut Vec<&'static str>) {
            for node in nodes {
                match node {
                    Node::Step(step) => names.push(step.name),
                    Node::Parallel(block) => walk(&block.branches, names),
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
        Node::Parallel(ParallelNode {
            merge,
            on_error,
            branches,
        })
    }

    /// The name the journal and error messages use for this node.
    pub fn name(&self) -> &'static str {
        match self {
            Node::Step(step) => step.name,
            Node::Parallel(_) => "parallel",
        }
    }

    /// Appends this node's canonical structure (what the fingerprint hashes).
    fn describe(&self, out: &mut String) {
        match self {
            Node::Step(step) => {
                let _ = write!(out, "step {};", step.name);
            }
            Node::Parallel(block) => {
                let _ = write!(out, "parallel {} {{", block.merge.as_str());
                for branch in &block.branches {
                    branch.describe(out);
                }
                out.push('}');
            }
        }
    }
}

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
