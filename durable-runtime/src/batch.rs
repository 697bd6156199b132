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
///         {"index": 1, "status": "failed", "error": "bounced"},
///         {"index": 2, "status": "not_started"}
///     ]
/// }));
/// let batch: BatchResult<String> = state.get("sends").unwrap();
/// assert_eq!(batch.status, BatchStatus::Failed);
/// assert_eq!(batch.completion_reason, CompletionReason::FailureToleranceExceeded);
/// assert_eq!(batch.get_results(), vec![&"ok-0".to_owned()]);
/// assert_eq!(batch.failed().next().unwrap().error.as_deref(), Some("bounced"));
/// assert_eq!(batch.all().filter(|i| i.status == ItemStatus::NotStarted).count(), 1);
/// assert!(batch.throw_if_error().unwrap_err().contains("item 1: bounced"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
pub struct BatchItem<T> {
    /// Its position in the input.
    pub index: usize,
    /// What became of it.
    pub status: ItemStatus,
    /// Its result, if it succeeded.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// Its error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

/// The outcome of a whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Enough items succeeded.
    Completed,
    /// Too many items failed, or too few succeeded.
    Failed,
}

/// Why a batch stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        self.items
            .iter()
            .filter_map(|i| i.result.as_ref())
            .collect()
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
    /// The most failures that still leave the batch able to succeed; `None`: no limit.
    pub(crate) allowed_failures: Option<usize>,
}

impl Policy {
    pub(crate) fn new(
        total: usize,
        min_successful: Option<usize>,
        tolerated_failures: Option<usize>,
        tolerated_failure_percentage: Option<f64>,
    ) -> Self {
        let by_percentage =
            tolerated_failure_percentage.map(|p| ((p / 100.0) * total as f64).floor() as usize);
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
    pub(crate) fn decided(
        &self,
        succeeded: usize,
        failed: usize,
    ) -> Option<(BatchStatus, CompletionReason)> {
        if self
            .allowed_failures
            .is_some_and(|allowed| failed > allowed)
        {
            return Some((
                BatchStatus::Failed,
                CompletionReason::FailureToleranceExceeded,
            ));
        }
        if self.min_successful.is_some_and(|m| succeeded >= m) {
            return Some((
                BatchStatus::Completed,
                CompletionReason::MinSuccessfulReached,
            ));
        }
        if succeeded + failed == self.total {
            let too_many = self.allowed_failures.is_none() && failed > 0;
            let too_few = self.min_successful.is_some_and(|m| succeeded < m);
            let status = if too_many || too_few {
                BatchStatus::Failed
            } else {
                BatchStatus::Completed
            };
            return Some((status, CompletionReason::AllCompleted));
        }
        None
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
            ))
        );
    }

    #[test]
    fn without_a_policy_every_item_runs_and_any_failure_fails_the_batch() {
        let p = Policy::new(3, None, None, None);
        assert_eq!(p.decided(1, 1), None);
        assert_eq!(
            p.decided(2, 1),
            Some((BatchStatus::Failed, CompletionReason::AllCompleted))
        );
        assert_eq!(
            p.decided(3, 0),
            Some((BatchStatus::Completed, CompletionReason::AllCompleted))
        );
    }
}
