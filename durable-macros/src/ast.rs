//! The syntax tree of the `workflow!` DSL, as written: every token keeps its span so that
//! `validate` can point at exactly what the user wrote.
//!
//! The tree is deliberately loose. Options are `key`, `key = value` or `key(...)` whatever the
//! key, and values are raw tokens: `validate` decides what is known and well formed, so that
//! one pass can report every mistake instead of stopping at the first.

use proc_macro2::{Span, TokenStream};
use syn::{token, Attribute, ExprPath, Ident, Token, Visibility};

/// Keywords of the DSL, parsed as `syn` custom keywords.
pub mod kw {
    syn::custom_keyword!(step);
    syn::custom_keyword!(parallel);
    syn::custom_keyword!(dag);
    syn::custom_keyword!(seq);
    syn::custom_keyword!(map);
    syn::custom_keyword!(sleep);
    syn::custom_keyword!(wait_for);
    syn::custom_keyword!(callback);
    syn::custom_keyword!(call);
}

/// The item keywords a workflow body accepts, for "did you mean" suggestions.
pub const ITEM_KEYWORDS: &[&str] = &[
    "step", "parallel", "dag", "seq", "map", "sleep", "wait_for", "callback", "call",
];

/// `#[doc] vis name(options) { items }`: one whole `workflow!` invocation.
pub struct Workflow {
    /// Outer attributes; only doc comments are valid, which `validate` checks.
    pub attrs: Vec<Attribute>,
    /// The visibility given to the generated struct.
    pub vis: Visibility,
    /// The workflow's name, which is also the generated struct's name.
    pub name: Ident,
    /// `(state = Type, retry(...))`, if given.
    pub options: Option<Options>,
    /// The body.
    pub body: Block,
}

/// `{ items }`: a workflow's body or a block's branches.
pub struct Block {
    /// The braces, whose span locates an empty block.
    pub brace: token::Brace,
    /// The items in declaration order, including the ones that failed to parse.
    pub items: Vec<Item>,
}

/// One element of a block.
///
/// New kinds of items (`sleep`, `wait_for`) become new variants here.
pub enum Item {
    /// `step name(options) = path;`
    Step(Step),
    /// `parallel(options) { items }`
    Parallel(Parallel),
    /// `dag(options) { items }`
    Dag(Dag),
    /// `seq name(options) { items }`
    Seq(Seq),
    /// `map name(options) { items }`
    Map(Map),
    /// `sleep name(for = 10m);` or `sleep name(until = field);`
    Sleep(Sleep),
    /// `wait_for name(options);`
    WaitFor(WaitFor),
    /// `callback name = path(options);`
    Callback(Callback),
    /// `call name = workflow(options);`
    Call(Call),
    /// An item that failed to parse. Parsing skipped past it and went on, so the error is
    /// reported together with those of the rest of the workflow.
    Error(syn::Error),
}

/// `step name(options) = path;`
pub struct Step {
    /// The `step` keyword.
    #[allow(dead_code)] // Kept so that the tree is complete; no diagnostic needs it yet.
    pub keyword: kw::step,
    /// The step's name, under which the journal records it.
    pub name: Ident,
    /// `(retry(...), timeout = ..., optional, after = [...])`, if given.
    pub options: Option<Options>,
    /// `= path` naming the function to call; without it the function is `name` itself.
    pub func: Option<(Token![=], ExprPath)>,
    /// The closing `;`. Missing is a validation error rather than a parse error, so that the
    /// step still takes part in the other checks.
    pub semi: Option<Token![;]>,
}

/// `parallel name(options) { items }`, the name optional.
pub struct Parallel {
    /// The `parallel` keyword.
    pub keyword: kw::parallel,
    /// The block's name, if given: its batch result's key in the state.
    pub name: Option<Ident>,
    /// `(merge = ..., on_error = ..., max_concurrency = ..., after = [...])`, if given.
    pub options: Option<Options>,
    /// The branches.
    pub body: Block,
}

/// `dag(options) { items }`
pub struct Dag {
    /// The `dag` keyword.
    pub keyword: kw::dag,
    /// `(after = [...])`, if given.
    pub options: Option<Options>,
    /// The nodes.
    pub body: Block,
}

/// `seq name(options) { items }`
pub struct Seq {
    /// The `seq` keyword.
    pub keyword: kw::seq,
    /// The sequence's name, which a dag's `after` can refer to.
    pub name: Ident,
    /// `(after = [...])`, if given.
    pub options: Option<Options>,
    /// The nodes, run in order.
    pub body: Block,
}

/// `map name(options) { items }`
pub struct Map {
    /// The `map` keyword.
    pub keyword: kw::map,
    /// The map's name: its batch result's key in the state, and its items' journal prefix.
    pub name: Ident,
    /// `(over = field, item = Type, max_concurrency = N, ...)`, if given (`over` is required,
    /// which `validate` checks).
    pub options: Option<Options>,
    /// The nodes each element runs, in order.
    pub body: Block,
}

/// `sleep name(options);`
pub struct Sleep {
    /// The `sleep` keyword.
    #[allow(dead_code)] // Kept so that the tree is complete; no diagnostic needs it yet.
    pub keyword: kw::sleep,
    /// The sleep's name, under which the journal records its wake time.
    pub name: Ident,
    /// `(for = 10m)` or `(until = field)`, and `after = [...]` in a dag (one of `for` and
    /// `until` is required, which `validate` checks).
    pub options: Option<Options>,
    /// The closing `;`, missing being a validation error as for a step.
    pub semi: Option<Token![;]>,
}

/// `wait_for name(options);`
pub struct WaitFor {
    /// The `wait_for` keyword.
    #[allow(dead_code)] // Kept so that the tree is complete; no diagnostic needs it yet.
    pub keyword: kw::wait_for,
    /// The signal's name: the key its payload lands under, and the wait's journal path.
    pub name: Ident,
    /// `(timeout = ..., retry(...), optional, after = [...])`, if given.
    pub options: Option<Options>,
    /// The closing `;`, missing being a validation error.
    pub semi: Option<Token![;]>,
}

/// `callback name = path(options);`
pub struct Callback {
    /// The `callback` keyword.
    #[allow(dead_code)] // Kept so that the tree is complete; no diagnostic needs it yet.
    pub keyword: kw::callback,
    /// The callback's name: the key its payload lands under, and its journal path.
    pub name: Ident,
    /// The submit function, after `=`.
    pub func: ExprPath,
    /// `(timeout = ..., retry(...), optional, after = [...])`, after the function, if given.
    pub options: Option<Options>,
    /// The closing `;`, missing being a validation error.
    pub semi: Option<Token![;]>,
}

impl WaitFor {
    /// Where a missing `;` is reported.
    pub fn end_span(&self) -> Span {
        match &self.options {
            Some(options) => options.paren.span.close(),
            None => self.name.span(),
        }
    }
}

/// `call name = workflow(options);`
pub struct Call {
    /// The `call` keyword.
    #[allow(dead_code)] // Kept so that the tree is complete; no diagnostic needs it yet.
    pub keyword: kw::call,
    /// The item's name: the state field of the child's input and output, and its journal path.
    pub name: Ident,
    /// The child workflow (the unit struct `workflow!` defines), after `=`.
    pub workflow: ExprPath,
    /// `(timeout = ..., optional, after = [...])`, after the workflow, if given.
    pub options: Option<Options>,
    /// The closing `;`, missing being a validation error.
    pub semi: Option<Token![;]>,
}

impl Call {
    /// Where a missing `;` is reported.
    pub fn end_span(&self) -> Span {
        match &self.options {
            Some(options) => options.paren.span.close(),
            None => match self.workflow.path.segments.last() {
                Some(last) => last.ident.span(),
                None => self.name.span(),
            },
        }
    }
}

impl Callback {
    /// Where a missing `;` is reported.
    pub fn end_span(&self) -> Span {
        match &self.options {
            Some(options) => options.paren.span.close(),
            None => match self.func.path.segments.last() {
                Some(last) => last.ident.span(),
                None => self.name.span(),
            },
        }
    }
}

/// `(option, option, ...)`
pub struct Options {
    /// The parentheses.
    pub paren: token::Paren,
    /// The options in the order written.
    pub list: Vec<Opt>,
}

/// One option: `key`, `key = value` or `key(options)`.
pub struct Opt {
    /// The option's name.
    pub key: Ident,
    /// What follows the name.
    pub value: OptValue,
}

/// What follows an option's name.
pub enum OptValue {
    /// Nothing: a bare flag such as `jitter`.
    Flag,
    /// `= tokens`, the tokens up to the next `,` at this level, never empty.
    Value(#[allow(dead_code)] Token![=], TokenStream),
    /// `(options)`, as in `retry(max_attempts = 3)`.
    List(Options),
}

impl Step {
    /// The span of the step's last token before its `;`, where a missing `;` is reported.
    pub fn end_span(&self) -> Span {
        if let Some((_, path)) = &self.func {
            if let Some(last) = path.path.segments.last() {
                return last.ident.span();
            }
        }
        match &self.options {
            Some(options) => options.paren.span.close(),
            None => self.name.span(),
        }
    }
}
