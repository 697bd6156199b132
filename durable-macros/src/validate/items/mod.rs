//! One file per DSL item. Each holds the item's option table, the reading of its options,
//! the checks that concern the item alone, and its lowering into [`crate::model`]: what an
//! option means to an item is said in one place. What concerns several items (unique names,
//! where `after` goes, the dags' `after`s) is in `checks`, and the values options take in
//! `options`.
//!
//! An item's method on `Walk` takes the item as parsed and the `Parent` it is in, and returns
//! a [`Node`]. It calls `define` for its name, if it has one, and `placed` for its `after`, and
//! walks its body, if it has one, with `self.items(...)` (or `self.node(...)` per node).

use std::fmt::Display;

use proc_macro2::{Delimiter, Group, TokenStream};

use super::ctxt::Ctxt;
use super::options::{after_list, unique};
use super::{After, Parent, Walk};
use crate::ast::{self, Options};
use crate::model;
use crate::suggest;

mod call;
mod callback;
mod dag;
mod map;
mod parallel;
mod seq;
mod sleep;
mod step;
mod wait_for;

use step::STEP_OPTIONS;

/// A checked item, with what its block needs besides the model.
pub(super) struct Node<'a> {
    /// The item, lowered.
    pub(super) item: model::Item,
    /// `after = [...]`, when given and allowed, which only a dag's nodes are.
    pub(super) after: Option<After<'a>>,
    /// The name a dag's `after` refers to it by (unraw); `None` for a `dag` or an unnamed
    /// `parallel` block.
    pub(super) name: Option<String>,
    /// What it is, in messages: `step`, `parallel`, `dag`, `seq`, `map`, `sleep`, `wait_for`
    /// or `callback`.
    pub(super) kind: &'static str,
}

impl<'a> Walk<'a> {
    /// One item, checked and lowered; `None` for an item that did not parse, whose error is
    /// reported.
    pub(super) fn node(&mut self, item: &'a ast::Item, parent: Parent<'a>) -> Option<Node<'a>> {
        Some(match item {
            ast::Item::Step(step) => self.step(step, parent),
            ast::Item::Parallel(block) => self.parallel(block, parent),
            ast::Item::Dag(block) => self.dag(block, parent),
            ast::Item::Seq(seq) => self.seq(seq, parent),
            ast::Item::Map(map) => self.map(map, parent),
            ast::Item::Sleep(sleep) => self.sleep(sleep, parent),
            ast::Item::WaitFor(wait) => self.wait_for(wait, parent),
            ast::Item::Callback(callback) => self.callback(callback, parent),
            ast::Item::Call(call) => self.call(call, parent),
            ast::Item::Error(error) => {
                self.cx.push(error.clone());
                return None;
            }
        })
    }

    /// The options of a block whose only option is `after`.
    fn after_only(
        &mut self,
        options: Option<&'a Options>,
        kind: &str,
        valid: &[&str],
    ) -> Option<After<'a>> {
        let mut after = None;
        for opt in unique(self.cx, options) {
            match opt.key.to_string().as_str() {
                "after" => after = after_list(self.cx, opt),
                key if STEP_OPTIONS.contains(&key) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "{}; `{key}` is a step option: give it to the steps inside",
                        suggest::unknown(kind, key, valid)
                    ),
                ),
                key => self.cx.error(&opt.key, suggest::unknown(kind, key, valid)),
            }
        }
        after
    }
}

/// Reports an empty block, underlining it from `head` to its closing brace.
fn empty(cx: &mut Ctxt, head: TokenStream, body: &ast::Block, message: impl Display) {
    let mut braces = Group::new(Delimiter::Brace, TokenStream::new());
    braces.set_span(body.brace.span.join());
    cx.error(quote::quote!(#head #braces), message);
}
