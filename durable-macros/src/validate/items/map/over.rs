//! What a map runs over: a state field, or a list of literals turned into JSON.

use std::fmt::Write as _;

use proc_macro2::{Delimiter, Group, Literal, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::{Ident, Lit};

use crate::ast::Opt;
use crate::validate::ctxt::Ctxt;
use crate::validate::options::{literal, value};

/// What `over` runs over, as written.
pub(super) enum Over<'a> {
    /// `over = field`: the state's field holding the array (unraw).
    Field(String),
    /// `over = [1, 2, 3]`: the items themselves, all valid.
    List(List<'a>),
}

/// A valid `over = [...]` list of literals.
pub(super) struct List<'a> {
    /// The brackets and what they hold, where errors about the whole list point.
    pub(super) tokens: &'a TokenStream,
    /// The items as a JSON array, as `Node::map_items` takes them.
    pub(super) json: String,
    /// How many items.
    pub(super) len: usize,
    /// A type every item decodes into, for the error of a list without `item = T`.
    pub(super) item_type: &'static str,
}

/// What the literals in `over = [...]` may be: they become JSON values.
pub(super) const LIST_ITEMS: &str =
    "a list in `over` holds literals only: integers, floats, strings, \
                          `true` or `false`, as in `over = [1, 2, 3]` or \
                          `over = [\"eu\", \"us\"]`";

/// `over = field` or `over = [literal, ...]`.
pub(super) fn over<'a>(cx: &mut Ctxt, opt: &'a Opt) -> Option<Over<'a>> {
    let tokens = value(cx, opt, "over = items")?;
    if let Ok(field) = Ident::parse_any.parse2(tokens.clone()) {
        return Some(Over::Field(field.unraw().to_string()));
    }
    let mut trees = tokens.clone().into_iter();
    let message = match (trees.next(), trees.next()) {
        (Some(TokenTree::Group(group)), None) if group.delimiter() == Delimiter::Bracket => {
            return over_list(cx, tokens, &group).map(Over::List);
        }
        (Some(TokenTree::Literal(_)), _) => match literal(tokens) {
            Some(Lit::Str(text)) => format!(
                "`over` takes the field's name without quotes: write `over = {}`",
                text.value()
            ),
            _ => "expected the name of the state's field holding the array, as in \
                  `over = items`, or a list of items in brackets, as in `over = [1, 2, 3]`"
                .to_owned(),
        },
        _ => "expected the name of a field of the state, the one holding the array, as in \
              `over = items`; a nested field cannot be named: give the state a top-level one"
            .to_owned(),
    };
    cx.error(tokens, message);
    None
}

/// The kind of a literal item, which decides the `item` type suggested for the list.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum ItemKind {
    Integer,
    Float,
    String,
    Bool,
}

/// `[literal, ...]`: every item checked (each bad one reported), then the JSON array.
pub(super) fn over_list<'a>(
    cx: &mut Ctxt,
    tokens: &'a TokenStream,
    group: &Group,
) -> Option<List<'a>> {
    // Split at the commas of this level: a nested group is one token tree, commas included.
    let mut elements: Vec<Vec<TokenTree>> = vec![Vec::new()];
    let mut commas = Vec::new();
    for tt in group.stream() {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => {
                commas.push(p.span());
                elements.push(Vec::new());
            }
            _ => elements.last_mut().expect("never empty").push(tt),
        }
    }
    // A trailing comma ends the list.
    if elements.len() > 1 && elements.last().is_some_and(Vec::is_empty) {
        elements.pop();
    }
    if elements.len() == 1 && elements[0].is_empty() {
        cx.error(
            tokens,
            "a map over an empty list does nothing; give it at least one item, as in \
             `over = [1, 2, 3]`",
        );
        return None;
    }
    let single = elements.len() == 1;
    let errors = cx.count();
    let mut json = String::from("[");
    let mut kinds = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        if element.is_empty() {
            cx.error_at(commas[i], "expected an item before this `,`");
            continue;
        }
        if let Some((text, kind)) = list_item(cx, element, single) {
            if !kinds.is_empty() {
                json.push(',');
            }
            json.push_str(&text);
            kinds.push(kind);
        }
    }
    json.push(']');
    if cx.count() > errors {
        return None;
    }
    let all = |kind| kinds.iter().all(|k| *k == kind);
    let item_type = if all(ItemKind::Integer) {
        "i64"
    } else if kinds
        .iter()
        .all(|k| matches!(k, ItemKind::Integer | ItemKind::Float))
    {
        "f64"
    } else if all(ItemKind::String) {
        "String"
    } else if all(ItemKind::Bool) {
        "bool"
    } else {
        "serde_json::Value"
    };
    Some(List {
        tokens,
        json,
        len: kinds.len(),
        item_type,
    })
}

/// One item of `over = [...]` as JSON text, or `None` once its error is reported. `single`
/// when it is the list's only item, so that `[items]` can be read as a misplaced field name.
pub(super) fn list_item(
    cx: &mut Ctxt,
    element: &[TokenTree],
    single: bool,
) -> Option<(String, ItemKind)> {
    // A `$x:literal` forwarded by a `macro_rules!` macro comes in an invisible group.
    if let [TokenTree::Group(g)] = element {
        if g.delimiter() == Delimiter::None {
            let inner: Vec<TokenTree> = g.stream().into_iter().collect();
            return list_item(cx, &inner, single);
        }
    }
    let spanned: TokenStream = element.iter().cloned().collect();
    let (negative, rest) = match element {
        [TokenTree::Punct(p), rest @ ..] if p.as_char() == '-' => (true, rest),
        _ => (false, element),
    };
    let message = match rest {
        [TokenTree::Literal(lit)] => match Lit::new(lit.clone()) {
            Lit::Int(n) if n.suffix().is_empty() => {
                let digits = format!("{}{}", if negative { "-" } else { "" }, n.base10_digits());
                let fits = digits.parse::<i64>().is_ok() || digits.parse::<u64>().is_ok();
                if fits {
                    // `-0` is `0` to JSON, so no sign needs dropping.
                    return Some((digits, ItemKind::Integer));
                }
                format!(
                    "`{spanned}` is too large: an integer item is from {} to {}",
                    i64::MIN,
                    u64::MAX
                )
            }
            Lit::Float(f) if f.suffix().is_empty() => match f.base10_parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    let x = if negative { -x } else { x };
                    // `{:?}` keeps the fraction (`1.0`, `1e300`): the item stays a float.
                    return Some((format!("{x:?}"), ItemKind::Float));
                }
                _ => format!(
                    "`{spanned}` is too large: a float item must be finite, at most about \
                     `1.8e308`"
                ),
            },
            Lit::Int(n) => format!(
                "write `{}{}` without the suffix `{}`: the items become JSON numbers, which \
                 have no Rust type",
                if negative { "-" } else { "" },
                n.base10_digits(),
                n.suffix()
            ),
            Lit::Float(f) => format!(
                "write `{}{}` without the suffix `{}`: the items become JSON numbers, which \
                 have no Rust type",
                if negative { "-" } else { "" },
                f.base10_digits(),
                f.suffix()
            ),
            Lit::Str(s) if !negative && s.suffix().is_empty() => {
                return Some((json_string(&s.value()), ItemKind::String));
            }
            Lit::Char(c) if !negative => format!(
                "`{spanned}` is a character; write it as a string, `{}`",
                Literal::string(&c.value().to_string())
            ),
            _ if negative => format!("only a number can be negative; {LIST_ITEMS}"),
            _ => format!("`{spanned}` cannot be an item; {LIST_ITEMS}"),
        },
        [TokenTree::Ident(ident)] if !negative && (ident == "true" || ident == "false") => {
            return Some((ident.to_string(), ItemKind::Bool));
        }
        [TokenTree::Ident(ident)] if !negative => {
            let field = if single {
                format!(
                    "; to run over the state's field `{}`, write it without brackets: \
                     `over = {}`",
                    ident.unraw(),
                    ident
                )
            } else {
                String::new()
            };
            format!("`{ident}` is a name, not a literal; {LIST_ITEMS}{field}")
        }
        [TokenTree::Group(g)] if !negative && g.delimiter() == Delimiter::Bracket => {
            format!("lists cannot be nested; {LIST_ITEMS}")
        }
        [TokenTree::Group(g)] if !negative && g.delimiter() == Delimiter::Brace => {
            format!("objects cannot be written here; {LIST_ITEMS}")
        }
        [TokenTree::Literal(_) | TokenTree::Ident(_), TokenTree::Literal(_) | TokenTree::Ident(_), ..] => {
            "expected `,` between the items, as in `over = [1, 2, 3]`".to_owned()
        }
        _ if negative => format!("only a number can be negative; {LIST_ITEMS}"),
        _ => format!("expected a literal; {LIST_ITEMS}"),
    };
    cx.error(spanned, message);
    None
}

/// `text` as a JSON string, quotes included.
pub(super) fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
    json
}

#[cfg(test)]
mod tests {
    use super::{json_string, over, Over};
    use crate::ast::Opt;
    use crate::validate::ctxt::Ctxt;

    /// The JSON text of `over = <list>`, or the error messages.
    fn list(tokens: &str) -> Result<String, Vec<String>> {
        let opt: Opt = syn::parse_str(&format!("over = {tokens}")).unwrap();
        let mut cx = Ctxt::default();
        let json = match over(&mut cx, &opt) {
            Some(Over::List(list)) => Some(list.json),
            _ => None,
        };
        match (json, cx.finish()) {
            (Some(json), Ok(())) => Ok(json),
            (_, Err(errors)) => Err(errors.into_iter().map(|e| e.to_string()).collect()),
            (None, Ok(())) => panic!("`{tokens}` is no list"),
        }
    }

    #[test]
    fn lists_become_json_arrays() {
        assert_eq!(list("[1, 2, 3]").unwrap(), "[1,2,3]");
        assert_eq!(list("[1, 2, 3,]").unwrap(), "[1,2,3]");
        assert_eq!(list("[-1, - 2, 0x10, 1_000]").unwrap(), "[-1,-2,16,1000]");
        assert_eq!(
            list("[1.0, -2.5, 1e3, 0.1, 1e300]").unwrap(),
            "[1.0,-2.5,1000.0,0.1,1e300]"
        );
        assert_eq!(
            list(r#"[true, false, "eu", r"a\b"]"#).unwrap(),
            r#"[true,false,"eu","a\\b"]"#
        );
        assert_eq!(
            list("[18446744073709551615, -9223372036854775808]").unwrap(),
            "[18446744073709551615,-9223372036854775808]"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_string("plain é ☃"), r#""plain é ☃""#);
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(
            json_string("\n\t\u{0}\u{1f}\u{7f}"),
            r#""\u000a\u0009\u0000\u001f\u007f""#
        );
        assert_eq!(list(r#"["a\"b", "c"]"#).unwrap(), r#"["a\"b","c"]"#);
    }

    #[test]
    fn bad_items_are_each_reported() {
        let errors = list("[a, [1], {}, 1u8, 'x', -true, 2.5f32, b\"x\", 1 2]").unwrap_err();
        assert_eq!(errors.len(), 9, "{errors:#?}");
        assert!(errors[0].starts_with("`a` is a name, not a literal"));
        assert!(errors[1].starts_with("lists cannot be nested"));
        assert!(errors[2].starts_with("objects cannot be written here"));
        assert!(errors[3].starts_with("write `1` without the suffix `u8`"));
        assert!(errors[4].starts_with("`'x'` is a character; write it as a string, `\"x\"`"));
        assert!(errors[5].starts_with("only a number can be negative"));
        assert!(errors[6].starts_with("write `2.5` without the suffix `f32`"));
        assert!(errors[7].starts_with("`b\"x\"` cannot be an item"));
        assert!(errors[8].starts_with("expected `,` between the items"));
        assert!(list("[]").unwrap_err()[0].starts_with("a map over an empty list does nothing"));
        assert!(list("[1e400]").unwrap_err()[0].contains("must be finite"));
        assert!(list("[18446744073709551616]").unwrap_err()[0].contains("too large"));
        assert!(list("[-9223372036854775809]").unwrap_err()[0].contains("too large"));
        assert!(list("[1, , 2]").unwrap_err()[0].starts_with("expected an item before"));
    }
}
