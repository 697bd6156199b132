//! Typed states (`state = T`, a map's `item = T`): what the engine writes into the state (a
//! collect block's `parallel_results`, optional failures under `parallel_errors`, a map's
//! batch result) reaches the next step and the run's output, and a state type that would drop
//! it stops the run with an error naming the block instead of completing without it.

use std::collections::HashMap;

use durable::batch::{BatchResult, BatchStatus};
use durable::definition::{MapOptions, StepOptions};
use durable::step::erase;
use durable::{
    workflow, Data, Definition, Engine, Error, Merge, Node, OnError, StepContext, StepError,
    StepEvent, Workflow,
};
use durable_tests::{
    count, each_store, in_runtime, note, run_to_end, wait_for_handle, wait_for_run,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    #[serde(default)]
    charged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    #[serde(default)]
    lines: Vec<Line>,
    #[serde(default)]
    total: u32,
    /// What the steps after a block saw of what it wrote.
    #[serde(default)]
    seen: Vec<String>,
    parallel_results: Option<Value>,
    parallel_errors: Option<HashMap<String, String>>,
    charge: Option<BatchResult<Line>>,
}

fn order() -> Order {
    Order {
        id: 7,
        lines: vec![
            Line {
                sku: "a".into(),
                qty: 1,
                charged: false,
            },
            Line {
                sku: "b".into(),
                qty: 2,
                charged: false,
            },
        ],
        ..Order::default()
    }
}

async fn price(ctx: StepContext, order: Order) -> Result<Order, StepError> {
    note(&ctx, ctx.step());
    Ok(Order {
        total: 100,
        ..order
    })
}

async fn tax(ctx: StepContext, order: Order) -> Result<Order, StepError> {
    note(&ctx, ctx.step());
    Ok(Order { total: 20, ..order })
}

async fn mark(ctx: StepContext, mut order: Order) -> Result<Order, StepError> {
    note(&ctx, ctx.step());
    order.seen.push(ctx.step().to_owned());
    Ok(order)
}

async fn fails(ctx: StepContext, _order: Order) -> Result<Order, StepError> {
    note(&ctx, ctx.step());
    Err(StepError::terminal(format!("{} is down", ctx.step())))
}

/// Reads back, as a typed step, what the blocks before it wrote.
async fn read_back(ctx: StepContext, mut order: Order) -> Result<Order, StepError> {
    note(&ctx, ctx.step());
    if let Some(results) = &order.parallel_results {
        for (step, changes) in results.as_object().into_iter().flatten() {
            order
                .seen
                .push(format!("{step} total {}", changes["total"]));
        }
    }
    let mut errors: Vec<_> = order.parallel_errors.iter().flatten().collect();
    errors.sort();
    for (step, error) in errors {
        order.seen.push(format!("{step} failed: {error}"));
    }
    if let Some(batch) = &order.charge {
        let charged = batch.get_results().iter().filter(|l| l.charged).count();
        order.seen.push(format!("{charged} lines charged"));
    }
    Ok(order)
}

async fn charge_line(ctx: StepContext, line: Line) -> Result<Line, StepError> {
    note(&ctx, ctx.step());
    Ok(Line {
        charged: true,
        ..line
    })
}

workflow! {
    collect_typed(state = Order) {
        parallel(merge = collect) {
            step price;
            step tax;
        }
        step read_back;
    }
}

workflow! {
    map_typed(state = Order) {
        map charge(over = lines, item = Line) {
            step charge_line;
        }
        step read_back;
    }
}

workflow! {
    optional_in_parallel_typed(state = Order) {
        parallel(on_error = complete_all) {
            step sms(optional) = fails;
            step push = mark;
        }
        step read_back;
    }
}

workflow! {
    optional_in_dag_typed(state = Order) {
        dag {
            step pack = mark;
            step email(after = [pack], optional) = fails;
            step ship(after = [pack]) = mark;
        }
        step read_back;
    }
}

async fn fails_data(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    Err(StepError::terminal(format!("{} is down", ctx.step())))
}

async fn pack_data(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("packed", true))
}

workflow! {
    optional_in_dag_data {
        dag {
            step pack = pack_data;
            step email(after = [pack], optional) = fails_data;
        }
    }
}

/// The same workflow twice: `broken::Order` has the field but serde skips it, `fixed::Order`
/// keeps it. Same name and structure, so the same fingerprint: a run started under one
/// resumes under the other.
macro_rules! keep_results {
    ($module:ident, $($skip:tt)*) => {
        mod $module {
            use super::*;

            #[derive(Debug, Default, Serialize, Deserialize)]
            pub struct Order {
                pub id: u64,
                #[serde(default)]
                pub total: u32,
                $($skip)*
                pub parallel_results: Option<Value>,
            }

            pub async fn price(ctx: StepContext, order: Order) -> Result<Order, StepError> {
                note(&ctx, ctx.step());
                Ok(Order { total: 100, ..order })
            }

            pub async fn tax(ctx: StepContext, order: Order) -> Result<Order, StepError> {
                note(&ctx, ctx.step());
                Ok(Order { total: 20, ..order })
            }

            pub async fn done(ctx: StepContext, order: Order) -> Result<Order, StepError> {
                note(&ctx, ctx.step());
                Ok(order)
            }

            workflow! {
                pub keep_results(state = Order) {
                    parallel(merge = collect) {
                        step price;
                        step tax;
                    }
                    step done;
                }
            }
        }
    };
}

keep_results!(broken, #[serde(skip)]);
keep_results!(fixed,);

/// A named parallel block with a policy in a typed state: its batch result is kept when the
/// type has the field, and stops the run, naming the block, when serde skips it.
macro_rules! quotes {
    ($module:ident, $($skip:tt)*) => {
        mod $module {
            use super::*;

            #[derive(Debug, Default, Serialize, Deserialize)]
            pub struct Quote {
                #[serde(default)]
                pub price: u32,
                $($skip)*
                pub quotes: Option<BatchResult<Value>>,
            }

            pub async fn cheap(ctx: StepContext, quote: Quote) -> Result<Quote, StepError> {
                note(&ctx, ctx.step());
                Ok(Quote { price: 10, ..quote })
            }

            pub async fn down(ctx: StepContext, _quote: Quote) -> Result<Quote, StepError> {
                note(&ctx, ctx.step());
                Err(StepError::terminal("supplier down"))
            }

            workflow! {
                pub quoting(state = Quote) {
                    parallel quotes(min_successful = 1, max_concurrency = 1) {
                        step down;
                        step cheap;
                    }
                }
            }
        }
    };
}

quotes!(quotes_broken, #[serde(skip)]);
quotes!(quotes_fixed,);

/// A state without the map's field, past the macro's check: a hand-written `Workflow`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Bare {
    lines: Vec<Line>,
}

async fn bare_done(ctx: StepContext, bare: Bare) -> Result<Bare, StepError> {
    note(&ctx, ctx.step());
    Ok(bare)
}

#[allow(non_camel_case_types)]
struct handmade;

impl Workflow for handmade {
    type State = Bare;
    const NAME: &'static str = "handmade";

    fn definition(&self) -> Definition {
        let item = Node::step(
            "charge_line",
            erase::<Line, _, _>(charge_line),
            Default::default(),
        );
        Definition::new(
            "handmade",
            "",
            vec![
                Node::map("charge", "lines", MapOptions::default(), vec![item])
                    .with_item_state::<Line>(),
                Node::step(
                    "bare_done",
                    erase::<Bare, _, _>(bare_done),
                    StepOptions::default(),
                ),
            ],
        )
    }
}

/// Inside a map over typed items, a collect block writes into each item's state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Item {
    n: u32,
}

async fn item_step(item: Item) -> Result<Item, StepError> {
    Ok(Item { n: item.n + 1 })
}

#[allow(non_camel_case_types)]
struct handmade_items;

impl Workflow for handmade_items {
    type State = Data;
    const NAME: &'static str = "handmade_items";

    fn definition(&self) -> Definition {
        let collect = Node::parallel(
            Merge::Collect,
            OnError::FailFast,
            vec![Node::step(
                "bump",
                erase::<Item, _, _>(item_step),
                StepOptions::default(),
            )],
        );
        Definition::new(
            "handmade_items",
            "",
            vec![Node::map_items(
                "each",
                r#"[{"n": 1}]"#,
                MapOptions::default(),
                vec![collect],
            )
            .with_item_state::<Item>()],
        )
    }
}

/// A `parallel_results` field narrower than what collect writes (past the macro's check).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Narrow {
    total: u32,
    note: String,
    parallel_results: Option<HashMap<String, Slim>>,
}

/// Keeps a branch's `total` and drops its `note`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Slim {
    total: u32,
}

async fn narrow_branch(narrow: Narrow) -> Result<Narrow, StepError> {
    Ok(Narrow {
        total: 5,
        note: "kept?".into(),
        ..narrow
    })
}

#[allow(non_camel_case_types)]
struct handmade_narrow;

impl Workflow for handmade_narrow {
    type State = Narrow;
    const NAME: &'static str = "handmade_narrow";

    fn definition(&self) -> Definition {
        let branch = Node::step(
            "branch",
            erase::<Narrow, _, _>(narrow_branch),
            StepOptions::default(),
        );
        Definition::new(
            "handmade_narrow",
            "",
            vec![Node::parallel(
                Merge::Collect,
                OnError::FailFast,
                vec![branch],
            )],
        )
    }
}

async fn collect_data(data: Data) -> Result<Data, StepError> {
    Ok(data.assign("n", 1))
}

// `Data` written out is still `Data`: no field is required.
workflow! {
    explicit_data(state = durable::Data) {
        parallel(merge = collect) {
            step collect_data;
        }
        map each(over = [1], item = i64) {
            step same_number;
        }
    }
}

async fn same_number(n: i64) -> Result<i64, StepError> {
    Ok(n)
}

each_store! {
    fn collect_results_reach_the_next_step_and_the_output(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(collect_typed).build().await.unwrap();
            let out = run_to_end(&engine, collect_typed, order()).await.unwrap();
            assert_eq!(out.parallel_results, Some(json!({"price": {"total": 100}, "tax": {"total": 20}})));
            assert_eq!(out.total, 0, "collect keeps the snapshot");
            assert_eq!(out.seen, ["price total 100", "tax total 20"]);
        });
    }

    fn a_maps_batch_result_reaches_the_next_step_and_the_output(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(map_typed).build().await.unwrap();
            let out = run_to_end(&engine, map_typed, order()).await.unwrap();
            let batch = out.charge.expect("the map's result is in the state");
            assert_eq!(batch.status, BatchStatus::Completed);
            let skus: Vec<_> = batch.get_results().iter().map(|l| (l.sku.as_str(), l.charged)).collect();
            assert_eq!(skus, [("a", true), ("b", true)]);
            assert_eq!(out.seen, ["2 lines charged"]);
        });
    }

    fn an_optional_failure_in_a_parallel_block_reaches_the_next_step(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(optional_in_parallel_typed).build().await.unwrap();
            let out = run_to_end(&engine, optional_in_parallel_typed, order()).await.unwrap();
            let errors = out.parallel_errors.expect("the failure is in the state");
            assert_eq!(errors, HashMap::from([("sms".to_owned(), "sms is down".to_owned())]));
            assert_eq!(out.seen, ["push", "sms failed: sms is down"]);
        });
    }

    fn an_optional_failure_in_a_dag_is_recorded_under_parallel_errors(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(optional_in_dag_typed).build().await.unwrap();
            let run = engine.start(optional_in_dag_typed, order()).await.unwrap();
            let out = wait_for_handle(&engine, &run).await.unwrap();
            let errors = out.parallel_errors.expect("the dag records its optional failure");
            assert_eq!(errors, HashMap::from([("email".to_owned(), "email is down".to_owned())]));
            assert_eq!(out.seen, ["pack", "ship", "email failed: email is down"]);
            assert_eq!(count(run.id(), "read_back"), 1);
        });
    }

    fn an_optional_failure_in_a_dag_is_recorded_in_data_too(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(optional_in_dag_data).build().await.unwrap();
            let out = run_to_end(&engine, optional_in_dag_data, Data::new()).await.unwrap();
            assert_eq!(out.value("parallel_errors"), Some(&json!({"email": "email is down"})));
            assert_eq!(out.get::<bool>("packed"), Some(true));
        });
    }

    fn history_tells_an_optional_failure_from_one_that_failed_the_run(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(optional_in_dag_typed)
                .register(handmade_fail)
                .build()
                .await
                .unwrap();
            let run = engine.start(optional_in_dag_typed, order()).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let failed: Vec<_> = engine.history(run.id()).await.unwrap().into_iter()
                .filter(|r| matches!(r.event, StepEvent::Failed { .. }))
                .map(|r| (r.step, r.event))
                .collect();
            assert_eq!(failed, [("email".to_owned(), StepEvent::Failed { error: "email is down".into(), optional: true })]);

            let run = engine.start(handmade_fail, Data::new()).await.unwrap();
            assert!(matches!(wait_for_handle(&engine, &run).await, Err(Error::RunFailed { .. })));
            let last = engine.history(run.id()).await.unwrap().pop().unwrap();
            assert_eq!((last.step.as_str(), last.event), ("required", StepEvent::Failed { error: "required is down".into(), optional: false }));
        });
    }

    fn history_without_the_definition_reads_the_runs_record(store) {
        let (done, failed) = in_runtime(async {
            let engine = Engine::builder_shared(store.open())
                .register(optional_in_dag_data)
                .register(handmade_fail)
                .build()
                .await
                .unwrap();
            let done = engine.start(optional_in_dag_data, Data::new()).await.unwrap();
            wait_for_handle(&engine, &done).await.unwrap();
            let failed = engine.start(handmade_fail, Data::new()).await.unwrap();
            wait_for_handle(&engine, &failed).await.unwrap_err();
            (done.id().clone(), failed.id().clone())
        });
        in_runtime(async {
            // Neither workflow is registered here: the runs' records decide.
            let engine = Engine::builder_shared(store.open()).build().await.unwrap();
            let event = |history: Vec<durable::StepRecord>| history.into_iter().rev().find(|r| matches!(r.event, StepEvent::Failed { .. })).unwrap().event;
            assert_eq!(event(engine.history(&done).await.unwrap()), StepEvent::Failed { error: "email is down".into(), optional: true });
            assert_eq!(event(engine.history(&failed).await.unwrap()), StepEvent::Failed { error: "required is down".into(), optional: false });
        });
    }

    fn a_state_type_that_drops_collect_results_stops_the_run_naming_the_block(store) {
        let id = in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(broken::keep_results).build().await.unwrap();
            let run = engine.start(broken::keep_results, broken::Order { id: 1, ..Default::default() }).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(matches!(err, Error::BadState { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "workflow `keep_results` run {}: the `parallel(merge = collect)` block (price, tax) \
                     wrote `parallel_results` into the state, but the state type `typed_state::broken::Order` has \
                     no such field, so the next step would lose it; add the field `parallel_results: \
                     Option<serde_json::Value>` to it. The run stays unfinished: it resumes from its journal \
                     once the type holds the field",
                    run.id()
                )
            );
            assert_eq!(count(run.id(), "done"), 0, "no step runs on a state that lost the results");
            assert_eq!(engine.status(run.id()).await.unwrap().status, durable::RunStatus::Running);
            engine.shutdown().await.unwrap();
            run.id().clone()
        });
        // Fixed: the same workflow with a state type that keeps the field resumes the run.
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(fixed::keep_results).build().await.unwrap();
            assert_eq!(engine.resumed(), std::slice::from_ref(&id));
            let out: fixed::Order = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(out.parallel_results, Some(json!({"price": {"total": 100}, "tax": {"total": 20}})));
            assert_eq!((count(&id, "price"), count(&id, "tax"), count(&id, "done")), (1, 1, 1), "the branches did not run again");
        });
    }

    fn a_named_parallel_blocks_batch_result_is_kept_or_stops_the_run(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(quotes_fixed::quoting).build().await.unwrap();
            let out = run_to_end(&engine, quotes_fixed::quoting, Default::default()).await.unwrap();
            let batch = out.quotes.expect("the batch result reached the output");
            assert_eq!((batch.success_count, batch.failure_count), (1, 1));
            assert_eq!(batch.items[0].error.as_deref(), Some("supplier down"));
            assert_eq!(out.price, 10);
            engine.shutdown().await.unwrap();
        });
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(quotes_broken::quoting).build().await.unwrap();
            let run = engine.start(quotes_broken::quoting, Default::default()).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::BadState { .. }), "{err:?}");
            assert!(
                text.contains("parallel block `quotes` wrote `quotes` into the state, but the state type `typed_state::quotes_broken::Quote` has no such field"),
                "{text}"
            );
            assert!(text.contains("Option<durable::batch::BatchResult<serde_json::Value>>"), "{text}");
        });
    }

    fn a_state_type_without_a_maps_field_stops_the_run_naming_the_map(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(handmade).build().await.unwrap();
            let input = Bare { lines: order().lines };
            let run = engine.start(handmade, input).await.unwrap();
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(&err, Error::BadState { workflow, run_id, .. } if workflow == "handmade" && run_id == run.id()), "{err:?}");
            assert!(
                text.contains("map `charge` wrote `charge` into the state, but the state type `typed_state::Bare` has no such field"),
                "{text}"
            );
            assert!(text.contains("add the field `charge: Option<durable::batch::BatchResult<typed_state::Line>>`"), "{text}");
            assert_eq!(count(run.id(), "charge[0]/charge_line"), 1, "the items ran");
            assert_eq!(count(run.id(), "bare_done"), 0);
        });
    }

    fn an_item_type_that_drops_collect_results_stops_the_run_naming_the_item(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(handmade_items).build().await.unwrap();
            let err = run_to_end(&engine, handmade_items, Data::new()).await.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::BadState { .. }), "{err:?}");
            assert!(
                text.contains("the `parallel(merge = collect)` block (bump) in `each[0]` wrote `parallel_results` into the state, but the state type `typed_state::Item` has no such field"),
                "{text}"
            );
        });
    }
    fn a_narrower_field_type_stops_the_run_too(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(handmade_narrow).build().await.unwrap();
            let err = run_to_end(&engine, handmade_narrow, Narrow::default()).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("the `parallel(merge = collect)` block (branch) wrote `parallel_results` into the state, but the state type `typed_state::Narrow` does not hold it as written, so the next step would lose part of it"),
                "{text}"
            );
        });
    }

    fn an_explicit_data_state_takes_any_field(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(explicit_data).build().await.unwrap();
            let out = run_to_end(&engine, explicit_data, Data::new()).await.unwrap();
            assert_eq!(out.value("parallel_results"), Some(&json!({"collect_data": {"n": 1}})));
            assert_eq!(out.value("each").and_then(|b| b.get("succeeded")), Some(&json!(1)));
        });
    }

}

async fn required(ctx: StepContext, _data: Data) -> Result<Data, StepError> {
    Err(StepError::terminal(format!("{} is down", ctx.step())))
}

workflow! {
    handmade_fail {
        step required;
    }
}
