//! Compile-time checks that a typed state has the fields the engine writes into it.
//!
//! A parallel block with `merge = collect` writes `parallel_results`, a parallel block or dag
//! with an optional step writes `parallel_errors` when that step fails, and a map or a named
//! parallel block writes its batch result under its own name. serde drops a field the state type does not have, so for
//! a typed state (`state = T`, or a map's `item = T`) the macro emits a function, never
//! called, that names each such field on the type, spanned at the block that writes it: a
//! missing field is a compiler error there, and a field of a type that cannot hold what is
//! written fails a bound of `durable::__private::fields` that says which type to write.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::Type;

use crate::model::{self, Item, Merge, Wake, Workflow};

/// The checking functions for `workflow`; empty when no typed state receives a field.
pub fn checks(workflow: &Workflow) -> TokenStream {
    let mut out = Vec::new();
    walk(&workflow.items, workflow.state.as_ref(), false, &mut out);
    if out.is_empty() {
        return TokenStream::new();
    }
    let fns = out.iter().enumerate().map(|(i, check)| {
        let name = quote::format_ident!("__durable_state_field_{}", i);
        let Check { ty, body } = check;
        quote! {
            #[allow(dead_code, non_snake_case, clippy::needless_borrow)]
            fn #name(state: &#ty) {
                #body
            }
        }
    });
    quote! {
        const _: () = {
            #(#fns)*
        };
    }
}

struct Check<'a> {
    /// The state type that must have the field.
    ty: &'a Type,
    /// `fields::...(&state.field);`, spanned at the user's token.
    body: TokenStream,
}

/// `state` is the type the items' steps take (`None` for `Data`, which holds any key);
/// `concurrent` is whether a parallel block or dag around them (inside the same map item)
/// records their optional failures.
fn walk<'a>(
    items: &'a [Item],
    state: Option<&'a Type>,
    concurrent: bool,
    out: &mut Vec<Check<'a>>,
) {
    for item in items {
        match item {
            Item::Step(step) => {
                if let (Some(ty), true, true) = (typed(state), step.optional, concurrent) {
                    let span = step
                        .optional_at
                        .unwrap_or_else(|| step.func.path.segments[0].ident.span());
                    out.push(field(ty, "parallel_errors", span));
                }
            }
            Item::Parallel(block) => {
                if let (Some(ty), Merge::Collect) = (typed(state), block.merge) {
                    let span = block.merge_at.unwrap_or_else(Span::call_site);
                    out.push(field(ty, "parallel_results", span));
                }
                // A named block stores its batch result (branch changes) under its name.
                if let (Some(ty), Some(name), Some(span)) =
                    (typed(state), &block.name, block.name_at)
                {
                    let ident = syn::Ident::new(name, span);
                    let body = quote_spanned! {span=>
                        let _ = ::durable::__private::fields::parallel_batch(&state.#ident);
                    };
                    out.push(Check { ty, body });
                }
                walk(&block.branches, state, true, out);
            }
            // The payload goes into the state under the item's name: any type that holds it
            // (it is decoded into the field when the state is).
            Item::Wait(model::Wait { ident, .. })
            | Item::Callback(model::Callback { ident, .. }) => {
                if let Some(ty) = typed(state) {
                    let span = ident.span();
                    let body = quote_spanned! {span=>
                        let _ = &state.#ident;
                    };
                    out.push(Check { ty, body });
                }
            }
            // The child's output goes into the field: it must be of the child's state type.
            Item::Call(model::Call {
                ident, workflow, ..
            }) => {
                if let Some(ty) = typed(state) {
                    let span = ident.span();
                    let body = quote_spanned! {span=>
                        ::durable::__private::fields::child_state(&#workflow, &state.#ident);
                    };
                    out.push(Check { ty, body });
                }
            }
            Item::Seq(seq) => walk(&seq.items, state, concurrent, out),
            Item::Dag(dag) => {
                for (node, _) in &dag.nodes {
                    walk(std::slice::from_ref(node), state, true, out);
                }
            }
            Item::Sleep(sleep) => {
                // The field a sleep reads its time from must be in a typed state.
                if let (Some(ty), Wake::Until(ident)) = (typed(state), &sleep.wake) {
                    let body = quote_spanned! {ident.span()=>
                        let _ = &state.#ident;
                    };
                    out.push(Check { ty, body });
                }
            }
            Item::Map(map) => {
                if let Some(ty) = typed(state) {
                    let item = match &map.item {
                        Some(item) => item.to_token_stream(),
                        None => quote!(::durable::__private::Data),
                    };
                    let ident = &map.ident;
                    let span = ident.span();
                    let body = quote_spanned! {span=>
                        let _ = ::durable::__private::fields::map_result::<#item, _>(&state.#ident);
                    };
                    out.push(Check { ty, body });
                }
                // Each item's steps take the item type; failures inside an item stay there.
                walk(&map.items, map.item.as_ref(), false, out);
            }
        }
    }
}

/// The check that `ty` has `field` of a type that `fields::<field>` accepts; every token is
/// spanned at `span`, so that the compiler's errors point there and nowhere else.
fn field<'a>(ty: &'a Type, field: &str, span: Span) -> Check<'a> {
    let ident = syn::Ident::new(field, span);
    Check {
        ty,
        body: quote_spanned! {span=>
            let _ = ::durable::__private::fields::#ident(&state.#ident);
        },
    }
}

/// `state` unless it is `Data` (as written: `Data`, `durable::Data`, ...), which holds any
/// key, so that nothing is checked for it.
fn typed(state: Option<&Type>) -> Option<&Type> {
    let ty = state?;
    if let Type::Path(path) = ty {
        let last = path.path.segments.last()?;
        if path.qself.is_none() && last.ident == "Data" && last.arguments.is_none() {
            return None;
        }
    }
    Some(ty)
}
