//! Definitions with `wait_for` and `callback`: their nodes, fingerprints and graph shapes.

use durable::callback::Callback;
use durable::{workflow, Data, Node, StepError, Workflow};

async fn prepare(data: Data) -> Result<Data, StepError> {
    Ok(data)
}

async fn request_payment(_callback: Callback, data: Data) -> Result<Data, StepError> {
    Ok(data)
}

workflow! {
    order {
        step prepare;
        wait_for approved(timeout = 1h, retry(max_attempts = 2), optional);
        callback paid = request_payment(timeout = 1d);
    }
}

workflow! {
    order_renamed_wait {
        step prepare;
        wait_for accepted(timeout = 1h, retry(max_attempts = 2), optional);
        callback paid = request_payment(timeout = 1d);
    }
}

workflow! {
    order_other_timeout {
        step prepare;
        wait_for approved(timeout = 2h);
        callback paid = request_payment(timeout = 2d);
    }
}

workflow! {
    order_as_steps {
        step prepare;
        step approved = prepare;
        step paid = prepare;
    }
}

#[test]
fn wait_and_callback_nodes_carry_their_options() {
    let def = order.definition();
    match &def.nodes()[1] {
        Node::Wait(wait) => {
            assert_eq!(wait.name, "approved");
            assert_eq!(
                wait.options.timeout,
                Some(std::time::Duration::from_secs(3600))
            );
            assert_eq!(wait.options.retry.max_attempts, 2);
            assert!(wait.options.optional);
        }
        _ => panic!("not a wait"),
    }
    match &def.nodes()[2] {
        Node::Callback(callback) => {
            assert_eq!(callback.name, "paid");
            assert_eq!(callback.submit_name, "request_payment");
            assert_eq!(
                callback.options.timeout,
                Some(std::time::Duration::from_secs(86_400))
            );
            assert!(!callback.options.optional);
        }
        _ => panic!("not a callback"),
    }
    assert_eq!(def.step_names(), ["prepare", "approved", "paid"]);
    assert_eq!(def.signal_names(), ["approved"]);
}

#[test]
fn the_fingerprint_follows_names_and_kinds_not_timeouts() {
    let fp = |def: durable::Definition| def.fingerprint().to_owned();
    let base = fp(order.definition());
    assert_ne!(base, fp(order_renamed_wait.definition()), "a renamed wait");
    assert_ne!(
        base,
        fp(order_as_steps.definition()),
        "steps of the same names"
    );
    // Like a step's options, a timeout does not change what the journal means.
    assert_eq!(base, fp(order_other_timeout.definition()));
}

#[test]
fn graphs_draw_waits_as_hexagons_and_callbacks_as_parallelograms() {
    let def = order.definition();
    let graph = def.graph();
    assert_eq!(graph.edges, [(0, 1), (1, 2)]);
    let mermaid = def.to_mermaid();
    assert_eq!(
        mermaid,
        "flowchart TD\n    prepare[\"prepare\"]\n    approved{{\"wait_for approved<br/>retry ×2<br/>timeout 3600s<br/>optional\"}}\n    paid[/\"callback paid = request_payment<br/>timeout 86400s\"/]\n    prepare --> approved\n    approved --> paid\n"
    );
    let dot = def.to_dot();
    assert!(
        dot.contains("\"approved\" [shape=hexagon, label=\"wait_for approved\\nretry ×2\\ntimeout 3600s\\noptional\"];"),
        "{dot}"
    );
    assert!(
        dot.contains("\"paid\" [shape=parallelogram, label=\"callback paid = request_payment\\ntimeout 86400s\"];"),
        "{dot}"
    );
}
