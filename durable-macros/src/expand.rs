//! Code generation: the workflow's unit struct and its `Workflow` impl.
//!
//! Generated code names only `::durable::__private` (and `::core`), so that it compiles
//! wherever the user's crate depends on `durable`, whatever is in scope.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::model::{Backoff, Item, Merge, OnError, Parallel, Retry, Step, Workflow};

/// The struct, its `Workflow` impl and, when `checked` failed, the errors.
///
/// With errors the impl's `definition` is a stub: the struct and impl still exist so that the
/// code using the workflow does not add "cannot find" errors to the real ones.
pub fn expand(workflow: &Workflow, checked: syn::Result<()>) -> TokenStream {
    let Workflow {
        docs, vis, name, ..
    } = workflow;
    let name_str = name.unraw().to_string();
    let state = match &workflow.state {
        Some(ty) => ty.to_token_stream(),
        None => quote!(::durable::__private::Data),
    };
    let (errors, body) = match checked {
        Ok(()) => (TokenStream::new(), definition(workflow, &name_str)),
        Err(errors) => (errors.to_compile_error(), stub(workflow)),
    };
    quote! {
        #errors

        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::default::Default,
        )]
        #vis struct #name;

        impl ::durable::__private::Workflow for #name {
            type State = #state;
            const NAME: &'static str = #name_str;

            fn definition(&self) -> ::durable::__private::Definition {
                #body
            }
        }
    }
}

fn definition(workflow: &Workflow, name: &str) -> TokenStream {
    let description = &workflow.description;
    let nodes = workflow.items.iter().map(node);
    quote! {
        ::durable::__private::Definition::new(
            #name,
            #description,
            ::core::convert::From::from([#(#nodes),*]),
        )
    }
}

/// The body of `definition` when the macro reported errors: never run, since the build fails.
fn stub(workflow: &Workflow) -> TokenStream {
    // Naming each step's function keeps it from being reported as unused on top of the errors.
    let mut funcs = Vec::new();
    collect_funcs(&workflow.items, &mut funcs);
    quote! {
        #(let _ = #funcs;)*
        ::core::unreachable!("`workflow!` reported errors")
    }
}

fn collect_funcs<'a>(items: &'a [Item], funcs: &mut Vec<&'a syn::ExprPath>) {
    for item in items {
        match item {
            Item::Step(step) => funcs.push(&step.func),
            Item::Parallel(block) => collect_funcs(&block.branches, funcs),
        }
    }
}

fn node(item: &Item) -> TokenStream {
    match item {
        Item::Step(step) => step_node(step),
        Item::Parallel(block) => parallel_node(block),
    }
}

fn step_node(step: &Step) -> TokenStream {
    let Step { name, func, retry } = step;
    // Spanned at the user's path: a function that is missing or has the wrong signature is
    // reported at the step in the `workflow!`, not at the macro call as a whole.
    let erased = quote_spanned! {func.span()=>
        ::durable::__private::erase::<<Self as ::durable::__private::Workflow>::State, _, _>(#func)
    };
    let retry = match retry {
        Some(retry) => retry_policy(retry),
        None => quote!(::core::default::Default::default()),
    };
    quote! {
        ::durable::__private::Node::step(
            #name,
            #erased,
            ::durable::__private::StepOptions { retry: #retry },
        )
    }
}

/// A `RetryPolicy` literal with the options given; `RetryPolicy::default()` supplies the rest,
/// so the defaults live in one place, the runtime.
fn retry_policy(retry: &Retry) -> TokenStream {
    let millis = |ms: u64| {
        let ms = Literal::u64_suffixed(ms);
        quote!(::durable::__private::Duration::from_millis(#ms))
    };
    let mut fields = Vec::new();
    if let Some(n) = retry.max_attempts {
        let n = Literal::u32_suffixed(n);
        fields.push(quote!(max_attempts: #n));
    }
    if let Some(backoff) = retry.backoff {
        let variant = match backoff {
            Backoff::Constant => quote!(Constant),
            Backoff::Linear => quote!(Linear),
            Backoff::Exponential => quote!(Exponential),
        };
        fields.push(quote!(backoff: ::durable::__private::Backoff::#variant));
    }
    if let Some(ms) = retry.initial_ms {
        let initial = millis(ms);
        fields.push(quote!(initial: #initial));
    }
    if let Some(m) = retry.multiplier {
        let m = Literal::f64_suffixed(m);
        fields.push(quote!(multiplier: #m));
    }
    if let Some(ms) = retry.max_interval_ms {
        let max_interval = millis(ms);
        fields.push(quote!(max_interval: #max_interval));
    }
    if let Some(jitter) = retry.jitter {
        fields.push(quote!(jitter: #jitter));
    }
    // Every field given: `..Default::default()` would be a needless update.
    let rest = (fields.len() < 6).then(|| quote!(..::core::default::Default::default()));
    quote! {
        ::durable::__private::RetryPolicy { #(#fields,)* #rest }
    }
}

fn parallel_node(block: &Parallel) -> TokenStream {
    let merge = match block.merge {
        Merge::DeepMerge => quote!(DeepMerge),
        Merge::LastWins => quote!(LastWins),
        Merge::Collect => quote!(Collect),
    };
    let on_error = match block.on_error {
        OnError::FailFast => quote!(FailFast),
        OnError::CompleteAll => quote!(CompleteAll),
    };
    let branches = block.branches.iter().map(node);
    quote! {
        ::durable::__private::Node::parallel(
            ::durable::__private::Merge::#merge,
            ::durable::__private::OnError::#on_error,
            ::core::convert::From::from([#(#branches),*]),
        )
    }
}
