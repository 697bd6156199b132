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

use base64::Engine as _;
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

/// The prefix of tokens made now: `dcb2.<run>.<secret>`, each part base64url without padding;
/// `<run>` is `u` and the 16 bytes of a run id that is a UUID in its usual text form (the ids
/// the engine generates), else `s` and the id's UTF-8 bytes. About 50 characters for a
/// generated id.
const PREFIX: &str = "dcb2";
/// The prefix of tokens made by earlier versions: `dcb1.<run id in hex>.<128 bits in hex>`.
/// Runs still waiting hold such tokens, handed out to outside systems: they keep working.
const PREFIX_V1: &str = "dcb1";

/// A fresh token for a callback of `run`, with a secret of 128 bits from the operating
/// system's random source.
pub(crate) fn new_token(run: &RunId) -> String {
    let run_part = match uuid::Uuid::try_parse(run.as_str()) {
        Ok(id) if id.hyphenated().to_string() == run.as_str() => {
            format!("u{}", BASE64.encode(id.as_bytes()))
        }
        _ => format!("s{}", BASE64.encode(run.as_str())),
    };
    format!("{PREFIX}.{run_part}.{}", BASE64.encode(random_128()))
}

/// The run a token routes to, or why it is no token.
pub(crate) fn token_run(token: &str) -> Result<RunId, String> {
    let bad = || {
        format!(
            "`{}` is not a callback token (a token reads `{PREFIX}.<run>.<secret>`, as \
             Callback::token gave it)",
            token.chars().take(80).collect::<String>()
        )
    };
    let mut parts = token.split('.');
    let (Some(prefix), Some(run), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    match prefix {
        PREFIX => {
            if BASE64
                .decode(secret)
                .map_or(true, |bytes| bytes.len() != 16)
            {
                return Err(bad());
            }
            let (kind, encoded) = run.split_at_checked(1).ok_or_else(bad)?;
            let bytes = BASE64.decode(encoded).map_err(|_| bad())?;
            match kind {
                "u" => uuid::Uuid::from_slice(&bytes)
                    .map(|id| RunId::from(id.hyphenated().to_string()))
                    .map_err(|_| bad()),
                "s" if !bytes.is_empty() => {
                    String::from_utf8(bytes).map(RunId::from).map_err(|_| bad())
                }
                _ => Err(bad()),
            }
        }
        PREFIX_V1 => {
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
        _ => Err(bad()),
    }
}

/// base64url without padding: the token's parts need no escaping in a URL or a header.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 128 bits from the operating system's random source. Without one there is no secret to
/// hand out, and nothing to fall back on that an attacker could not guess: that is a panic of
/// the run's task, which fails the callback's attempt.
fn random_128() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source is readable");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_routes_to_its_run_and_two_tokens_differ() {
        for run in [RunId::from("order-7/ü.x"), RunId::generate()] {
            let (a, b) = (new_token(&run), new_token(&run));
            assert_ne!(a, b);
            assert_eq!(token_run(&a), Ok(run.clone()));
            let secret = a.rsplit('.').next().unwrap();
            assert_eq!(BASE64.decode(secret).unwrap().len(), 16, "128 bits");
        }
        // A generated run id's token is short: its UUID travels as 16 bytes.
        let token = new_token(&RunId::generate());
        assert_eq!(token.len(), "dcb2.".len() + 23 + 1 + 22, "{token}");
        for bad in [
            "",
            "dcb2",
            "dcb2.sAA.",
            "x.sb3JkZXI.AAAAAAAAAAAAAAAAAAAAAA",
            "dcb2.xb3JkZXI.AAAAAAAAAAAAAAAAAAAAAA",
            "dcb2.s.AAAAAAAAAAAAAAAAAAAAAA",
            "dcb2.uAAAA.AAAAAAAAAAAAAAAAAAAAAA",
            "dcb1",
            "dcb1.00.",
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

    #[test]
    fn a_token_of_an_earlier_version_still_routes_to_its_run() {
        // `dcb1.<"order-7" in hex>.<128 bits in hex>`, as runs still waiting may hold.
        let token = "dcb1.6f726465722d37.0123456789abcdef0123456789abcdef";
        assert_eq!(token_run(token), Ok(RunId::from("order-7")));
    }
}
