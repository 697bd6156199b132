//! What the journal holds: each kind of event in its own entry kind, and a run's entries
//! numbered one after another with no gap, even when one of its writes was refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable::store::{
    EntryKind, JournalEntry, Rejected, RunFilter, RunRecord, Store, StoreError, Write,
};
use durable::{workflow, BoxFuture, Data, Engine, Error, RunId, StepContext, StepError, StepEvent};
use durable_tests::{count, each_store, in_runtime, note, wait_for_handle, wait_for_run};

/// A store that refuses, once, the write journaling a step path ending in `refuse`.
struct RefusesOnce {
    inner: Arc<dyn Store>,
    refuse: &'static str,
    refused: AtomicBool,
}

impl Store for RefusesOnce {
    fn commit<'a>(
        &'a self,
        batch: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Result<(), Rejected>>, StoreError>> {
        Box::pin(async move {
            let hit = |w: &Write| match w {
                Write::Append { entries, .. } => {
                    entries.iter().any(|e| e.step.ends_with(self.refuse))
                }
                Write::CreateRun(_) => false,
            };
            let Some(i) = batch.iter().position(hit) else {
                return self.inner.commit(batch).await;
            };
            if self.refused.swap(true, Ordering::SeqCst) {
                return self.inner.commit(batch).await;
            }
            // The others of the batch commit; this one is refused.
            let others: Vec<Write> = batch
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, w)| w.clone())
                .collect();
            let mut outcomes = self.inner.commit(&others).await?;
            outcomes.insert(i, Err(Rejected::UnknownRun));
            Ok(outcomes)
        })
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, StoreError>> {
        self.inner.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<JournalEntry>, StoreError>> {
        self.inner.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, StoreError>> {
        self.inner.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRecord>, StoreError>> {
        self.inner.list_runs(filter)
    }
    fn attach(&self) -> Result<(), StoreError> {
        self.inner.attach()
    }
    fn detach(&self) {
        self.inner.detach()
    }
    fn close(&self) {
        self.inner.close()
    }
}

async fn two_ops(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "two_ops");
    let ops: Vec<_> = (0..2u32)
        .map(|i| {
            let ctx = ctx.clone();
            move || async move {
                // The second finishes after the first was journaled.
                if i == 1 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                note(&ctx, format!("op {i}"));
                if i == 1 && ctx.attempt() == 1 {
                    return Err(StepError::retryable("op 1: first attempt"));
                }
                Ok::<_, StepError>(i + 1)
            }
        })
        .collect();
    let out = ctx.fan_out(ops).await?;
    if out.failed > 0 {
        return Err(StepError::retryable("an operation failed"));
    }
    Ok(data.assign("ops", out.results))
}

async fn then(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "then");
    Ok(data.assign("then", true))
}

workflow! {
    op_events {
        step two_ops(retry(max_attempts = 3, backoff = constant, initial = 10ms));
        step then;
    }
}

/// A journal entry as a test compares it: sequence number, step, kind, attempt, payload.
type Entry = (u64, String, EntryKind, u32, String);

/// The run's journal: sequence number, step, kind, attempt and payload of each entry.
async fn journal(store: &dyn Store, run: &RunId) -> Vec<Entry> {
    let entries = store.load_journal(run).await.unwrap();
    entries
        .into_iter()
        .map(|e| (e.seq, e.step, e.kind, e.attempt, e.payload))
        .collect()
}

each_store! {
    fn each_event_has_its_own_kind_and_payload(store) {
        let shared = store.open();
        in_runtime(async {
            let engine = Engine::builder_shared(shared.clone()).register(op_events).build().await.unwrap();
            let run = engine.start(op_events, Data::new()).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let id = run.id();
            let retry_at = |entries: &[Entry]| {
                let payload: serde_json::Value = serde_json::from_str(&entries[2].4).unwrap();
                payload["retry_at"].as_u64().unwrap()
            };
            let entries = journal(&*shared, id).await;
            let expected = [
                (1, "two_ops/fan_out#1[0]", EntryKind::OpCompleted, 1, "1".to_owned()),
                (2, "two_ops/fan_out#1[1]", EntryKind::OpFailed, 1, r#"{"error":"op 1: first attempt"}"#.to_owned()),
                (3, "two_ops", EntryKind::AttemptFailed, 1, format!(r#"{{"error":"an operation failed","retry_at":{}}}"#, retry_at(&entries))),
                (4, "two_ops/fan_out#1[1]", EntryKind::OpCompleted, 2, "2".to_owned()),
                (5, "two_ops", EntryKind::StepChanged, 2, r#"{"ops":[1,2]}"#.to_owned()),
                (6, "then", EntryKind::StepChanged, 1, r#"{"then":true}"#.to_owned()),
            ]
            .map(|(seq, step, kind, attempt, payload)| (seq, step.to_owned(), kind, attempt, payload));
            assert_eq!(entries, expected);
            // History reads each of them.
            let history = engine.history(id).await.unwrap();
            let events: Vec<_> = history.iter().map(|r| (r.step.as_str(), r.attempt, r.event.clone())).collect();
            assert_eq!(events[0], ("two_ops/fan_out#1[0]", 1, StepEvent::Completed { output: serde_json::json!(1) }));
            assert_eq!(events[1], ("two_ops/fan_out#1[1]", 1, StepEvent::AttemptFailed { error: "op 1: first attempt".into(), retry_at: 0 }));
            assert!(matches!(&events[2], ("two_ops", 1, StepEvent::AttemptFailed { error, retry_at }) if error == "an operation failed" && *retry_at == retry_at_of(&history[2])));
            assert_eq!(events[4], ("two_ops", 2, StepEvent::Completed { output: serde_json::json!({"ops": [1, 2]}) }));
            assert_eq!(count(id, "op 0"), 1, "the retry reused the first operation's result");
            assert_eq!(count(id, "op 1"), 2);
        });
    }

    fn a_refused_write_stops_the_run_and_its_journal_keeps_no_gap(store) {
        let inner = store.open();
        let shared: Arc<dyn Store> = Arc::new(RefusesOnce {
            inner: inner.clone(),
            refuse: "fan_out#1[1]",
            refused: AtomicBool::new(false),
        });
        in_runtime(async {
            let engine = Engine::builder_shared(shared)
                .register(op_events)
                .lease_duration(Duration::from_millis(150))
                .build()
                .await
                .unwrap();
            let run = engine.start(op_events, Data::new()).await.unwrap();
            let id = run.id().clone();
            // The refused write stops the run: the attempt's failure is not numbered on a guess.
            let err = wait_for_handle(&engine, &run).await.unwrap_err();
            assert!(matches!(err, Error::Store(_)), "{err}");
            let expected = format!("workflow `op_events` run {id}: the journal refused a write: no run with this id");
            assert!(err.to_string().contains(&expected), "{err}");
            assert_eq!(
                journal(&*inner, &id).await.iter().map(|e| (e.0, e.1.as_str())).collect::<Vec<_>>(),
                [(1, "two_ops/fan_out#1[0]")]
            );
            // The engine drives it again from what the store holds.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let out = loop {
                match wait_for_run::<Data>(&engine, &id).await {
                    Ok(out) => break out,
                    Err(Error::Store(_)) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(out.get::<Vec<u32>>("ops"), Some(vec![1, 2]));
            let entries = journal(&*inner, &id).await;
            let seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
            assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>(), "{entries:?}");
            let steps: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
            // Resumed at attempt 1 (its failure was never journaled), the step found the first
            // operation's result, journaled before the refusal: it did not run again.
            assert_eq!(
                steps,
                ["two_ops/fan_out#1[0]", "two_ops/fan_out#1[1]", "two_ops", "two_ops/fan_out#1[1]", "two_ops", "then"]
            );
            assert_eq!(count(&id, "op 0"), 1);
            assert_eq!(count(&id, "op 1"), 3);
            assert_eq!(count(&id, "then"), 1);
        });
    }
}

fn retry_at_of(record: &durable::StepRecord) -> u64 {
    match record.event {
        StepEvent::AttemptFailed { retry_at, .. } => retry_at,
        _ => panic!("not a failed attempt: {record:?}"),
    }
}

each_store! {
    fn an_unreadable_failure_entry_stops_the_run_naming_the_step(store) {
        use durable::store::NewRun;
        use durable::Workflow;
        let shared = store.open();
        let id = RunId::from("unreadable-failure");
        in_runtime(async {
            let batch = [
                Write::CreateRun(NewRun {
                    id: id.clone(),
                    workflow: "op_events".into(),
                    fingerprint: op_events.definition().fingerprint().to_owned(),
                    input: "{}".into(),
                    owner: "a-process-long-gone".into(),
                    lease_expires_at: 0,
                    parent: None,
                }),
                Write::Append {
                    run: id.clone(),
                    lease_token: 1,
                    entries: vec![JournalEntry {
                        seq: 1,
                        step: "two_ops".into(),
                        kind: EntryKind::AttemptFailed,
                        attempt: 1,
                        payload: r#"{"error": 7}"#.into(),
                        at: 0,
                    }],
                    finish: None,
                },
            ];
            let outcomes = shared.commit(&batch).await.unwrap();
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
            let engine = Engine::builder_shared(shared.clone()).register(op_events).build().await.unwrap();
            let err = wait_for_run::<Data>(&engine, &id).await.unwrap_err();
            assert!(matches!(err, Error::BadState { .. }), "{err:?}");
            let text = err.to_string();
            let expected = "workflow `op_events` run unreadable-failure step `two_ops`: its journal \
                            entry (`attempt_failed`) does not decode: invalid type: integer `7`, expected a string";
            assert!(text.starts_with(expected), "{text}");
            assert_eq!(count(&id, "two_ops"), 0, "the step did not run on a guess");
            // The history still shows the entry, with why it cannot be read.
            let history = engine.history(&id).await.unwrap();
            assert!(matches!(&history[0].event, StepEvent::AttemptFailed { error, retry_at: 0 } if error.starts_with("its journal entry (`attempt_failed`) does not decode")), "{history:?}");
        });
    }
}
