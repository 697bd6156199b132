//! Sequences: the top level, a `seq` block and each map item run their nodes one after
//! another, each from the state the previous one left.

use std::sync::Arc;

use serde_json::Value;

use crate::step::BoxFuture;

use super::{child, Abort, Address, Done, RunTask, Scope};

impl RunTask {
    /// Runs the children of `address` (the top level when empty) one after another.
    pub(super) fn exec_seq(
        self: &Arc<Self>,
        address: Address,
        state: Value,
        scope: Scope,
    ) -> BoxFuture<'_, Result<Done, Abort>> {
        Box::pin(async move {
            let mut done = Done {
                state,
                seq: 0,
                skipped: Vec::new(),
            };
            for i in 0..self.nodes_at(&address).len() {
                let next = self
                    .exec_node(child(&address, i), done.state, Arc::clone(&scope))
                    .await?;
                done.state = next.state;
                done.seq = done.seq.max(next.seq);
                done.skipped.extend(next.skipped);
            }
            Ok(done)
        })
    }
}
