//! Code generation: the workflow's unit struct and its `Workflow` impl.
//!
//! Generated code names only `::durable::__private` (and `::core`), so that it compiles
//! wherever the user's crate depends on `durable`, whatever is in scope.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::model::{
    Backoff, Call, Callback, Dag, Item, Map, MapOptions, Merge, OnError, Over, Parallel, Retry,
    Seq, Sleep, Step, Wait, Wake, Workflow,
};

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
    let (errors, body, fields) = match checked {
        Ok(()) => (
            TokenStream::new(),
            definition(workflow, &name_str),
            crate::fields::checks(workflow),
        ),
        Err(errors) => (
            errors.to_compile_error(),
            stub(workflow),
            TokenStream::new(),
        ),
    };
    // A private state type in a `pub` workflow is an error of the impl below ("private type in
    // public interface"): spanned so that it points at the user's `pub`.
    let vis_span = match vis {
        syn::Visibility::Inherited => name.span(),
        vis => vis.span(),
    };
    let state_type = quote_spanned! {vis_span=> type State = #state; };
    let impl_kw = quote_spanned! {vis_span=> impl };
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

        #impl_kw ::durable::__private::Workflow for #name {
            #state_type
            const NAME: &'static str = #name_str;

            fn definition(&self) -> ::durable::__private::Definition {
                #body
            }
        }

        #fields
    }
}

fn definition(workflow: &Workflow, name: &str) -> TokenStream {
    let description = &workflow.description;
    let nodes = workflow
        .items
        .iter()
        .map(|item| node(item, StateType::Workflow));
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
            Item::Callback(callback) => funcs.push(&callback.func),
            Item::Wait(_) | Item::Call(_) => {}
            Item::Parallel(block) => collect_funcs(&block.branches, funcs),
            Item::Seq(seq) => collect_funcs(&seq.items, funcs),
            Item::Map(map) => collect_funcs(&map.items, funcs),
            Item::Sleep(_) => {}
            Item::Dag(dag) => {
                for (node, _) in &dag.nodes {
                    collect_funcs(std::slice::from_ref(node), funcs);
                }
            }
        }
    }
}

/// The state type of a step: the workflow's, or the item type of the innermost map around it.
#[derive(Clone, Copy)]
enum StateType<'a> {
    /// `<Self as Workflow>::State`.
    Workflow,
    /// The default item type of a map, `Data`.
    Data,
    /// A map's `item = T`.
    Item(&'a syn::Type),
}

impl StateType<'_> {
    /// The type, with the generated paths spanned at `span`: a state type that is no `State`
    /// is then reported at the step, like a wrong signature. The user's own `item = T` keeps
    /// its span, so that such an error points at `T`.
    fn tokens(self, span: proc_macro2::Span) -> TokenStream {
        match self {
            StateType::Workflow => {
                quote_spanned!(span=> <Self as ::durable::__private::Workflow>::State)
            }
            StateType::Data => quote_spanned!(span=> ::durable::__private::Data),
            StateType::Item(ty) => ty.to_token_stream(),
        }
    }
}

/// The `Node` of `item`, whose steps take `state`.
fn node(item: &Item, state: StateType) -> TokenStream {
    match item {
        Item::Step(step) => step_node(step, state),
        Item::Parallel(block) => parallel_node(block, state),
        Item::Seq(seq) => seq_node(seq, state),
        Item::Dag(dag) => dag_node(dag, state),
        Item::Map(map) => map_node(map),
        Item::Sleep(sleep) => sleep_node(sleep),
        Item::Wait(wait) => wait_node(wait),
        Item::Callback(callback) => callback_node(callback, state),
        Item::Call(call) => call_node(call),
    }
}

/// `StepOptions { retry, timeout, optional }` of a wait or a callback.
fn wait_options(retry: &Option<Retry>, timeout_ms: Option<u64>, optional: bool) -> TokenStream {
    let retry = match retry {
        Some(retry) => retry_policy(retry),
        None => quote!(::core::default::Default::default()),
    };
    let timeout = match timeout_ms {
        Some(ms) => {
            let duration = millis(ms);
            quote!(::core::option::Option::Some(#duration))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::durable::__private::StepOptions {
            retry: #retry,
            timeout: #timeout,
            optional: #optional,
        }
    }
}

fn wait_node(wait: &Wait) -> TokenStream {
    let name = &wait.name;
    let options = wait_options(&wait.retry, wait.timeout_ms, wait.optional);
    quote! {
        ::durable::__private::Node::wait_for(#name, #options)
    }
}

fn callback_node(callback: &Callback, state: StateType) -> TokenStream {
    let Callback {
        name,
        func,
        retry,
        timeout_ms,
        optional,
        ..
    } = callback;
    let state = state.tokens(func.span());
    // Spanned at the user's path, so a wrong signature is reported there.
    let erased = quote_spanned! {func.span()=>
        ::durable::__private::erase_submit::<#state, _>(#func)
    };
    let func_name = func
        .to_token_stream()
        .to_string()
        .split_whitespace()
        .collect::<String>();
    let options = wait_options(retry, *timeout_ms, *optional);
    quote! {
        ::durable::__private::Node::callback(#name, #func_name, #erased, #options)
    }
}

fn call_node(call: &Call) -> TokenStream {
    let Call {
        name,
        workflow,
        timeout_ms,
        optional,
        ..
    } = call;
    let options = wait_options(&None, *timeout_ms, *optional);
    // Spanned at the user's path, so a path that is no workflow is reported there.
    quote_spanned! {workflow.span()=>
        ::durable::__private::call_node(
            #name,
            #workflow,
            || ::durable::__private::Workflow::definition(&#workflow),
            #options,
        )
    }
}

fn sleep_node(sleep: &Sleep) -> TokenStream {
    let name = &sleep.name;
    match &sleep.wake {
        Wake::ForMs(ms) => {
            let duration = millis(*ms);
            quote!(::durable::__private::Node::sleep_for(#name, #duration))
        }
        Wake::Until(field) => {
            let field = field.unraw().to_string();
            quote!(::durable::__private::Node::sleep_until(#name, #field))
        }
    }
}

fn step_node(step: &Step, state: StateType) -> TokenStream {
    let Step {
        name,
        func,
        retry,
        timeout_ms,
        optional,
        ..
    } = step;
    // Spanned at the user's path: a function that is missing or has the wrong signature is
    // reported at the step in the `workflow!`, not at the macro call as a whole.
    let state = state.tokens(func.span());
    let erased = quote_spanned! {func.span()=>
        ::durable::__private::erase::<#state, _, _>(#func)
    };
    let retry = match retry {
        Some(retry) => retry_policy(retry),
        None => quote!(::core::default::Default::default()),
    };
    let timeout = match timeout_ms {
        Some(ms) => {
            let duration = millis(*ms);
            quote!(::core::option::Option::Some(#duration))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::durable::__private::Node::step(
            #name,
            #erased,
            ::durable::__private::StepOptions {
                retry: #retry,
                timeout: #timeout,
                optional: #optional,
            },
        )
    }
}

/// `Duration::from_millis(ms)`.
fn millis(ms: u64) -> TokenStream {
    let ms = Literal::u64_suffixed(ms);
    quote!(::durable::__private::Duration::from_millis(#ms))
}

/// A `RetryPolicy` literal with the options given; `RetryPolicy::default()` supplies the rest,
/// so the defaults live in one place, the runtime.
fn retry_policy(retry: &Retry) -> TokenStream {
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

fn parallel_node(block: &Parallel, state: StateType) -> TokenStream {
    let merge = match block.merge {
        Merge::DeepMerge => quote!(DeepMerge),
        Merge::LastWins => quote!(LastWins),
        Merge::Collect => quote!(Collect),
    };
    let on_error = match block.on_error {
        OnError::FailFast => quote!(FailFast),
        OnError::CompleteAll => quote!(CompleteAll),
    };
    let branches = block.branches.iter().map(|item| node(item, state));
    let name = match &block.name {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    };
    let options = map_options(&block.options);
    quote! {
        ::durable::__private::Node::parallel_with(
            #name,
            ::durable::__private::Merge::#merge,
            ::durable::__private::OnError::#on_error,
            #options,
            ::core::convert::From::from([#(#branches),*]),
        )
    }
}

fn seq_node(seq: &Seq, state: StateType) -> TokenStream {
    let name = &seq.name;
    let nodes = seq.items.iter().map(|item| node(item, state));
    quote! {
        ::durable::__private::Node::seq(
            #name,
            ::core::convert::From::from([#(#nodes),*]),
        )
    }
}

fn dag_node(dag: &Dag, state: StateType) -> TokenStream {
    let entries = dag.nodes.iter().map(|(item, after)| {
        let node = node(item, state);
        quote!((#node, ::core::convert::From::from([#(#after),*])))
    });
    quote! {
        ::durable::__private::Node::dag(::core::convert::From::from([#(#entries),*]))
    }
}

/// A map block: its steps take the map's item type, whatever the state around it.
fn map_node(map: &Map) -> TokenStream {
    let Map {
        name,
        over,
        item,
        options,
        items,
        ..
    } = map;
    let state = match item {
        Some(ty) => StateType::Item(ty),
        None => StateType::Data,
    };
    let nodes = items.iter().map(|item| node(item, state));
    let options = map_options(options);
    // The runtime checks the items are a JSON array: `validate` only builds valid ones.
    let (constructor, over) = match over {
        Over::Field(field) => (quote!(map), field),
        Over::Items(json) => (quote!(map_items), json),
    };
    // A typed item state: what blocks write into an item's state is checked against it.
    let item_state = item.as_ref().map(|ty| quote!(.with_item_state::<#ty>()));
    quote! {
        ::durable::__private::Node::#constructor(
            #name,
            #over,
            #options,
            ::core::convert::From::from([#(#nodes),*]),
        )#item_state
    }
}

/// A `MapOptions` literal with every field spelled out.
fn map_options(options: &MapOptions) -> TokenStream {
    fn some<T: ToTokens>(value: Option<T>) -> TokenStream {
        match value {
            Some(value) => quote!(::core::option::Option::Some(#value)),
            None => quote!(::core::option::Option::None),
        }
    }
    let max_concurrency = some(options.max_concurrency.map(Literal::usize_suffixed));
    let min_successful = some(options.min_successful.map(Literal::usize_suffixed));
    let tolerated_failures = some(options.tolerated_failures.map(Literal::usize_suffixed));
    let tolerated_failure_percentage = some(
        options
            .tolerated_failure_percentage
            .map(Literal::f64_suffixed),
    );
    quote! {
        ::durable::__private::MapOptions {
            max_concurrency: #max_concurrency,
            min_successful: #min_successful,
            tolerated_failures: #tolerated_failures,
            tolerated_failure_percentage: #tolerated_failure_percentage,
        }
    }
}
