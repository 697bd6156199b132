//! The error collector of the pass.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;
use syn::Error;

/// Collects errors so that all of them are reported, not just the first.
#[derive(Default)]
pub(super) struct Ctxt {
    errors: Vec<Error>,
}

impl Ctxt {
    /// Records an error spanning `tokens`.
    pub(super) fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(Error::new_spanned(tokens, message));
    }

    /// Records an error found earlier, such as a parse error of a lenient parse.
    pub(super) fn push(&mut self, error: Error) {
        self.errors.push(error);
    }

    /// Records an error at `span`.
    pub(super) fn error_at(&mut self, span: Span, message: impl Display) {
        self.errors.push(Error::new(span, message));
    }

    /// How many errors so far, to tell whether a check added any.
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    /// All errors combined into one, or `Ok` when there are none.
    pub(super) fn finish(self) -> syn::Result<()> {
        let mut errors = self.errors.into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                for error in errors {
                    first.combine(error);
                }
                Err(first)
            }
        }
    }
}
