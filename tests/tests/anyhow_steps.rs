//! Steps that return `anyhow::Result`: `?` on any error with no `map_err`, retried like any
//! failure, with the whole chain in the journal and the original error reachable by downcast.

use std::sync::Arc;

use anyhow::Context as _;
use durable::{workflow, Data, Engine, Error, StepContext, StepEvent};
use durable_tests::{count, each_store_and_postgres, in_runtime, note};

/// Reads a file that does not exist on the first attempt (`?` with context), then succeeds.
async fn read_config(ctx: StepContext, data: Data) -> anyhow::Result<Data> {
    note(&ctx, "read_config");
    if ctx.attempt() == 1 {
        std::fs::read_to_string("/nonexistent/durable/config.toml")
            .context("reading the tenant's config")?;
    }
    Ok(data.assign("attempts", ctx.attempt()))
}

/// A state-only step that parses what the first one wrote.
async fn parse_limit(data: Data) -> anyhow::Result<Data> {
    let limit: u32 = data.get::<String>("limit").unwrap_or_default().parse()?;
    Ok(data.assign("parsed", limit))
}

workflow! {
    anyhow_flow {
        step read_config(retry(max_attempts = 2, initial = 5ms));
        step parse_limit;
    }
}

each_store_and_postgres! {
    fn an_anyhow_step_is_retried_and_its_chain_is_journaled(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(anyhow_flow).build().await.unwrap();
            let run = engine
                .start(anyhow_flow, Data::new().assign("limit", "25"))
                .await
                .unwrap();
            let out = run.wait().await.unwrap();
            assert_eq!(out.get::<u32>("attempts"), Some(2));
            assert_eq!(out.get::<u32>("parsed"), Some(25));
            assert_eq!(count(run.id(), "read_config"), 2, "one failed attempt, one retry");
            let history = engine.history(run.id()).await.unwrap();
            let StepEvent::AttemptFailed { error, .. } = &history[0].event else {
                panic!("the first attempt failed: {history:?}");
            };
            // `{:#}`: the context, then the io error it wraps.
            assert!(
                error.starts_with("reading the tenant's config: No such file or directory"),
                "{error}"
            );
        });
    }

    fn an_anyhow_error_fails_the_run_with_its_message(store) {
        in_runtime(async {
            let engine = Engine::builder_shared(store.open()).register(anyhow_flow).build().await.unwrap();
            let run = engine
                .start(anyhow_flow, Data::new().assign("limit", "many"))
                .await
                .unwrap();
            let Err(Error::RunFailed { failure, .. }) = run.wait().await else {
                panic!("`many` is not a number");
            };
            assert_eq!(failure.steps[0].step, "parse_limit");
            assert_eq!(failure.steps[0].error, "invalid digit found in string");
        });
    }
}

#[test]
fn the_original_error_is_reachable_through_source() {
    in_runtime(async {
        let step = durable::step::erase::<Data, _, _>(read_config);
        let ctx = StepContext::new(
            "anyhow_flow",
            durable::RunId::from("run-1"),
            Arc::from("read_config"),
            1,
        );
        let err = step(ctx, serde_json::json!({})).await.unwrap_err();
        assert!(!err.is_terminal(), "an anyhow error is retryable");
        // The context anyhow added, and under it the io error the `?` converted.
        let source = err.source().expect("the error is kept");
        assert_eq!(source.to_string(), "reading the tenant's config");
        let io = source
            .source()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the io error is the context's source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    });
}
