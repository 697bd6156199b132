//! Dynamic work inside a step: fan-outs, concurrent maps and batches whose every finished
//! operation is journaled under the step's path, so a retried or resumed step does not redo
//! them.
//!
//! Operations are named by call order (`step/fan_out#1[3]` is operation 3 of the step's first
//! fan-out call): a step must make its calls in the same order on every attempt, as with the
//! replay of any durable engine. Only successes are reused; a failed operation runs again
//! when the step is retried (its failure is journaled for the history).

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::batch::{BatchItem, BatchResult, BatchStatus, CompletionReason, ItemStatus};
use crate::step::{BoxFuture, StepContext, StepError};
use crate::tasks::Tasks;

/// The result of [`StepContext::fan_out`]: per operation its result or error, and counts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FanOutResult<T> {
    /// Each operation's result, `None` where it failed; in input order.
    pub results: Vec<Option<T>>,
    /// Each operation's error, `None` where it succeeded; in input order.
    pub errors: Vec<Option<String>>,
    /// How many succeeded.
    pub success: usize,
    /// How many failed.
    pub failed: usize,
}

type Op<T> = Box<dyn FnOnce() -> BoxFuture<'static, Result<T, StepError>> + Send>;

impl StepContext {
    /// Runs every operation concurrently and collects each result or error (best effort, like
    /// Restate's `FanOut`).
    ///
    /// ```
    /// use durable::{workflow, Data, Engine, StepContext, StepError};
    /// use durable::store::memory::MemoryStore;
    ///
    /// async fn enrich(ctx: StepContext, data: Data) -> Result<Data, StepError> {
    ///     let ops: Vec<_> = (0..3u32)
    ///         .map(|i| move || async move {
    ///             if i == 1 { Err(StepError::retryable("pricing down")) } else { Ok(i * 10) }
    ///         })
    ///         .collect();
    ///     let out = ctx.fan_out(ops).await?;
    ///     assert_eq!(out.results, [Some(0), None, Some(20)]);
    ///     assert_eq!((out.success, out.failed), (2, 1));
    ///     Ok(data.assign("enriched", out.success))
    /// }
    ///
    /// workflow! { products { step enrich; } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), durable::Error> {
    /// let engine = Engine::builder(MemoryStore::new()).register(products).build().await?;
    /// assert_eq!(engine.run(products, Data::new()).await?.get::<usize>("enriched"), Some(2));
    /// # Ok(()) }
    /// ```
    pub async fn fan_out<T, F, Fut>(&self, ops: Vec<F>) -> Result<FanOutResult<T>, StepError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    {
        let limit = ops.len();
        let outcomes = self.run_ops("fan_out", boxed(ops), limit, false).await?;
        let mut result = FanOutResult {
            results: Vec::new(),
            errors: Vec::new(),
            success: 0,
            failed: 0,
        };
        for outcome in outcomes {
            match outcome {
                Some(Ok(value)) => {
                    result.success += 1;
                    result.results.push(Some(value));
                    result.errors.push(None);
                }
                Some(Err(error)) => {
                    result.failed += 1;
                    result.results.push(None);
                    result.errors.push(Some(error));
                }
                None => unreachable!("a best-effort fan-out runs every operation"),
            }
        }
        Ok(result)
    }

    /// Runs every operation concurrently; the first failure cancels the others and is
    /// returned. The results come in input order.
    ///
    /// ```
    /// # use durable::{StepContext, StepError};
    /// async fn validate(ctx: &StepContext) -> Result<Vec<bool>, StepError> {
    ///     let checks: Vec<_> = ["inventory", "payment", "delivery"]
    ///         .into_iter()
    ///         .map(|name| move || async move { Ok::<_, StepError>(!name.is_empty()) })
    ///         .collect();
    ///     ctx.fan_out_fail(checks).await
    /// }
    /// ```
    pub async fn fan_out_fail<T, F, Fut>(&self, ops: Vec<F>) -> Result<Vec<T>, StepError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    {
        let limit = ops.len();
        collect_all(
            self.run_ops("fan_out_fail", boxed(ops), limit, true)
                .await?,
        )
    }

    /// Applies `f` to every item, at most `limit` at a time; fails fast like
    /// [`fan_out_fail`](Self::fan_out_fail). The results come in input order.
    ///
    /// ```
    /// # use durable::{StepContext, StepError};
    /// async fn resize_all(ctx: &StepContext, urls: Vec<String>) -> Result<Vec<usize>, StepError> {
    ///     ctx.map_concurrent(urls, 4, |url| async move { Ok(url.len()) }).await
    /// }
    /// ```
    pub async fn map_concurrent<I, T, F, Fut>(
        &self,
        items: Vec<I>,
        limit: usize,
        f: F,
    ) -> Result<Vec<T>, StepError>
    where
        I: Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    {
        collect_all(self.run_ops("map", per_item(items, f), limit, true).await?)
    }

    /// Processes every item, at most `limit` at a time, best effort: the batch result holds
    /// each item's result or error. As in a map without a completion policy, any failure
    /// makes the batch `Failed` (`FailureToleranceExceeded`: none is tolerated).
    ///
    /// ```
    /// # use durable::{StepContext, StepError};
    /// # use durable::batch::BatchResult;
    /// async fn import(ctx: &StepContext, rows: Vec<u32>) -> Result<BatchResult<u32>, StepError> {
    ///     ctx.process_batch(rows, 10, |row| async move { Ok(row * 2) }).await
    /// }
    /// ```
    pub async fn process_batch<I, T, F, Fut>(
        &self,
        items: Vec<I>,
        limit: usize,
        f: F,
    ) -> Result<BatchResult<T>, StepError>
    where
        I: Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    {
        let outcomes = self
            .run_ops("batch", per_item(items, f), limit, false)
            .await?;
        let total = outcomes.len();
        let items: Vec<BatchItem<T>> = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| match outcome {
                Some(Ok(value)) => BatchItem {
                    index,
                    status: ItemStatus::Succeeded,
                    result: Some(value),
                    error: None,
                    name: None,
                    step: None,
                    attempts: None,
                },
                Some(Err(error)) => BatchItem {
                    index,
                    status: ItemStatus::Failed,
                    result: None,
                    error: Some(error),
                    name: None,
                    step: None,
                    attempts: None,
                },
                None => unreachable!("a best-effort batch runs every item"),
            })
            .collect();
        let failed = items
            .iter()
            .filter(|i| i.status == ItemStatus::Failed)
            .count();
        // Every item ran; as in a map without a policy, no failure is tolerated.
        let (status, completion_reason) = match failed {
            0 => (BatchStatus::Completed, CompletionReason::AllCompleted),
            _ => (
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded,
            ),
        };
        Ok(BatchResult {
            status,
            completion_reason,
            total_count: total,
            started_count: total,
            success_count: total - failed,
            failure_count: failed,
            items,
        })
    }

    /// Runs `ops` at most `limit` at a time, reusing journaled results and journaling new ones.
    /// With `fail_fast`, the first failure cancels the rest and is returned as `Err`.
    /// Per operation: `Some(Ok)`, `Some(Err(message))`, or `None` when it never finished.
    async fn run_ops<T>(
        &self,
        kind: &str,
        ops: Vec<Op<T>>,
        limit: usize,
        fail_fast: bool,
    ) -> Result<Vec<Option<Result<T, String>>>, StepError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let call = self.next_call(kind);
        let mut outcomes: Vec<Option<Result<T, String>>> = (0..ops.len()).map(|_| None).collect();
        let mut pending = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let path = format!("{call}[{i}]");
            match self.ops().and_then(|journal| journal.finished(&path)) {
                Some(text) => {
                    let value = crate::encode::readable(&text)
                        .and_then(|()| serde_json::from_str(&text).map_err(|e| e.to_string()))
                        .map_err(|e| {
                            StepError::terminal(format!(
                                "operation {path}: its journaled output does not decode: {e}"
                            ))
                        })?;
                    outcomes[i] = Some(Ok(value));
                }
                None => pending.push((i, path, op)),
            }
        }
        let mut pending = pending.into_iter();
        // Inside a run, the operations' tasks are counted with the run's, so that nothing
        // that cancels them goes on before they are gone.
        let group = self.ops().map(|journal| Tasks::nested(&journal.tasks()));
        let mut running = JoinSet::new();
        let ended = loop {
            while running.len() < limit.max(1) {
                let Some((i, path, op)) = pending.next() else {
                    break;
                };
                let journal = self.ops().cloned();
                let op = async move {
                    // The run's lease must hold as the operation starts: checked in its own
                    // task, right before it (see `lease.rs`); a lost lease fails it unstarted.
                    if let Some(journal) = journal.filter(|j| !j.lease_live()) {
                        if let Err(error) = journal.confirm_lease().await {
                            return (i, path, Err(error));
                        }
                    }
                    (i, path, op().await)
                };
                match &group {
                    Some(group) => running.spawn(group.task(op)),
                    None => running.spawn(op),
                };
            }
            let Some(joined) = running.join_next().await else {
                break Ok(());
            };
            let (i, path, result) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    let error = format!("an operation of {call} died: {e}");
                    break Err(StepError::retryable(error));
                }
            };
            let outcome = match result {
                // An output refused for its nesting is not dropped recursively (it could
                // overflow the stack): see `encode::to_text_or_dispose`.
                Ok(value) => match crate::encode::to_text_or_dispose(value) {
                    Ok((value, text)) => Ok((value, text)),
                    Err(e) => {
                        let error = format!("operation {path}: its output does not encode: {e}");
                        break Err(StepError::terminal(error));
                    }
                },
                Err(error) => Err(error),
            };
            let journaled = match &outcome {
                Ok((_, text)) => Ok(text.clone()),
                Err(error) => Err(error.message().to_owned()),
            };
            if let Some(journal) = self.ops() {
                if let Err(error) = journal.record(path, self.attempt(), journaled).await {
                    break Err(error);
                }
            }
            match outcome {
                Ok((value, _)) => outcomes[i] = Some(Ok(value)),
                // The other operations are cancelled.
                Err(error) if fail_fast => break Err(error),
                Err(error) => outcomes[i] = Some(Err(error.message().to_owned())),
            }
        };
        // The operations cancelled are gone before the failure goes on.
        running.shutdown().await;
        if let Some(group) = group {
            group.idle().await;
        }
        ended.map(|()| outcomes)
    }
}

fn boxed<T, F, Fut>(ops: Vec<F>) -> Vec<Op<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StepError>> + Send + 'static,
{
    ops.into_iter()
        .map(|op| Box::new(move || Box::pin(op()) as BoxFuture<'static, _>) as Op<T>)
        .collect()
}

fn per_item<I, T, F, Fut>(items: Vec<I>, f: F) -> Vec<Op<T>>
where
    I: Send + 'static,
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, StepError>> + Send + 'static,
{
    let f = std::sync::Arc::new(f);
    items
        .into_iter()
        .map(|item| {
            let f = std::sync::Arc::clone(&f);
            Box::new(move || Box::pin(f(item)) as BoxFuture<'static, _>) as Op<T>
        })
        .collect()
}

fn collect_all<T>(outcomes: Vec<Option<Result<T, String>>>) -> Result<Vec<T>, StepError> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(StepError::retryable(error)),
            None => Err(StepError::retryable("an operation did not finish")),
        })
        .collect()
}
