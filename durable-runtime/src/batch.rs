//! The result of a map block (or of a programmatic fan-out): per item, its status and result
//! or error, with counts and why the batch finished.

use serde::{Deserialize, Serialize};

/// What a map block stores in the state under its name.
///
/// Read it back typed with [`Data::get`](crate::Data::get):
///
/// ```
/// use durable::batch::{BatchResult, BatchStatus, CompletionReason, ItemStatus};
/// use serde_json::json;
///
/// let state = durable::Data::new().assign("sends", json!({
///     "status": "failed", "completion_reason": "failure_tolerance_exceeded",
///     "total": 3, "started": 2, "succeeded": 1, "failed": 1,
///     "items": [
///         {"index": 0, "status": "succeeded", "result": "ok-0"},
///         {"index": 1, "status": "failed", "error": "bounced",
///          "step": "sends[1]/send", "attempts": 3},
///         {"index": 2, "status": "not_started"}
///     ]
/// }));
/// let batch: BatchResult<String> = state.get("sends").unwrap();
/// assert_eq!(batch.status, BatchStatus::Failed);
/// assert_eq!(batch.completion_reason, CompletionReason::FailureToleranceExceeded);
/// assert_eq!(batch.get_results(), vec![&"ok-0".to_owned()]);
/// let failed = batch.failed().next().unwrap();
/// assert_eq!(failed.error.as_deref(), Some("bounced"));
/// assert_eq!((failed.step.as_deref(), failed.attempts), (Some("sends[1]/send"), Some(3)));
/// assert_eq!(batch.all().filter(|i| i.status == ItemStatus::NotStarted).count(), 1);
/// assert!(batch.throw_if_error().unwrap_err().contains("item 1: bounced"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchResult<T> {
    /// Completed, or failed (more failures than tolerated, or too few successes).
    pub status: BatchStatus,
    /// Why the batch stopped.
    pub completion_reason: CompletionReason,
    /// Items in the batch.
    #[serde(rename = "total")]
    pub total_count: usize,
    /// Items that started.
    #[serde(rename = "started")]
    pub started_count: usize,
    /// Items that succeeded.
    #[serde(rename = "succeeded")]
    pub success_count: usize,
    /// Items that failed.
    #[serde(rename = "failed")]
    pub failure_count: usize,
    /// Every item, in input order.
    pub items: Vec<BatchItem<T>>,
}

/// One item of a [`BatchResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
#[non_exhaustive]
pub struct BatchItem<T> {
    /// Its position in the input (for a parallel block, in declaration order).
    pub index: usize,
    /// For a parallel block, the branch's name (its step, seq or block name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What became of it.
    pub status: ItemStatus,
    /// Its result, if it succeeded: `Some` whatever the value, JSON `null` included.
    #[serde(
        default = "none",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub result: Option<T>,
    /// Its error, if it failed: the failing step's own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The path of the step whose failure failed it, if one step is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempts that step had, if one step is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

fn none<T>() -> Option<T> {
    None
}

/// A `result` field that is present holds a result, even `null`: `Option<T>`'s own
/// `Deserialize` would read `null` as "no result" and lose a succeeded item's value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The outcome of a whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchStatus {
    /// Enough items succeeded.
    Completed,
    /// Too many items failed, or too few succeeded.
    Failed,
}

/// Why a batch stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompletionReason {
    /// Every item ran to its end.
    AllCompleted,
    /// `min_successful` items succeeded; the rest were not started or were cancelled.
    MinSuccessfulReached,
    /// More items failed than tolerated; the rest were not started or were cancelled.
    FailureToleranceExceeded,
}

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ItemStatus {
    /// It succeeded.
    Succeeded,
    /// It failed for good.
    Failed,
    /// It was running when the batch was decided, and was cancelled.
    Cancelled,
    /// The batch was decided before it started.
    NotStarted,
}

impl<T> BatchResult<T> {
    /// The items that succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &BatchItem<T>> {
        self.items
            .iter()
            .filter(|i| i.status == ItemStatus::Succeeded)
    }

    /// The items that failed.
    pub fn failed(&self) -> impl Iterator<Item = &BatchItem<T>> {
        self.items.iter().filter(|i| i.status == ItemStatus::Failed)
    }

    /// Every item, in input order.
    pub fn all(&self) -> impl Iterator<Item = &BatchItem<T>> {
        self.items.iter()
    }

    /// The results of the items that succeeded, in input order.
    pub fn get_results(&self) -> Vec<&T> {
        self.succeeded().filter_map(|i| i.result.as_ref()).collect()
    }

    /// `Err` listing every failed item when the batch failed or any item failed.
    pub fn throw_if_error(&self) -> Result<(), String> {
        if self.status == BatchStatus::Completed && self.failure_count == 0 {
            return Ok(());
        }
        let failures: Vec<String> = self
            .failed()
            .map(|i| {
                format!(
                    "item {}: {}",
                    i.index,
                    i.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        Err(format!(
            "the batch {} ({} of {} items failed): {}",
            if self.status == BatchStatus::Failed {
                "failed"
            } else {
                "had failures"
            },
            self.failure_count,
            self.total_count,
            failures.join("; ")
        ))
    }
}

/// Decides when a batch is done, from its policy and its counts so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) total: usize,
    pub(crate) min_successful: Option<usize>,
    /// The most failures that still leave the batch able to succeed; `None` without a policy:
    /// nothing ends the batch early, and any failure fails it once every item ran.
    pub(crate) allowed_failures: Option<usize>,
}

impl Policy {
    pub(crate) fn new(
        total: usize,
        min_successful: Option<usize>,
        tolerated_failures: Option<usize>,
        tolerated_failure_percentage: Option<f64>,
    ) -> Self {
        let by_percentage = tolerated_failure_percentage.map(|p| allowed_by_percentage(p, total));
        let by_count = match (tolerated_failures, by_percentage) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // With only `min_successful`, the batch fails once that many can no longer succeed.
        let by_min = min_successful.map(|m| total.saturating_sub(m));
        let allowed_failures = match (by_count, by_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            total,
            min_successful,
            allowed_failures,
        }
    }

    /// Whether the batch is decided with these counts, and how.
    ///
    /// The reason is decided in the AWS durable-execution SDK's order: more failures than
    /// tolerated is [`CompletionReason::FailureToleranceExceeded`], even when every item ran
    /// to its end (without a policy no failure is tolerated, though every item runs); else
    /// every item ran to its end is [`CompletionReason::AllCompleted`], even when the last
    /// one also reached `min_successful`; else `min_successful` items succeeded is
    /// [`CompletionReason::MinSuccessfulReached`]. So a batch failed by its failures has the
    /// reason `FailureToleranceExceeded`, whenever they came.
    pub(crate) fn decided(
        &self,
        succeeded: usize,
        failed: usize,
    ) -> Option<(BatchStatus, CompletionReason)> {
        let all = succeeded + failed == self.total;
        let exceeded = match self.allowed_failures {
            Some(allowed) => failed > allowed,
            // No policy: nothing ends the batch early, and any failure fails it.
            None => all && failed > 0,
        };
        if exceeded {
            return Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded,
            ));
        }
        if all {
            // Every item succeeded and still fewer than `min_successful` (an array shorter
            // than it): failed, though no failure was one too many.
            let status = match self.min_successful.is_some_and(|m| succeeded < m) {
                true => BatchStatus::Failed,
                false => BatchStatus::Completed,
            };
            return Some((status, CompletionReason::AllCompleted));
        }
        if self.min_successful.is_some_and(|m| succeeded >= m) {
            return Some((
                BatchStatus::Completed,
                CompletionReason::MinSuccessfulReached,
            ));
        }
        None
    }
}

/// The most failures out of `total` that stay within `percentage` percent: the largest `f`
/// with `f * 100 <= percentage * total`, computed in integers (millionths of a percent), so
/// that `29%` of 100 is 29 and not `floor(0.29 * 100.0) = 28`.
fn allowed_by_percentage(percentage: f64, total: usize) -> usize {
    const SCALE: u128 = 1_000_000;
    // The macro accepts 0 to 100 only; a hand-built definition is clamped to that range.
    let millionths = (percentage.clamp(0.0, 100.0) * SCALE as f64).round() as u128;
    (millionths * total as u128 / (100 * SCALE)) as usize
}

/// As people read it: `completed`, `failed`.
impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
        })
    }
}

/// As people read it, e.g. `every item ran to its end`.
///
/// ```
/// use durable::batch::CompletionReason;
///
/// assert_eq!(
///     CompletionReason::FailureToleranceExceeded.to_string(),
///     "more items failed than tolerated"
/// );
/// ```
impl std::fmt::Display for CompletionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompletionReason::AllCompleted => "every item ran to its end",
            CompletionReason::MinSuccessfulReached => "enough items succeeded",
            CompletionReason::FailureToleranceExceeded => "more items failed than tolerated",
        })
    }
}

/// As people read it: `succeeded`, `failed`, `cancelled`, `not started`.
impl std::fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
            ItemStatus::NotStarted => "not started",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerated_failures_edge() {
        let p = Policy::new(10, None, Some(2), None);
        assert_eq!(
            p.decided(3, 2),
            None,
            "exactly at the tolerated count goes on"
        );
        assert_eq!(
            p.decided(3, 3),
            Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded
            ))
        );
        assert_eq!(
            p.decided(8, 2),
            Some((BatchStatus::Completed, CompletionReason::AllCompleted))
        );
    }

    #[test]
    fn percentage_rounds_down_and_min_successful_stops_early() {
        let p = Policy::new(10, None, None, Some(25.0));
        assert_eq!(p.decided(0, 2), None);
        assert!(p.decided(0, 3).is_some());
        let p = Policy::new(5, Some(1), None, None);
        assert_eq!(
            p.decided(1, 0),
            Some((
                BatchStatus::Completed,
                CompletionReason::MinSuccessfulReached
            ))
        );
        assert_eq!(p.decided(0, 4), None, "one item can still succeed");
        assert_eq!(
            p.decided(0, 5),
            Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded
            )),
            "every item ran to its end, and too many failed"
        );
        let p = Policy::new(5, Some(2), None, None);
        assert_eq!(
            p.decided(0, 4),
            Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded
            ))
        );
    }

    /// The AWS durable-execution SDK's completion-reason cases
    /// (`concurrent-execution-handler.test.ts`, and the examples
    /// `map/failure-threshold-exceeded-count` and `-percentage`), as counts.
    #[test]
    fn the_reason_follows_the_sdks_order() {
        use BatchStatus::*;
        use CompletionReason::*;
        // Items 1..5 where 1-3 fail, `toleratedFailureCount: 2` or `toleratedFailurePercentage:
        // 50`: exceeded, whether the third failure came last or first.
        for p in [
            Policy::new(5, None, Some(2), None),
            Policy::new(5, None, None, Some(50.0)),
        ] {
            assert_eq!(p.decided(2, 2), None);
            assert_eq!(p.decided(2, 3), Some((Failed, FailureToleranceExceeded)));
            assert_eq!(p.decided(0, 3), Some((Failed, FailureToleranceExceeded)));
            assert_eq!(p.decided(3, 2), Some((Completed, AllCompleted)));
        }
        // "should stop on toleratedFailureCount" (1 of 3) and "...Percentage" (40% of 3).
        for p in [
            Policy::new(3, None, Some(1), None),
            Policy::new(3, None, None, Some(40.0)),
        ] {
            assert_eq!(p.decided(0, 1), None);
            assert_eq!(p.decided(0, 2), Some((Failed, FailureToleranceExceeded)));
            assert_eq!(p.decided(1, 2), Some((Failed, FailureToleranceExceeded)));
        }
        // "should stop early with minSuccessful".
        let p = Policy::new(3, Some(1), None, None);
        assert_eq!(p.decided(1, 0), Some((Completed, MinSuccessfulReached)));
        // "should complete when all items finish with some failures but minSuccessful met":
        // the last item reaching `min_successful` is every item having run.
        let p = Policy::new(2, Some(1), None, None);
        assert_eq!(p.decided(0, 1), None);
        assert_eq!(p.decided(1, 1), Some((Completed, AllCompleted)));
        // Without a policy (the SDK's empty completion config) no failure is tolerated: every
        // item runs here, and the batch fails with the tolerance exceeded.
        let p = Policy::new(2, None, None, None);
        assert_eq!(p.decided(0, 1), None, "every item runs");
        assert_eq!(p.decided(1, 1), Some((Failed, FailureToleranceExceeded)));
        assert_eq!(p.decided(2, 0), Some((Completed, AllCompleted)));
        // The last item exceeding the tolerance: every item ran, and the tolerance decides.
        let p = Policy::new(3, None, Some(0), None);
        assert_eq!(p.decided(2, 1), Some((Failed, FailureToleranceExceeded)));
    }

    #[test]
    fn an_array_shorter_than_min_successful_fails_having_run_every_item() {
        let p = Policy::new(2, Some(3), None, None);
        assert_eq!(p.decided(1, 0), None);
        assert_eq!(
            p.decided(2, 0),
            Some((BatchStatus::Failed, CompletionReason::AllCompleted))
        );
        assert_eq!(
            p.decided(0, 1),
            Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded
            ))
        );
        let p = Policy::new(0, Some(1), None, None);
        assert_eq!(
            p.decided(0, 0),
            Some((BatchStatus::Failed, CompletionReason::AllCompleted))
        );
    }

    #[test]
    fn percentage_boundary_for_every_percentage_and_size() {
        for total in [1usize, 3, 7, 50, 90, 100] {
            for percentage in 0..=100usize {
                let p = Policy::new(total, None, None, Some(percentage as f64));
                for failed in 0..=total {
                    // Fails only when more than `percentage`% of all items failed.
                    let over = failed * 100 > percentage * total;
                    let failed_now = matches!(p.decided(0, failed), Some((BatchStatus::Failed, _)));
                    assert_eq!(
                        failed_now,
                        over,
                        "{failed} of {total} failed at {percentage}%: {:?}",
                        p.decided(0, failed)
                    );
                }
            }
        }
        // The cases the float computation got wrong.
        for (total, percentage) in [(100, 29), (50, 58), (90, 70), (100, 57), (100, 58)] {
            let p = Policy::new(total, None, None, Some(percentage as f64));
            let allowed = percentage * total / 100;
            assert_eq!(
                p.allowed_failures,
                Some(allowed),
                "{percentage}% of {total}"
            );
        }
        assert_eq!(
            Policy::new(8, None, None, Some(12.5)).allowed_failures,
            Some(1)
        );
        assert_eq!(
            Policy::new(7, None, None, Some(12.5)).allowed_failures,
            Some(0)
        );
    }

    #[test]
    fn a_null_result_is_a_result() {
        let text = serde_json::json!({
            "status": "completed", "completion_reason": "all_completed",
            "total": 3, "started": 3, "succeeded": 3, "failed": 0,
            "items": [
                {"index": 0, "status": "succeeded", "result": 1},
                {"index": 1, "status": "succeeded", "result": null},
                {"index": 2, "status": "succeeded", "result": 3}
            ]
        });
        let batch: BatchResult<serde_json::Value> = serde_json::from_value(text.clone()).unwrap();
        let expected = [
            serde_json::json!(1),
            serde_json::Value::Null,
            serde_json::json!(3),
        ];
        assert_eq!(batch.get_results(), expected.iter().collect::<Vec<_>>());
        let batch: BatchResult<Option<u32>> = serde_json::from_value(text).unwrap();
        assert_eq!(batch.get_results(), vec![&Some(1), &None, &Some(3)]);
        // And it survives a round trip.
        let again: BatchResult<Option<u32>> =
            serde_json::from_value(serde_json::to_value(&batch).unwrap()).unwrap();
        assert_eq!(again, batch);
    }

    #[test]
    fn without_a_policy_every_item_runs_and_any_failure_fails_the_batch() {
        let p = Policy::new(3, None, None, None);
        assert_eq!(p.decided(1, 1), None);
        assert_eq!(
            p.decided(2, 1),
            Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded
            ))
        );
        assert_eq!(
            p.decided(3, 0),
            Some((BatchStatus::Completed, CompletionReason::AllCompleted))
        );
    }
}
