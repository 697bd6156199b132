//! Callbacks: `callback NAME = submit_fn(timeout = 1d);` hands a [`Callback`] with an
//! unguessable token to `submit_fn`, which gives it to an outside system (a payment provider,
//! a person's inbox); the run then waits until someone calls
//! [`Engine::complete_callback`](crate::Engine::complete_callback) or
//! [`fail_callback`](crate::Engine::fail_callback) with that token.
//!
//! The token is made once, journaled before `submit_fn` first runs, and reused by every
//! attempt and every replay: a crash after `submit_fn` ran but before its result was
//! journaled runs it again with the SAME token, so the outside system sees one callback.
//! It routes itself to its run (the run id is in it) and carries 128 random bits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::data::State;
use crate::step::{BoxFuture, StepContext, StepError};
use crate::RunId;

/// What `submit_fn` of a `callback` item receives: the token to hand out, and the step's
/// context.
///
/// ```
/// use durable::{Data, StepError};
/// use durable::callback::Callback;
///
/// // Hands the token to the outside system; the run then waits for it.
/// async fn request_payment(callback: Callback, data: Data) -> Result<Data, StepError> {
///     println!("POST /payments {{\"callback\": \"{}\"}}", callback.token());
///     Ok(data.assign("requested", true))
/// }
/// # let _ = request_payment;
/// ```
#[derive(Clone)]
pub struct Callback {
    token: Arc<str>,
    ctx: StepContext,
}

impl Callback {
    pub(crate) fn new(token: Arc<str>, ctx: StepContext) -> Self {
        Callback { token, ctx }
    }

    /// The token to hand to whoever completes the callback: the same on every attempt and
    /// after a restart.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The run it belongs to.
    pub fn run_id(&self) -> &RunId {
        self.ctx.run_id()
    }

    /// The context of `submit_fn`'s attempt (workflow, run, step, attempt).
    pub fn context(&self) -> &StepContext {
        &self.ctx
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("token", &self.token)
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// A function that can be a callback's `submit_fn`: `async fn(Callback, S) -> Result<S, E>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the submit function of a callback of a workflow whose state is `{S}`",
    label = "this function has the wrong signature",
    note = "write it as `async fn(callback: durable::callback::Callback, state: {S}) -> Result<{S}, StepError>`"
)]
pub trait SubmitFn<S>: Send + Sync + 'static {
    /// Runs one attempt.
    fn call(&self, callback: Callback, state: S) -> BoxFuture<'static, Result<S, StepError>>;
}

impl<S, F, Fut, E> SubmitFn<S> for F
where
    F: Fn(Callback, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<StepError>,
{
    fn call(&self, callback: Callback, state: S) -> BoxFuture<'static, Result<S, StepError>> {
        let fut = self(callback, state);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A submit function with its state type erased to JSON.
pub type ErasedSubmit =
    Arc<dyn Fn(Callback, Value) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync>;

/// Erases `f`'s state type (what `workflow!` generates for `callback NAME = f`).
pub fn erase_submit<S, F>(f: F) -> ErasedSubmit
where
    S: State,
    F: SubmitFn<S>,
{
    let f = Arc::new(f);
    Arc::new(move |callback: Callback, input: Value| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let state = S::from_json(input).map_err(|e| {
                StepError::terminal(format!(
                    "the state does not decode into `{}`: {e}",
                    std::any::type_name::<S>()
                ))
            })?;
            let output = f.call(callback, state).await?;
            output.into_json().map_err(|e| {
                StepError::terminal(format!("the step's output does not encode as JSON: {e}"))
            })
        }) as BoxFuture<'static, _>
    })
}

const PREFIX: &str = "dcb1";

/// A fresh token for a callback of `run`: `dcb1.<run id in hex>.<128 random bits in hex>`.
pub(crate) fn new_token(run: &RunId) -> String {
    let mut out = String::with_capacity(PREFIX.len() + 2 + 2 * run.as_str().len() + 32);
    out.push_str(PREFIX);
    out.push('.');
    for b in run.as_str().bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push('.');
    for b in random_128() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The run a token routes to, or why it is no token.
pub(crate) fn token_run(token: &str) -> Result<RunId, String> {
    let bad = || {
        format!(
            "`{}` is not a callback token (a token reads `{PREFIX}.<hex>.<hex>`, as \
             Callback::token gave it)",
            token.chars().take(80).collect::<String>()
        )
    };
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(run), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    if run.is_empty() || run.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..run.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&run[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map(RunId::from).map_err(|_| bad())
}

/// 128 bits from the operating system's random source (`/dev/urandom`); where there is none,
/// from std's randomly keyed SipHash over the time, the process and a counter.
fn random_128() -> [u8; 16] {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return bytes;
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for half in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_routes_to_its_run_and_two_tokens_differ() {
        let run = RunId::from("order-7/ü");
        let (a, b) = (new_token(&run), new_token(&run));
        assert_ne!(a, b);
        assert_eq!(token_run(&a), Ok(run.clone()));
        let secret = a.rsplit('.').next().unwrap();
        assert_eq!(secret.len(), 32, "128 bits");
        for bad in [
            "",
            "dcb1",
            "dcb1.00.",
            "x.6f.00000000000000000000000000000000",
            "dcb1.6.00000000000000000000000000000000",
        ] {
            assert!(
                token_run(bad)
                    .unwrap_err()
                    .contains("is not a callback token"),
                "{bad}"
            );
        }
    }
}
