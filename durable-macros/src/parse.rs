//! `syn` parsing of the DSL into [`crate::ast`].
//!
//! Parsing is lenient inside a block: an item that does not parse becomes [`Item::Error`] and
//! parsing resumes at the next item, so that one compilation reports every mistake. Only a
//! broken header (name, options, braces) stops everything, since nothing after it can be
//! trusted.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::buffer::Cursor;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, parenthesized, token, Attribute, Error, ExprPath, Ident, Result, Token, Type};

use crate::ast::{
    kw, Block, Call, Callback, Dag, Item, Map, Opt, OptValue, Options, Parallel, Seq, Sleep, Step,
    WaitFor, Workflow, ITEM_KEYWORDS,
};
use crate::suggest;

impl Parse for Workflow {
    fn parse(input: ParseStream) -> Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let name: Ident = input.parse().map_err(|e| {
            Error::new(
                e.span(),
                "expected the workflow's name, as in `workflow! { my_workflow { step first; } }`",
            )
        })?;
        let options = parse_options(input)?;
        expect_body(
            input,
            format!(
                "expected `{{` and the steps of workflow `{name}`, as in `{name} {{ step first; }}`"
            ),
        )?;
        let body = input.parse()?;
        if !input.is_empty() {
            return Err(input.error(
                "unexpected tokens after the workflow's body: one `workflow!` defines one workflow",
            ));
        }
        Ok(Workflow {
            attrs,
            vis,
            name,
            options,
            body,
        })
    }
}

impl Parse for Block {
    fn parse(input: ParseStream) -> Result<Self> {
        let content;
        let brace = braced!(content in input);
        let mut items = Vec::new();
        while !content.is_empty() {
            let start = content.cursor();
            match content.parse() {
                Ok(item) => items.push(item),
                Err(error) => {
                    items.push(Item::Error(error));
                    skip_rest_of_item(&content, start);
                }
            }
        }
        Ok(Block { brace, items })
    }
}

/// Skips the rest of an item that failed to parse: through its `;` or its `{ ... }` block, or
/// up to the next item keyword. Always moves past at least one token, so parsing cannot loop.
fn skip_rest_of_item(input: ParseStream, start: Cursor) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ';' => return Ok(((), next)),
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => return Ok(((), next)),
                TokenTree::Ident(i)
                    if rest != start && ITEM_KEYWORDS.contains(&&*i.to_string()) =>
                {
                    return Ok(((), rest))
                }
                _ => rest = next,
            }
        }
        Ok(((), rest))
    });
}

impl Parse for Item {
    fn parse(input: ParseStream) -> Result<Self> {
        if input.peek(kw::step) {
            input.parse().map(Item::Step)
        } else if input.peek(kw::parallel) {
            input.parse().map(Item::Parallel)
        } else if input.peek(kw::dag) {
            input.parse().map(Item::Dag)
        } else if input.peek(kw::seq) {
            input.parse().map(Item::Seq)
        } else if input.peek(kw::map) {
            input.parse().map(Item::Map)
        } else if input.peek(kw::sleep) {
            input.parse().map(Item::Sleep)
        } else if input.peek(kw::wait_for) {
            input.parse().map(Item::WaitFor)
        } else if input.peek(kw::callback) {
            input.parse().map(Item::Callback)
        } else if input.peek(kw::call) {
            input.parse().map(Item::Call)
        } else if input.peek(Token![;]) {
            Err(input.error(
                "unexpected `;`: only a `step`, `sleep`, `wait_for`, `callback` or `call` ends with `;`, remove \
                 this one",
            ))
        } else if input.peek(Ident::peek_any) {
            let word = input.call(Ident::parse_any)?;
            let message = suggest::unknown("item", &word.to_string(), ITEM_KEYWORDS);
            Err(Error::new(word.span(), message))
        } else {
            Err(input.error(
                "expected an item, as in `step name;`, `parallel { ... }`, `dag { ... }`, \
                 `seq name { ... }` or `map name(over = items) { ... }`",
            ))
        }
    }
}

impl Parse for Step {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name = input.parse().map_err(|_| {
            input.error("expected the step's name after `step`, as in `step charge_card;`")
        })?;
        let options = parse_options(input)?;
        let func = if input.peek(Token![=]) {
            let eq = input.parse()?;
            let path = input.parse::<ExprPath>().map_err(|_| {
                input.error("expected the path of the step's function after `=`, as in `step finish = billing::finish;`")
            })?;
            Some((eq, path))
        } else {
            None
        };
        if func.is_some() && input.peek(token::Paren) {
            return Err(input.error(
                "a step's options go before `=`: write `step name(retry(...)) = path::to::function;`",
            ));
        }
        let semi = input.parse()?;
        Ok(Step {
            keyword,
            name,
            options,
            func,
            semi,
        })
    }
}

impl Parse for WaitFor {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name = input.parse().map_err(|_| {
            input.error(
                "expected the signal's name after `wait_for`, as in `wait_for approved(timeout = 1h);`",
            )
        })?;
        let options = parse_options(input)?;
        if input.peek(Token![=]) {
            return Err(input.error(
                "`wait_for` calls no function: the run waits for the signal and its payload goes \
                 into the state under the name; write `wait_for name(timeout = 1h);`, or use \
                 `callback name = submit_fn(timeout = 1h);` to hand a token to a function",
            ));
        }
        let semi = input.parse()?;
        Ok(WaitFor {
            keyword,
            name,
            options,
            semi,
        })
    }
}

impl Parse for Callback {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name: Ident = input.parse().map_err(|_| {
            input.error(
                "expected the callback's name after `callback`, as in \
                 `callback paid = request_payment(timeout = 1d);`",
            )
        })?;
        if input.peek(token::Paren) {
            return Err(input.error(format!(
                "a callback's options go after its submit function: write \
                 `callback {name} = submit_fn(timeout = 1d);`"
            )));
        }
        if !input.peek(Token![=]) {
            return Err(input.error(format!(
                "expected `=` and the function that hands the callback's token out, as in \
                 `callback {name} = request_payment(timeout = 1d);`"
            )));
        }
        input.parse::<Token![=]>()?;
        let func = input.parse::<ExprPath>().map_err(|_| {
            input.error(format!(
                "expected the path of the submit function after `=`, as in \
                 `callback {name} = billing::request_payment(timeout = 1d);`"
            ))
        })?;
        let options = parse_options(input)?;
        let semi = input.parse()?;
        Ok(Callback {
            keyword,
            name,
            func,
            options,
            semi,
        })
    }
}

impl Parse for Call {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name: Ident = input.parse().map_err(|_| {
            input
                .error("expected the call's name after `call`, as in `call payment = charge_card;`")
        })?;
        if input.peek(token::Paren) {
            return Err(input.error(format!(
                "a call's options go after the workflow it calls: write \
                 `call {name} = other_workflow(timeout = 1h);`"
            )));
        }
        if !input.peek(Token![=]) {
            return Err(input.error(format!(
                "expected `=` and the workflow to run as a child, as in \
                 `call {name} = other_workflow;`"
            )));
        }
        input.parse::<Token![=]>()?;
        let workflow = input.parse::<ExprPath>().map_err(|_| {
            input.error(format!(
                "expected the path of a workflow after `=`, as in \
                 `call {name} = billing::charge_card;`"
            ))
        })?;
        let options = parse_options(input)?;
        let semi = input.parse()?;
        Ok(Call {
            keyword,
            name,
            workflow,
            options,
            semi,
        })
    }
}

impl Parse for Sleep {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name = input.parse().map_err(|_| {
            input.error(
                "expected the sleep's name after `sleep`, as in `sleep cool_off(for = 10m);`",
            )
        })?;
        let options = parse_options(input)?;
        let semi = input.parse()?;
        Ok(Sleep {
            keyword,
            name,
            options,
            semi,
        })
    }
}

impl Parse for Parallel {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name = if input.peek(Ident) {
            Some(input.parse()?)
        } else {
            None
        };
        let options = parse_options(input)?;
        expect_body(input, "expected `{` and the branches of the parallel block, as in `parallel { step a; step b; }`",)?;
        let body = input.parse()?;
        Ok(Parallel {
            keyword,
            name,
            options,
            body,
        })
    }
}

impl Parse for Dag {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let options = parse_options(input)?;
        expect_body(
            input,
            "expected `{` and the nodes of the dag, as in `dag { step a; step b(after = [a]); }`",
        )?;
        let body = input.parse()?;
        Ok(Dag {
            keyword,
            options,
            body,
        })
    }
}

impl Parse for Seq {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name: Ident = input.parse().map_err(|_| {
            input.error(
                "expected the seq's name after `seq`, as in `seq shipping { step pack; step ship; }`",
            )
        })?;
        let options = parse_options(input)?;
        expect_body(input, format!(
                "expected `{{` and the nodes of seq `{name}`, as in `seq {name} {{ step a; step b; }}`"
            ))?;
        let body = input.parse()?;
        Ok(Seq {
            keyword,
            name,
            options,
            body,
        })
    }
}

impl Parse for Map {
    fn parse(input: ParseStream) -> Result<Self> {
        let keyword = input.parse()?;
        let name: Ident = input.parse().map_err(|_| {
            input.error(
                "expected the map's name after `map`, as in \
                 `map process_items(over = items) { step process_item; }`",
            )
        })?;
        let options = parse_options(input)?;
        expect_body(
            input,
            format!(
                "expected `{{` and the nodes each item of map `{name}` runs, as in \
                 `map {name}(over = items) {{ step process_item; }}`"
            ),
        )?;
        let body = input.parse()?;
        Ok(Map {
            keyword,
            name,
            options,
            body,
        })
    }
}

impl Parse for Options {
    fn parse(input: ParseStream) -> Result<Self> {
        let content;
        let paren = parenthesized!(content in input);
        let list = parse_option_list(&content).inspect_err(|_| {
            // Consume what is left: syn reports tokens left in a dropped group as "unexpected
            // token" at the very end, which would replace every error collected leniently.
            let _ = content.parse::<TokenStream>();
        })?;
        Ok(Options { paren, list })
    }
}

fn parse_option_list(input: ParseStream) -> Result<Vec<Opt>> {
    let mut list = Vec::new();
    while !input.is_empty() {
        list.push(input.parse()?);
        if !input.is_empty() {
            input
                .parse::<Token![,]>()
                .map_err(|_| input.error("expected `,` between options"))?;
        }
    }
    Ok(list)
}

impl Parse for Opt {
    fn parse(input: ParseStream) -> Result<Self> {
        let key = input.call(Ident::parse_any).map_err(|_| {
            input.error("expected an option's name, as in `retry(max_attempts = 3)`")
        })?;
        let value = if input.peek(Token![=]) {
            let eq = input.parse()?;
            OptValue::Value(eq, parse_value(input)?)
        } else if input.peek(token::Paren) {
            OptValue::List(input.parse()?)
        } else {
            OptValue::Flag
        };
        Ok(Opt { key, value })
    }
}

/// The tokens of an option's value, up to the next `,` of the option list.
fn parse_value(input: ParseStream) -> Result<TokenStream> {
    // A type such as `HashMap<String, u32>` has commas outside any group: take it whole.
    // Not a bracketed list such as `after = [a, b]`, which is one token tree anyway: a failed
    // parse of it as a slice type would leave tokens in the dropped bracket, which syn reports
    // as an error of the whole invocation.
    if !input.peek(token::Bracket) {
        let fork = input.fork();
        if fork.parse::<Type>().is_ok() && (fork.is_empty() || fork.peek(Token![,])) {
            let ty: Type = input.parse()?;
            return Ok(quote::ToTokens::into_token_stream(ty));
        }
    }
    let tokens = input.step(|cursor| {
        let mut rest = *cursor;
        let mut tokens = TokenStream::new();
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            tokens.extend([tt]);
            rest = next;
        }
        Ok((tokens, rest))
    })?;
    if tokens.is_empty() {
        return Err(input.error("expected a value after `=`"));
    }
    Ok(tokens)
}

/// The options in parentheses after a keyword or name, if any.
fn parse_options<T: Parse>(input: ParseStream) -> Result<Option<T>> {
    if input.peek(token::Paren) {
        input.parse().map(Some)
    } else {
        Ok(None)
    }
}

/// Fails with `hint` unless a `{ ... }` body comes next.
fn expect_body(input: ParseStream, hint: impl std::fmt::Display) -> Result<()> {
    if input.peek(token::Brace) {
        Ok(())
    } else {
        Err(input.error(hint))
    }
}

#[cfg(test)]
mod tests {
    use crate::ast::{Item, ITEM_KEYWORDS};

    /// Every keyword of `ITEM_KEYWORDS`, the list behind "did you mean" and behind the
    /// recovery after an item that did not parse, starts an item: adding a keyword to the
    /// list without its arm in `Item::parse` fails here.
    #[test]
    fn every_item_keyword_starts_an_item() {
        for keyword in ITEM_KEYWORDS {
            let parsed = syn::parse_str::<Item>(&format!("{keyword} x;"));
            if let Err(error) = parsed {
                assert!(
                    !error.to_string().starts_with("unknown item"),
                    "`{keyword}` is in ITEM_KEYWORDS but `Item::parse` does not know it: {error}"
                );
            }
        }
    }
}
