//! What `workflow!` builds: the definition of every DSL feature, checked without an engine.

use std::time::Duration;

use durable::{
    workflow, Backoff, Data, Definition, Merge, Node, OnError, RetryPolicy, StepContext, StepError,
    Workflow,
};
use serde::{Deserialize, Serialize};

async fn create_user(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

async fn send(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    let _ = ctx.attempt();
    Ok(data)
}

async fn a(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

async fn b(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

mod billing {
    use durable::{Data, StepError};

    pub async fn finish(data: Data) -> Result<Data, StepError> {
        Ok(data)
    }
}

workflow! {
    /// Onboards a user.
    ///
    ///   Indented lines keep all but one space.
    pub onboard_user {
        step create_user;
        step finish = billing::finish;
        step send(retry(max_attempts = 3, backoff = exponential, initial = 500ms,
                        multiplier = 2.0, max_interval = 60s, jitter = true));
        parallel(merge = last_wins, on_error = complete_all) {
            step a;
            step b(retry(max_attempts = 2));
        }
        parallel {
            step c(retry(max_attempts = 4, backoff = linear, initial = 1.5s, jitter)) = a;
            step d = b;
            parallel(merge = collect) {
                step e(retry(max_attempts = 5, backoff = constant, max_interval = 2m)) = a;
                step f(retry(max_attempts = 2, initial = 1h, multiplier = 3)) = billing::finish;
            }
        }
    }
}

// Structurally different from `onboard_user`.
workflow! {
    swapped {
        step create_user;
        step finish = billing::finish;
        step send;
        parallel(merge = last_wins) {
            step b;
            step a;
        }
    }
}

// The structure of `swapped` with other retry options and error strategy.
workflow! {
    swapped_retuned {
        step create_user(retry(max_attempts = 9));
        step finish = billing::finish;
        step send(retry(max_attempts = 2, jitter = false));
        parallel(merge = last_wins, on_error = complete_all) {
            step b;
            step a(retry(max_attempts = 3));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    paid: bool,
}

async fn pay(order: Order) -> Result<Order, StepError> {
    Ok(Order {
        paid: true,
        ..order
    })
}

async fn ship(_ctx: StepContext, order: Order) -> Result<Order, std::io::Error> {
    Ok(order)
}

workflow! {
    process_order(state = Order) {
        step pay;
        step ship;
    }
}

/// The node `name` refers to, searched depth first.
fn find<'a>(nodes: &'a [Node], name: &str) -> Option<&'a Node> {
    nodes.iter().find_map(|node| match node {
        Node::Step(step) if step.name == name => Some(node),
        Node::Step(_) => None,
        Node::Parallel(block) => find(&block.branches, name),
    })
}

fn retry_of(definition: &Definition, name: &str) -> RetryPolicy {
    match find(definition.nodes(), name) {
        Some(Node::Step(step)) => step.options.retry,
        _ => panic!("no step `{name}`"),
    }
}

/// The parallel blocks, depth first, as `(merge, on_error, branch names)`.
fn blocks(nodes: &[Node]) -> Vec<(Merge, OnError, Vec<&'static str>)> {
    let mut out = Vec::new();
    for node in nodes {
        if let Node::Parallel(p) = node {
            out.push((
                p.merge,
                p.on_error,
                p.branches.iter().map(Node::name).collect(),
            ));
            out.extend(blocks(&p.branches));
        }
    }
    out
}

#[test]
fn name_description_and_steps() {
    let definition = onboard_user.definition();
    assert_eq!(definition.name(), "onboard_user");
    assert_eq!(<onboard_user as Workflow>::NAME, "onboard_user");
    assert_eq!(
        definition.description(),
        "Onboards a user.\n\n  Indented lines keep all but one space."
    );
    assert_eq!(
        definition.step_names(),
        [
            "create_user",
            "finish",
            "send",
            "a",
            "b",
            "c",
            "d",
            "e",
            "f"
        ]
    );
    assert_eq!(swapped.definition().description(), "");
}

#[test]
fn retry_options_become_the_policy() {
    let definition = onboard_user.definition();
    let ms = Duration::from_millis;
    assert_eq!(retry_of(&definition, "create_user"), RetryPolicy::default());
    assert_eq!(
        retry_of(&definition, "send"),
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial: ms(500),
            multiplier: 2.0,
            max_interval: ms(60_000),
            jitter: true,
        }
    );
    assert_eq!(retry_of(&definition, "b"), RetryPolicy::new(2));
    assert_eq!(
        retry_of(&definition, "c"),
        RetryPolicy::new(4)
            .backoff(Backoff::Linear)
            .initial(ms(1_500))
            .jitter(true)
    );
    assert_eq!(
        retry_of(&definition, "e"),
        RetryPolicy::new(5)
            .backoff(Backoff::Constant)
            .max_interval(ms(120_000))
    );
    assert_eq!(
        retry_of(&definition, "f"),
        RetryPolicy::new(2).initial(ms(3_600_000)).multiplier(3.0)
    );
}

#[test]
fn parallel_options_and_defaults() {
    let definition = onboard_user.definition();
    assert_eq!(
        blocks(definition.nodes()),
        [
            (Merge::LastWins, OnError::CompleteAll, vec!["a", "b"]),
            (
                Merge::DeepMerge,
                OnError::FailFast,
                vec!["c", "d", "parallel"]
            ),
            (Merge::Collect, OnError::FailFast, vec!["e", "f"]),
        ]
    );
}

#[test]
fn fingerprint_is_stable_and_follows_structure() {
    let first = onboard_user.definition();
    assert_eq!(first.fingerprint(), onboard_user.definition().fingerprint());
    assert_eq!(first.fingerprint().len(), 16);
    assert_ne!(first.fingerprint(), swapped.definition().fingerprint());
    // Retries and error strategies are not structure: a run may resume after they change.
    assert_eq!(
        swapped.definition().fingerprint(),
        swapped_retuned.definition().fingerprint()
    );
    assert_ne!(
        process_order.definition().fingerprint(),
        swapped.definition().fingerprint()
    );
}

#[test]
fn typed_state() {
    fn state_of<W: Workflow>(_: W) -> std::any::TypeId {
        std::any::TypeId::of::<W::State>()
    }
    assert_eq!(state_of(process_order), std::any::TypeId::of::<Order>());
    assert_eq!(state_of(onboard_user), std::any::TypeId::of::<Data>());
    assert_eq!(<process_order as Workflow>::NAME, "process_order");
    assert_eq!(process_order.definition().step_names(), ["pay", "ship"]);
}
