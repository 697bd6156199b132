//! Storage that only grows by what changed: a step is journaled as its changes against its
//! input, replay rebuilds the state from them; runs are listed page by page.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use durable::store::{EntryKind, JournalEntry, Store};
use durable::{workflow, Data, Engine, RunId, StepContext, StepError};
use durable_tests::{count, each_store, in_runtime, note, wait_for_handle, wait_for_run};
use serde_json::{json, Value};

/// Runs whose `gate` step may return; for any other run it never does.
static RELEASED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn release(run: &RunId) {
    RELEASED
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(run.to_string());
}

async fn wait_for_release(ctx: &StepContext) {
    let released = |run: &RunId| {
        RELEASED
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|r| r.contains(run.as_str()))
    };
    if !released(ctx.run_id()) {
        std::future::pending::<()>().await;
    }
}

const BLOB: usize = 10_000;

async fn grow(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "grow");
    Ok(data
        .assign("blob", "x".repeat(BLOB))
        .assign("temp", "scratch")
        .assign("profile", json!({"name": "ada", "age": 1, "old": true})))
}

async fn prune(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "prune");
    let mut value = Value::from(data);
    let state = value.as_object_mut().unwrap();
    state.remove("temp");
    let profile = state["profile"].as_object_mut().unwrap();
    profile.remove("old");
    profile.insert("age".into(), 2.into());
    let Value::Object(map) = value else {
        unreachable!()
    };
    Ok(Data::from(map))
}

async fn left(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "left");
    Ok(data.assign("side", "left").assign("l", true))
}

async fn right(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "right");
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(data.assign("side", "right").assign("r", true))
}

async fn first(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "first");
    Ok(data.assign(
        "profile",
        json!({"name": "ada", "age": 2, "city": "london"}),
    ))
}

async fn second(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "second");
    let city = data.value("profile").and_then(|p| p.get("city")).cloned();
    Ok(data.assign("seen_city", city))
}

async fn double(ctx: StepContext, item: Data) -> Result<Data, StepError> {
    note(&ctx, "double");
    let n = item.get::<u64>("n").unwrap_or(0);
    Ok(item.assign("n", n * 2))
}

async fn gate(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    note(&ctx, "gate");
    wait_for_release(&ctx).await;
    Ok(data.assign("gated", true))
}

workflow! {
    every_block {
        step grow;
        step prune;
        parallel(merge = last_wins) { step left; step right; }
        dag { step first; step second(after = [first]); }
        map doubled(over = items) { step double; }
        step gate;
    }
}

async fn push(ctx: StepContext, mut list: Vec<u32>) -> Result<Vec<u32>, StepError> {
    note(&ctx, ctx.step().to_owned());
    list.push(list.len() as u32);
    Ok(list)
}

async fn typed_gate(ctx: StepContext, list: Vec<u32>) -> Result<Vec<u32>, StepError> {
    note(&ctx, "typed_gate");
    wait_for_release(&ctx).await;
    Ok(list)
}

workflow! {
    array_state(state = Vec<u32>) {
        step one = push;
        step two = push;
        step typed_gate;
    }
}

fn items_input() -> Data {
    Data::new().assign("items", json!([{"n": 1}, {"n": 2}]))
}

/// Starts a run that stops in its gate, waits until `before_gate` is journaled, then stops
/// the process (drops the runtime) with the run unfinished, and lets its lease expire.
fn start_and_stop_at_gate<W: durable::Workflow + Copy>(
    store: &durable_tests::TestStore,
    workflow: W,
    input: W::State,
    before_gate: &str,
) -> RunId {
    let id = in_runtime(async {
        let engine = Engine::builder_shared(store.open())
            .register(workflow)
            .lease_duration(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let run = engine.start(workflow, input).await.unwrap();
        let id = run.id().clone();
        for _ in 0..500 {
            let history = engine.history(&id).await.unwrap();
            if history.iter().any(|r| r.step == before_gate) {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("`{before_gate}` never finished");
    });
    // The memory store's lease must expire before a new engine may take the run over.
    std::thread::sleep(Duration::from_millis(150));
    id
}

async fn journal(store: &dyn Store, run: &RunId) -> Vec<JournalEntry> {
    store.load_journal(run).await.unwrap()
}

each_store! {
    fn a_step_that_sets_one_field_of_a_large_state_journals_a_few_bytes(store) {
        in_runtime(async {
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(every_block).build().await.unwrap();
            let id = RunId::generate();
            release(&id);
            let input = items_input().assign("big", "y".repeat(100_000));
            let run = engine.start_with_id(every_block, id.clone(), input).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let entries = journal(&*shared, &id).await;
            let sizes: Vec<_> = entries.iter().map(|e| (e.step.as_str(), e.kind, e.payload.len())).collect();
            // The 100 KB field is never journaled: `grow` writes its blob, the rest their change.
            for (step, kind, len) in &sizes {
                assert_eq!(*kind, EntryKind::StepChanged, "{sizes:?}");
                let bound = if *step == "grow" { BLOB + 200 } else { 1_000 };
                assert!(len < &bound, "{step} journaled {len} bytes: {sizes:?}");
            }
            let gate = entries.iter().find(|e| e.step == "gate").unwrap();
            assert_eq!(gate.payload, r#"{"gated":true}"#);
            // The map's own entry holds only its batch result.
            let map = entries.iter().find(|e| e.step == "doubled").unwrap();
            let payload: Value = serde_json::from_str(&map.payload).unwrap();
            assert_eq!(payload.as_object().unwrap().keys().collect::<Vec<_>>(), ["doubled"]);
            // A removal is journaled with its path.
            let prune = entries.iter().find(|e| e.step == "prune").unwrap();
            assert_eq!(prune.payload, r#"[{"profile":{"age":2}},[["profile","old"],["temp"]]]"#);
        });
    }

    fn a_resumed_run_rebuilds_its_state_from_the_journaled_changes(store) {
        let id = start_and_stop_at_gate(&store, every_block, items_input(), "doubled");
        in_runtime(async {
            release(&id);
            let engine = Engine::builder_shared(store.open()).register(every_block).build().await.unwrap();
            assert_eq!(engine.resumed(), std::slice::from_ref(&id));
            let resumed: Data = wait_for_run(&engine, &id).await.unwrap();
            for step in ["grow", "prune", "left", "right", "first", "second", "double"] {
                let expected = if step == "double" { 2 } else { 1 };
                assert_eq!(count(&id, step), expected, "{step} ran again");
            }
            assert_eq!(count(&id, "gate"), 2);
            // The same input run straight through gives the same state.
            let reference = RunId::generate();
            release(&reference);
            let straight = engine.start_with_id(every_block, reference, items_input()).await.unwrap();
            let straight = wait_for_handle(&engine, &straight).await.unwrap();
            assert_eq!(Value::from(resumed.clone()), Value::from(straight));
            assert_eq!(resumed.value("temp"), None);
            assert_eq!(resumed.value("profile"), Some(&json!({"name": "ada", "age": 2, "city": "london"})));
            assert_eq!(resumed.get::<String>("side").as_deref(), Some("right"));
            assert_eq!(resumed.get::<String>("seen_city").as_deref(), Some("london"));
            assert_eq!(resumed.value("doubled").and_then(|d| d.get("succeeded")), Some(&json!(2)));
            assert_eq!(resumed.get::<String>("blob").map(|b| b.len()), Some(BLOB));
        });
    }

    fn a_state_that_is_not_an_object_is_journaled_whole_and_resumes(store) {
        let id = start_and_stop_at_gate(&store, array_state, vec![7], "two");
        in_runtime(async {
            release(&id);
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(array_state).build().await.unwrap();
            let out: Vec<u32> = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(out, [7, 1, 2]);
            assert_eq!((count(&id, "one"), count(&id, "two")), (1, 1));
            let entries = journal(&*shared, &id).await;
            let kinds: Vec<_> = entries.iter().map(|e| (e.step.as_str(), e.kind, e.payload.as_str())).collect();
            assert_eq!(kinds, [
                ("one", EntryKind::StepCompleted, "[7,1]"),
                ("two", EntryKind::StepCompleted, "[7,1,2]"),
                ("typed_gate", EntryKind::StepCompleted, "[7,1,2]"),
            ]);
        });
    }
}

/// Creates 1,050 runs straight in the store, in 7 commits a few milliseconds apart (so
/// creation times differ between commits and tie within one), with ids out of creation
/// order; every third run of workflow `alpha` completes. Returns them in listing order:
/// newest first, ties by id, highest first, with (workflow, completed).
fn create_many_runs(store: &dyn Store) -> Vec<(RunId, &'static str, bool)> {
    use durable::store::{Finish, NewRun, Write};
    let mut listed = Vec::new();
    in_runtime(async {
        for batch in 0..7 {
            let mut ids: Vec<(RunId, &'static str, bool)> = (0..150)
                .map(|i| {
                    let n = batch * 150 + i;
                    let id = RunId::from(format!("run-{:05}", (n * 7919) % 10007));
                    let workflow = if n % 2 == 0 { "alpha" } else { "beta" };
                    (id, workflow, workflow == "alpha" && n % 3 == 0)
                })
                .collect();
            let mut writes: Vec<Write> = ids
                .iter()
                .map(|(id, workflow, _)| {
                    Write::CreateRun(NewRun {
                        id: id.clone(),
                        workflow: (*workflow).into(),
                        fingerprint: "f".into(),
                        input: "{}".into(),
                        owner: "elsewhere".into(),
                        lease_expires_at: u64::MAX,
                        parent: None,
                    })
                })
                .collect();
            writes.extend(ids.iter().filter(|r| r.2).map(|(id, _, _)| Write::Append {
                run: id.clone(),
                lease_token: 1,
                entries: Vec::new(),
                finish: Some(Finish::Completed("{}".into())),
            }));
            let outcomes = store.commit(&writes).await.unwrap();
            assert!(outcomes.iter().all(Result::is_ok));
            ids.sort_by(|a, b| b.0.cmp(&a.0));
            listed.splice(0..0, ids);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    listed
}

/// Every page of `filter` (pages of 10), following the cursors; checks that each page is
/// full but the last.
fn all_pages(engine: &Engine, mut filter: durable::RunFilter) -> Vec<RunId> {
    filter.limit = Some(10);
    let mut seen = Vec::new();
    in_runtime(async {
        loop {
            let page = engine.list_page(filter.clone()).await.unwrap();
            assert!(page.runs.len() <= 10);
            seen.extend(page.runs.iter().map(|r| r.id.clone()));
            match page.next {
                Some(next) => {
                    assert_eq!(page.runs.len(), 10, "only the last page is short");
                    assert_eq!(next.id, seen.last().unwrap().clone());
                    // The cursor survives a round trip through text (an API's `next` link).
                    filter.after = Some(next.to_string().parse().unwrap());
                }
                None => break,
            }
        }
    });
    seen
}

each_store! {
    fn runs_are_listed_page_by_page_each_exactly_once_in_order(store) {
        let shared = store.open();
        let expected = create_many_runs(&*shared);
        let engine = in_runtime(async { Engine::builder_shared(shared.clone()).build().await.unwrap() });
        let ids = |keep: &dyn Fn(&(RunId, &str, bool)) -> bool| -> Vec<RunId> {
            expected.iter().filter(|r| keep(r)).map(|r| r.0.clone()).collect()
        };
        assert_eq!(all_pages(&engine, Default::default()), ids(&|_| true));
        let alpha = durable::RunFilter { workflow: Some("alpha".into()), ..Default::default() };
        assert_eq!(all_pages(&engine, alpha.clone()), ids(&|r| r.1 == "alpha"));
        let done = durable::RunFilter { status: Some(durable::RunStatus::Completed), ..Default::default() };
        assert_eq!(all_pages(&engine, done.clone()), ids(&|r| r.2));
        let alpha_running = durable::RunFilter { status: Some(durable::RunStatus::Running), ..alpha };
        assert_eq!(all_pages(&engine, alpha_running), ids(&|r| r.1 == "alpha" && !r.2));
        // `list` honours the cursor and the limit too.
        let after = durable::RunFilter { limit: Some(3), after: Some(durable::Cursor { created_at: u64::MAX, id: RunId::from("") }), ..Default::default() };
        let listed = in_runtime(async { engine.list(after).await.unwrap() });
        assert_eq!(listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids(&|_| true)[..3]);
        drop(engine);
    }
}

/// A store whose commits of a failed attempt take `delay` longer.
struct SlowCommits {
    inner: std::sync::Arc<dyn Store>,
    delay: Duration,
}

impl Store for SlowCommits {
    fn commit<'a>(
        &'a self,
        batch: &'a [durable::store::Write],
    ) -> durable::BoxFuture<
        'a,
        Result<Vec<Result<(), durable::store::Rejected>>, durable::store::StoreError>,
    > {
        let failed_attempt = batch.iter().any(|w| match w {
            durable::store::Write::Append { entries, .. } => {
                entries.iter().any(|e| e.kind == EntryKind::AttemptFailed)
            }
            _ => false,
        });
        Box::pin(async move {
            if failed_attempt {
                tokio::time::sleep(self.delay).await;
            }
            self.inner.commit(batch).await
        })
    }
    fn load_run<'a>(
        &'a self,
        id: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<Option<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.load_run(id)
    }
    fn load_journal<'a>(
        &'a self,
        id: &'a RunId,
    ) -> durable::BoxFuture<'a, Result<Vec<JournalEntry>, durable::store::StoreError>> {
        self.inner.load_journal(id)
    }
    fn claim_runs<'a>(
        &'a self,
        claim: durable::store::Claim<'a>,
    ) -> durable::BoxFuture<'a, Result<Vec<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.claim_runs(claim)
    }
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> durable::BoxFuture<'a, Result<usize, durable::store::StoreError>> {
        self.inner.renew_leases(owner, lease)
    }
    fn release_leases<'a>(
        &'a self,
        owner: &'a str,
    ) -> durable::BoxFuture<'a, Result<(), durable::store::StoreError>> {
        self.inner.release_leases(owner)
    }
    fn list_runs(
        &self,
        filter: durable::RunFilter,
    ) -> durable::BoxFuture<'_, Result<Vec<durable::store::RunRecord>, durable::store::StoreError>>
    {
        self.inner.list_runs(filter)
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// When each run's second attempt of `flaky_once` started, in Unix milliseconds.
static SECOND_ATTEMPT: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

async fn flaky_once(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    if ctx.attempt() == 1 {
        return Err(StepError::retryable("not yet"));
    }
    SECOND_ATTEMPT
        .lock()
        .unwrap()
        .push((ctx.run_id().to_string(), now_millis()));
    Ok(data.assign("done", true))
}

workflow! {
    retried_once {
        step flaky_once(retry(max_attempts = 2, backoff = constant, initial = 400ms));
    }
}

each_store! {
    fn a_retry_starts_at_its_journaled_retry_at_however_slow_the_commit(store) {
        in_runtime(async {
            // The failed attempt's commit takes 300 ms of its 400 ms backoff: waiting the whole
            // backoff after it would start the retry 300 ms after its journaled `retry_at`. The bound below
            // leaves half of that for a loaded machine's late timers.
            let slow = SlowCommits { inner: store.open(), delay: Duration::from_millis(300) };
            let engine = Engine::builder(slow).register(retried_once).build().await.unwrap();
            let run = engine.start(retried_once, Data::new()).await.unwrap();
            wait_for_handle(&engine, &run).await.unwrap();
            let history = engine.history(run.id()).await.unwrap();
            let retry_at = match &history[0].event {
                durable::StepEvent::AttemptFailed { retry_at, .. } => *retry_at,
                other => panic!("expected a failed attempt, got {other:?}"),
            };
            let started = SECOND_ATTEMPT.lock().unwrap().iter().find(|(r, _)| r == run.id().as_str()).unwrap().1;
            assert!(started >= retry_at, "the retry started {} ms before its retry_at", retry_at - started);
            assert!(started < retry_at + 150, "the retry started {} ms after its retry_at", started - retry_at);
        });
    }
}

workflow! {
    remap {
        map doubled(over = items) { step double; }
        step gate;
    }
}

each_store! {
    fn a_map_result_replacing_an_object_replays_as_a_replacement(store) {
        // The state holds an object under the map's name already: journaled as a change, the
        // batch result would merge into it on replay; it must replace it, as it did live.
        let input = items_input().assign("doubled", json!({"stale": true}));
        let id = start_and_stop_at_gate(&store, remap, input, "doubled");
        in_runtime(async {
            release(&id);
            let shared = store.open();
            let engine = Engine::builder_shared(shared.clone()).register(remap).build().await.unwrap();
            let out: Data = wait_for_run(&engine, &id).await.unwrap();
            assert_eq!(count(&id, "double"), 2, "finished items did not run again");
            let batch = out.value("doubled").unwrap();
            assert_eq!(batch.get("stale"), None, "{batch}");
            assert_eq!(batch.get("succeeded"), Some(&json!(2)));
            let entries = journal(&*shared, &id).await;
            let map = entries.iter().find(|e| e.step == "doubled").unwrap();
            assert_eq!(map.kind, EntryKind::StepCompleted);
        });
    }
}
