//! What `workflow!` builds: the definition of every DSL feature, checked without an engine.

use std::time::Duration;

use durable::definition::MapOptions;
use durable::{
    workflow, Backoff, Data, Definition, Merge, Node, OnError, RetryPolicy, StepContext, StepError,
    StepOptions, Workflow,
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
    /// The result of `batch_flow`'s map `lines`, which runs inside orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lines: Option<durable::batch::BatchResult<durable::Data>>,
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

workflow! {
    /// Packs, bills and ships, with workflow-wide retries.
    shipping_flow(retry(max_attempts = 3, backoff = constant, initial = 2s)) {
        step create_user;
        dag {
            step pack = a;
            step bill(after = []) = b;
            step ship(after = [pack], timeout = 5s) = a;
            seq notify(after = [ship, bill]) {
                step email(optional, retry(max_attempts = 5, jitter)) = a;
                step sms(optional = false, timeout = 1.5s, retry(initial = 500ms)) = b;
            }
            parallel(after = [pack], merge = last_wins) {
                step audit = a;
                dag {
                    step x = a;
                    step y(after = [x]) = b;
                }
            }
        }
        seq wrap_up {
            parallel {
                seq left {
                    step l1 = a;
                    step l2 = b;
                }
                step right = a;
            }
            step finish = billing::finish;
        }
    }
}

// A small dag, then the same with other step options, and with one `after` edge moved.
workflow! {
    fan {
        dag {
            step a;
            step b(after = [a]);
            step c(after = [a], timeout = 5s, optional, retry(max_attempts = 2)) = a;
        }
    }
}

workflow! {
    fan_retuned(retry(max_attempts = 4, jitter)) {
        dag {
            step a(timeout = 1s, optional);
            step b(after = [a], retry(backoff = linear));
            step c(after = [a]) = a;
        }
    }
}

workflow! {
    fan_rewired {
        dag {
            step a;
            step b(after = [a]);
            step c(after = [b]) = a;
        }
    }
}

workflow! {
    typed_retry(state = Order, retry(max_attempts = 2)) {
        step pay;
        step ship(retry(max_attempts = 1));
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Part {
    sku: String,
}

async fn check_part(part: Part) -> Result<Part, StepError> {
    Ok(part)
}

async fn check_part_with_ctx(_ctx: StepContext, part: Part) -> Result<Part, std::io::Error> {
    Ok(part)
}

workflow! {
    /// Maps over items, with nested, typed and dag-node maps.
    batch_flow {
        step create_user;
        map process_items(over = items, max_concurrency = 3, min_successful = 4,
                          tolerated_failures = 1, tolerated_failure_percentage = 10) {
            step process_item = a;
            map parts(over = parts, item = Part, max_concurrency = 1,
                      tolerated_failure_percentage = 12.5) {
                step check_part;
                parallel {
                    step check_again = check_part;
                    seq deeper {
                        step check_ctx = check_part_with_ctx;
                    }
                }
            }
            parallel {
                step p1 = a;
                step p2 = b;
            }
        }
        map orders(over = r#type, item = Order) {
            step pay;
            dag {
                step ship_order = ship;
                map lines(over = lines, after = [ship_order]) {
                    step line = a;
                }
            }
        }
        dag {
            step pack = a;
            map ship_all(over = shipments, after = [pack], min_successful = 1) {
                step ship_one = b;
            }
            step notify(after = [ship_all]) = a;
        }
    }
}

// A map, then the same with other options, another `over`, another name.
workflow! {
    map_base {
        map each(over = items, max_concurrency = 2) {
            step a;
        }
    }
}

workflow! {
    map_retuned {
        map each(over = items, max_concurrency = 5, min_successful = 1, tolerated_failures = 0,
                 tolerated_failure_percentage = 50.0) {
            step a;
        }
    }
}

workflow! {
    map_reover {
        map each(over = others, max_concurrency = 2) {
            step a;
        }
    }
}

workflow! {
    map_renamed {
        map every(over = items, max_concurrency = 2) {
            step a;
        }
    }
}

async fn number(n: i64) -> Result<i64, StepError> {
    Ok(n)
}

async fn word(text: String) -> Result<String, StepError> {
    Ok(text)
}

async fn anything(value: serde_json::Value) -> Result<serde_json::Value, StepError> {
    Ok(value)
}

async fn flag(on: bool) -> Result<bool, StepError> {
    Ok(on)
}

// Maps over lists written in the workflow: numbers, escaped strings, mixed literals, and one
// in a dag.
workflow! {
    literal_maps {
        map numbers(over = [1, 2, 3], item = i64, min_successful = 3, tolerated_failures = 5) {
            step number;
        }
        map words(over = ["a\"b", "c"], item = String) {
            step word;
        }
        map mixed(over = [-1, 2.5, 1.0, -0.5, true, "tab\there\\", r"C:\x", 0x1F, "é",],
                  item = serde_json::Value) {
            step anything;
        }
        dag {
            step start = a;
            map flags(over = [true], item = bool, after = [start]) {
                step flag;
            }
        }
    }
}

// The same list as `literal_maps`' first map, another list, and a field instead.
workflow! {
    literal_base {
        map each(over = [1, 2, 3], item = i64) {
            step number;
        }
    }
}

workflow! {
    literal_retuned {
        map each(over = [1, 2, 3], item = i64, max_concurrency = 1, min_successful = 2) {
            step number;
        }
    }
}

workflow! {
    literal_other {
        map each(over = [1, 2, 4], item = i64) {
            step number;
        }
    }
}

workflow! {
    literal_field {
        map each(over = items, item = i64) {
            step number;
        }
    }
}

/// The node `name` refers to (a step, a seq or a map), searched depth first.
fn find<'a>(nodes: &'a [Node], name: &str) -> Option<&'a Node> {
    nodes.iter().find_map(|node| match node {
        Node::Step(step) if step.name == name => Some(node),
        Node::Seq(seq) if seq.name == name => Some(node),
        Node::Map(map) if map.name == name => Some(node),
        other => find(other.children(), name),
    })
}

fn options_of(definition: &Definition, name: &str) -> StepOptions {
    match find(definition.nodes(), name) {
        Some(Node::Step(step)) => step.options.clone(),
        _ => panic!("no step `{name}`"),
    }
}

fn retry_of(definition: &Definition, name: &str) -> RetryPolicy {
    options_of(definition, name).retry
}

fn names(nodes: &[Node]) -> Vec<&'static str> {
    nodes.iter().map(Node::name).collect()
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

#[test]
fn dags_and_seqs_keep_their_shape() {
    let definition = shipping_flow.definition();
    assert_eq!(names(definition.nodes()), ["create_user", "dag", "wrap_up"]);
    let Node::Dag(dag) = &definition.nodes()[1] else {
        panic!("the second node is not a dag");
    };
    assert_eq!(
        names(&dag.nodes),
        ["pack", "bill", "ship", "notify", "parallel"]
    );
    let no_deps: Vec<&str> = Vec::new();
    assert_eq!(
        dag.after,
        [
            no_deps.clone(),
            no_deps.clone(),
            vec!["pack"],
            vec!["ship", "bill"],
            vec!["pack"],
        ]
    );
    let Node::Seq(notify) = &dag.nodes[3] else {
        panic!("`notify` is not a seq");
    };
    assert_eq!(notify.name, "notify");
    assert_eq!(names(&notify.nodes), ["email", "sms"]);
    let Node::Parallel(block) = &dag.nodes[4] else {
        panic!("the dag's last node is not a parallel block");
    };
    assert_eq!(block.merge, Merge::LastWins);
    assert_eq!(names(&block.branches), ["audit", "dag"]);
    let Node::Dag(inner) = &block.branches[1] else {
        panic!("the block's second branch is not a dag");
    };
    assert_eq!(names(&inner.nodes), ["x", "y"]);
    assert_eq!(inner.after, [no_deps, vec!["x"]]);

    let Some(Node::Seq(wrap_up)) = find(definition.nodes(), "wrap_up") else {
        panic!("no seq `wrap_up`");
    };
    assert_eq!(names(&wrap_up.nodes), ["parallel", "finish"]);
    let Some(Node::Seq(left)) = find(definition.nodes(), "left") else {
        panic!("no seq `left`");
    };
    assert_eq!(names(&left.nodes), ["l1", "l2"]);
    assert_eq!(
        definition.step_names(),
        [
            "create_user",
            "pack",
            "bill",
            "ship",
            "email",
            "sms",
            "audit",
            "x",
            "y",
            "l1",
            "l2",
            "right",
            "finish"
        ]
    );
}

#[test]
fn timeout_and_optional() {
    let definition = shipping_flow.definition();
    let ship = options_of(&definition, "ship");
    assert_eq!(ship.timeout, Some(Duration::from_secs(5)));
    assert!(!ship.optional);
    let email = options_of(&definition, "email");
    assert_eq!(email.timeout, None);
    assert!(email.optional);
    let sms = options_of(&definition, "sms");
    assert_eq!(sms.timeout, Some(Duration::from_millis(1_500)));
    assert!(!sms.optional);
    let c = options_of(&fan.definition(), "c");
    assert_eq!(c.timeout, Some(Duration::from_secs(5)));
    assert!(c.optional);
    assert_eq!(c.retry, RetryPolicy::new(2));
    // Neither option given: the runtime's defaults.
    let plain = options_of(&onboard_user.definition(), "create_user");
    assert_eq!(plain.timeout, None);
    assert!(!plain.optional);
}

#[test]
fn workflow_retry_is_every_steps_default_field_by_field() {
    let definition = shipping_flow.definition();
    let default = RetryPolicy::new(3)
        .backoff(Backoff::Constant)
        .initial(Duration::from_secs(2));
    // No `retry(...)` of its own: the workflow's.
    for step in ["create_user", "pack", "ship", "x", "finish"] {
        assert_eq!(retry_of(&definition, step), default, "step `{step}`");
    }
    // Its own fields first, then the workflow's, then `RetryPolicy::default()`'s.
    assert_eq!(
        retry_of(&definition, "email"),
        RetryPolicy::new(5)
            .backoff(Backoff::Constant)
            .initial(Duration::from_secs(2))
            .jitter(true)
    );
    assert_eq!(
        retry_of(&definition, "sms"),
        RetryPolicy::new(3)
            .backoff(Backoff::Constant)
            .initial(Duration::from_millis(500))
    );
    let retuned = fan_retuned.definition();
    assert_eq!(retry_of(&retuned, "a"), RetryPolicy::new(4).jitter(true));
    assert_eq!(
        retry_of(&retuned, "b"),
        RetryPolicy::new(4).jitter(true).backoff(Backoff::Linear)
    );
    // With `state = T` too.
    let typed = typed_retry.definition();
    assert_eq!(retry_of(&typed, "pay"), RetryPolicy::new(2));
    assert_eq!(retry_of(&typed, "ship"), RetryPolicy::new(1));
}

#[test]
fn fingerprint_follows_after_edges_not_step_options() {
    let first = fan.definition();
    assert_eq!(first.fingerprint(), fan.definition().fingerprint());
    // Other retries, timeouts and `optional`: the same structure.
    assert_eq!(first.fingerprint(), fan_retuned.definition().fingerprint());
    // One `after` edge moved: another structure.
    assert_ne!(first.fingerprint(), fan_rewired.definition().fingerprint());
    assert_ne!(
        shipping_flow.definition().fingerprint(),
        first.fingerprint()
    );
}

fn map_named<'a>(definition: &'a Definition, name: &str) -> &'a durable::definition::MapNode {
    match find(definition.nodes(), name) {
        Some(Node::Map(map)) => map,
        _ => panic!("no map `{name}`"),
    }
}

#[test]
fn map_name_over_and_options() {
    let definition = batch_flow.definition();
    assert_eq!(
        names(definition.nodes()),
        ["create_user", "process_items", "orders", "dag"]
    );
    let Node::Map(map) = &definition.nodes()[1] else {
        panic!("the second node is not a map");
    };
    assert_eq!(map.name, "process_items");
    assert_eq!(map.over, "items");
    assert_eq!(
        map.options,
        MapOptions {
            max_concurrency: Some(3),
            min_successful: Some(4),
            tolerated_failures: Some(1),
            tolerated_failure_percentage: Some(10.0),
        }
    );
    assert_eq!(names(&map.nodes), ["process_item", "parts", "parallel"]);
    // A raw identifier names the field without its `r#`.
    let orders = map_named(&definition, "orders");
    assert_eq!(orders.over, "type");
    // No options: the runtime's defaults.
    assert_eq!(orders.options, MapOptions::default());
    assert_eq!(
        definition.step_names(),
        [
            "create_user",
            "process_item",
            "check_part",
            "check_again",
            "check_ctx",
            "p1",
            "p2",
            "pay",
            "ship_order",
            "line",
            "pack",
            "ship_one",
            "notify"
        ]
    );
}

#[test]
fn maps_nest() {
    let definition = batch_flow.definition();
    let outer = map_named(&definition, "process_items");
    let Node::Map(parts) = &outer.nodes[1] else {
        panic!("the outer map's second node is not a map");
    };
    assert_eq!(parts.name, "parts");
    assert_eq!(parts.over, "parts");
    assert_eq!(
        parts.options,
        MapOptions {
            max_concurrency: Some(1),
            tolerated_failure_percentage: Some(12.5),
            ..MapOptions::default()
        }
    );
    assert_eq!(names(&parts.nodes), ["check_part", "parallel"]);
    let Node::Parallel(block) = &parts.nodes[1] else {
        panic!("no parallel block in map `parts`");
    };
    assert_eq!(names(&block.branches), ["check_again", "deeper"]);
    // A map inside a typed map's dag: its steps take `Data` again, not the outer item type.
    let lines = map_named(&definition, "lines");
    assert_eq!(lines.over, "lines");
    assert_eq!(names(&lines.nodes), ["line"]);
}

#[test]
fn maps_are_dag_nodes() {
    let definition = batch_flow.definition();
    let Node::Dag(dag) = &definition.nodes()[3] else {
        panic!("the last node is not a dag");
    };
    assert_eq!(names(&dag.nodes), ["pack", "ship_all", "notify"]);
    let no_deps: Vec<&str> = Vec::new();
    assert_eq!(dag.after, [no_deps, vec!["pack"], vec!["ship_all"]]);
    let Node::Map(ship_all) = &dag.nodes[1] else {
        panic!("`ship_all` is not a map");
    };
    assert_eq!(ship_all.over, "shipments");
    assert_eq!(ship_all.options.min_successful, Some(1));
    assert_eq!(dag.order(), Some(vec![0, 1, 2]));
    // A map inside a typed map's dag, after one of its steps.
    let orders = map_named(&definition, "orders");
    let Node::Dag(inner) = &orders.nodes[1] else {
        panic!("map `orders` has no dag");
    };
    assert_eq!(names(&inner.nodes), ["ship_order", "lines"]);
    assert_eq!(inner.after[1], ["ship_order"]);
}

#[test]
fn fingerprint_follows_map_name_and_over_not_options() {
    let base = map_base.definition();
    assert_eq!(base.fingerprint(), map_base.definition().fingerprint());
    // Concurrency and completion policy are not structure.
    assert_eq!(base.fingerprint(), map_retuned.definition().fingerprint());
    // Another array, or another name (the journal prefix of the items): another structure.
    assert_ne!(base.fingerprint(), map_reover.definition().fingerprint());
    assert_ne!(base.fingerprint(), map_renamed.definition().fingerprint());
    assert_ne!(
        map_reover.definition().fingerprint(),
        map_renamed.definition().fingerprint()
    );
}

#[test]
fn literal_maps_carry_their_items_as_json() {
    let definition = literal_maps.definition();
    assert_eq!(
        names(definition.nodes()),
        ["numbers", "words", "mixed", "dag"]
    );
    let Node::Map(m) = &definition.nodes()[0] else {
        panic!("the first node is not a map");
    };
    assert_eq!(m.name, "numbers");
    assert_eq!(m.items, Some("[1,2,3]"));
    assert_eq!(m.over, "");
    assert_eq!(
        m.options,
        MapOptions {
            min_successful: Some(3),
            tolerated_failures: Some(5),
            ..MapOptions::default()
        }
    );
    assert_eq!(names(&m.nodes), ["number"]);
    // Quotes and backslashes are escaped.
    let words = map_named(&definition, "words");
    assert_eq!(words.items, Some(r#"["a\"b","c"]"#));
    assert_eq!(words.over, "");
    // Negative numbers, floats keeping their fraction, bools, escaped control characters,
    // raw strings, hex integers in decimal, a trailing comma, non-ASCII text as is.
    let mixed = map_named(&definition, "mixed");
    assert_eq!(
        mixed.items,
        Some(r#"[-1,2.5,1.0,-0.5,true,"tab\u0009here\\","C:\\x",31,"é"]"#)
    );
    let parsed: serde_json::Value = serde_json::from_str(mixed.items.unwrap()).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!([-1, 2.5, 1.0, -0.5, true, "tab\there\\", "C:\\x", 31, "é"])
    );
    // A literal map is a dag node like any other.
    let flags = map_named(&definition, "flags");
    assert_eq!(flags.items, Some("[true]"));
    let Node::Dag(dag) = &definition.nodes()[3] else {
        panic!("the last node is not a dag");
    };
    assert_eq!(dag.after[1], ["start"]);
    // A map over a state field has no items.
    assert_eq!(map_named(&batch_flow.definition(), "orders").items, None);
}

#[test]
fn fingerprint_follows_literal_items_not_options() {
    let base = literal_base.definition();
    assert_eq!(base.fingerprint(), literal_base.definition().fingerprint());
    assert_eq!(
        base.fingerprint(),
        literal_retuned.definition().fingerprint()
    );
    assert_ne!(base.fingerprint(), literal_other.definition().fingerprint());
    assert_ne!(base.fingerprint(), literal_field.definition().fingerprint());
}
