//! The values of options: retry policies, durations, counts, percentages, flags, choices
//! and `after` lists, each checked with an error that says what to write instead. Shared by
//! every item; what an option means to an item is in that item's file.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Error, Ident, Lit, Token};

use super::ctxt::Ctxt;
use super::After;
use crate::ast::{Opt, OptValue, Options};
use crate::model::{Backoff, Retry};
use crate::suggest;

/// The options inside `retry(...)`, for "did you mean".
pub(super) const RETRY_OPTIONS: &[&str] = &[
    "max_attempts",
    "backoff",
    "initial",
    "multiplier",
    "max_interval",
    "jitter",
];
const BACKOFFS: &[(&str, Backoff)] = &[
    ("constant", Backoff::Constant),
    ("linear", Backoff::Linear),
    ("exponential", Backoff::Exponential),
];
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// `retry(...)`: its options as far as they are valid. `missing` is the error to report when
/// `max_attempts` is not given, if it is required.
pub(super) fn retry(cx: &mut Ctxt, opt: &Opt, missing: Option<&str>) -> Option<Retry> {
    let OptValue::List(options) = &opt.value else {
        cx.error(
            &opt.key,
            "`retry` takes its options in parentheses, as in `retry(max_attempts = 3)`",
        );
        return None;
    };
    let errors = cx.count();
    let mut retry = Retry::default();
    for opt in unique(cx, Some(options)) {
        match opt.key.to_string().as_str() {
            "max_attempts" => retry.max_attempts = max_attempts(cx, opt),
            "backoff" => retry.backoff = choice(cx, opt, "backoff", BACKOFFS),
            "initial" => retry.initial_ms = duration(cx, opt, "initial = 500ms"),
            "multiplier" => retry.multiplier = multiplier(cx, opt),
            "max_interval" => retry.max_interval_ms = duration(cx, opt, "max_interval = 60s"),
            "jitter" => retry.jitter = flag(cx, opt, "jitter = true"),
            key => cx.error(
                &opt.key,
                suggest::unknown("retry option", key, RETRY_OPTIONS),
            ),
        }
    }
    // Without `max_attempts` the policy keeps its single attempt and every other retry
    // option is dead. Said only when the list is otherwise clean: after a typo such as
    // `max_atempts` the unknown-option error already says what to fix.
    if let Some(missing) = missing {
        if retry.max_attempts.is_none() && cx.count() == errors {
            cx.error(&opt.key, missing);
        }
    }
    Some(retry)
}

/// `timeout = DURATION`, which must be more than zero.
pub(super) fn timeout(cx: &mut Ctxt, opt: &Opt) -> Option<u64> {
    let ms = duration(cx, opt, "timeout = 30s")?;
    if ms == 0 {
        if let OptValue::Value(_, tokens) = &opt.value {
            cx.error(
                tokens,
                "a timeout of zero would cancel every attempt at once; give the longest one \
                 attempt may run, as in `timeout = 30s`, or remove `timeout` for no limit",
            );
        }
        return None;
    }
    Some(ms)
}

/// A count of items such as `min_successful = 4`: a whole number, more than zero when `zero`
/// (the error for zero) is given.
pub(super) fn count(cx: &mut Ctxt, opt: &Opt, example: &str, zero: Option<&str>) -> Option<usize> {
    let tokens = value(cx, opt, example)?;
    let n = match literal(tokens) {
        Some(Lit::Int(n)) if n.suffix().is_empty() => n,
        _ => {
            cx.error(
                tokens,
                format_args!("expected a whole number of items, as in `{example}`"),
            );
            return None;
        }
    };
    if n.base10_digits().starts_with('-') {
        cx.error(
            tokens,
            format_args!(
                "`{}` counts items, so it cannot be negative; write a whole number, as in \
                 `{example}`",
                opt.key
            ),
        );
        return None;
    }
    match (n.base10_parse::<usize>(), zero) {
        (Ok(0), Some(zero)) => {
            cx.error(tokens, zero);
            None
        }
        (Ok(n), _) => Some(n),
        (Err(_), _) => {
            cx.error(
                tokens,
                format_args!("`{}` must be at most {}", opt.key, usize::MAX),
            );
            None
        }
    }
}

/// `tolerated_failure_percentage = P`, a number from 0 to 100.
pub(super) fn percentage(cx: &mut Ctxt, opt: &Opt) -> Option<f64> {
    const EXAMPLE: &str = "tolerated_failure_percentage = 10";
    let tokens = value(cx, opt, EXAMPLE)?;
    let ends_with_percent = matches!(
        tokens.clone().into_iter().last(),
        Some(TokenTree::Punct(p)) if p.as_char() == '%'
    );
    let parsed = match literal(tokens) {
        Some(Lit::Float(f)) if f.suffix().is_empty() => f.base10_parse::<f64>().ok(),
        Some(Lit::Int(i)) if i.suffix().is_empty() => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    let problem = match parsed {
        Some(p) if (0.0..=100.0).contains(&p) => return Some(p),
        Some(p) if p < 0.0 => format!(
            "a percentage of failed items cannot be negative; give it from 0 to 100, as in \
             `{EXAMPLE}` (`0` tolerates no failure)"
        ),
        Some(_) => format!(
            "a percentage of the items is at most 100; give it from 0 to 100, as in \
             `{EXAMPLE}` (`100` tolerates every failure)"
        ),
        None if ends_with_percent => {
            format!("write the percentage as a number without `%`, as in `{EXAMPLE}`")
        }
        None => format!("expected a percentage from 0 to 100, as in `{EXAMPLE}`"),
    };
    cx.error(tokens, problem);
    None
}

/// `after = [a, b]`: the names, each once.
pub(super) fn after_list<'a>(cx: &mut Ctxt, opt: &'a Opt) -> Option<After<'a>> {
    const EXAMPLE: &str = "as in `after = [a, b]`";
    let tokens = value(cx, opt, "after = [a, b]")?;
    let mut trees = tokens.clone().into_iter();
    let group = match (trees.next(), trees.next()) {
        (Some(TokenTree::Group(group)), None) if group.delimiter() == Delimiter::Bracket => group,
        _ => {
            cx.error(
                tokens,
                format_args!(
                    "`after` takes the names of the nodes this one comes after, in brackets, \
                     {EXAMPLE}"
                ),
            );
            return None;
        }
    };
    let parser = |input: ParseStream| {
        let mut names: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            let name = input.call(Ident::parse_any).map_err(|e| {
                Error::new(
                    e.span(),
                    format_args!("expected the name of a step, seq or map, {EXAMPLE}"),
                )
            })?;
            names.push(name);
            if !input.is_empty() {
                input.parse::<Token![,]>().map_err(|e| {
                    Error::new(
                        e.span(),
                        format_args!("expected `,` between the names, {EXAMPLE}"),
                    )
                })?;
            }
        }
        Ok(names)
    };
    let written = match parser.parse2(group.stream()) {
        Ok(names) => names,
        Err(error) => {
            cx.push(error);
            return None;
        }
    };
    let mut names: Vec<Ident> = Vec::new();
    for name in written {
        if names.iter().any(|n| n.unraw() == name.unraw()) {
            cx.error(
                &name,
                format_args!("`{}` is listed twice in `after`; keep one", name.unraw()),
            );
        } else {
            names.push(name);
        }
    }
    Some(After {
        key: &opt.key,
        names,
    })
}

/// The options of a list, each key once: a repeated key is reported and skipped.
pub(super) fn unique<'a>(cx: &mut Ctxt, options: Option<&'a Options>) -> Vec<&'a Opt> {
    let mut seen: Vec<&'a Opt> = Vec::new();
    for opt in options.map_or(&[][..], |o| &o.list) {
        if seen.iter().any(|s| s.key == opt.key) {
            cx.error(
                &opt.key,
                format_args!("`{}` is given twice; keep one", opt.key),
            );
        } else {
            seen.push(opt);
        }
    }
    seen
}

/// The tokens after `key =`; a flag or a list is reported with an example of the right form.
pub(super) fn value<'a>(cx: &mut Ctxt, opt: &'a Opt, example: &str) -> Option<&'a TokenStream> {
    match &opt.value {
        OptValue::Value(_, tokens) => Some(tokens),
        _ => {
            cx.error(
                &opt.key,
                format_args!("`{}` needs a value, as in `{example}`", opt.key),
            );
            None
        }
    }
}

/// The tokens after `key =`, if any, without reporting anything.
pub(super) fn value_tokens(opt: &Opt) -> Option<&TokenStream> {
    match &opt.value {
        OptValue::Value(_, tokens) => Some(tokens),
        _ => None,
    }
}

/// The value as a literal, if it is one.
pub(super) fn literal(tokens: &TokenStream) -> Option<Lit> {
    syn::parse2(tokens.clone()).ok()
}

pub(super) fn max_attempts(cx: &mut Ctxt, opt: &Opt) -> Option<u32> {
    let tokens = value(cx, opt, "max_attempts = 3")?;
    let n = match literal(tokens) {
        Some(Lit::Int(n)) if n.suffix().is_empty() => n,
        _ => {
            cx.error(
                tokens,
                "expected a whole number of attempts, as in `max_attempts = 3`",
            );
            return None;
        }
    };
    match n.base10_parse::<u32>() {
        _ if n.base10_digits().starts_with('-') || n.base10_digits() == "0" => {
            cx.error(
                tokens,
                "`max_attempts` counts every attempt, the first included, so it must be at \
                 least 1; write `max_attempts = 1` for no retry",
            );
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            cx.error(
                tokens,
                format_args!("`max_attempts` must be at most {}", u32::MAX),
            );
            None
        }
    }
}

pub(super) fn multiplier(cx: &mut Ctxt, opt: &Opt) -> Option<f64> {
    let tokens = value(cx, opt, "multiplier = 2.0")?;
    let parsed = match literal(tokens) {
        Some(Lit::Float(f)) if f.suffix().is_empty() => f.base10_parse::<f64>().ok(),
        Some(Lit::Int(i)) if i.suffix().is_empty() => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(m) if m.is_finite() && m >= 1.0 => Some(m),
        Some(_) => {
            cx.error(tokens, "the multiplier must be at least 1.0 (a smaller one would shorten each wait), as in `multiplier = 2.0`");
            None
        }
        None => {
            cx.error(tokens, "expected a number, as in `multiplier = 2.0`");
            None
        }
    }
}

/// A boolean option: `key = true`, `key = false`, or just `key` for `true`.
pub(super) fn flag(cx: &mut Ctxt, opt: &Opt, example: &str) -> Option<bool> {
    if let OptValue::Flag = opt.value {
        return Some(true);
    }
    let tokens = value(cx, opt, example)?;
    match literal(tokens) {
        Some(Lit::Bool(b)) => Some(b.value),
        _ => {
            cx.error(
                tokens,
                format_args!("expected `true` or `false`, as in `{example}`"),
            );
            None
        }
    }
}

/// A value that names one of `table`'s entries, such as `merge = deep_merge`.
pub(super) fn choice<T: Copy>(
    cx: &mut Ctxt,
    opt: &Opt,
    kind: &str,
    table: &[(&str, T)],
) -> Option<T> {
    let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
    let tokens = value(cx, opt, &format!("{} = {}", opt.key, names[0]))?;
    let Ok(word) = syn::parse2::<Ident>(tokens.clone()) else {
        cx.error(
            tokens,
            format_args!(
                "expected a {kind}; the {} are {}",
                suggest::plural(kind),
                suggest::all_of(&names)
            ),
        );
        return None;
    };
    let found = table.iter().find(|(name, _)| word == name);
    if found.is_none() {
        cx.error(&word, suggest::unknown(kind, &word.to_string(), &names));
    }
    found.map(|(_, value)| *value)
}

/// A duration such as `500ms`, `1.5s`, `5m` or `1h`, in whole milliseconds.
pub(super) fn duration(cx: &mut Ctxt, opt: &Opt, example: &str) -> Option<u64> {
    let tokens = value(cx, opt, example)?;
    let units: Vec<&str> = DURATION_UNITS.iter().map(|(unit, _)| *unit).collect();
    let (digits, suffix) = match literal(tokens) {
        Some(Lit::Int(n)) => (n.base10_digits().to_owned(), n.suffix().to_owned()),
        Some(Lit::Float(f)) => (f.base10_digits().to_owned(), f.suffix().to_owned()),
        _ => {
            let message = match spaced_unit(tokens) {
                // `2 seconds`, `5 s`: the unit is written apart from the number.
                Some((digits, word)) => match known_unit(&word, &units) {
                    Some(unit) => format!(
                        "write the unit right after the number, as in `{digits}{unit}`; the \
                         duration units are {}",
                        suggest::all_of(&units)
                    ),
                    None => format!(
                        "unknown duration unit `{word}`; write a number with its unit right \
                         after it, as in `{example}` (the duration units are {})",
                        suggest::all_of(&units)
                    ),
                },
                None => format!(
                    "expected a duration: a number and a unit, as in `{example}`; the duration \
                     units are {}",
                    suggest::all_of(&units)
                ),
            };
            cx.error(tokens, message);
            return None;
        }
    };
    let Some(&(_, unit_ms)) = DURATION_UNITS.iter().find(|(unit, _)| *unit == suffix) else {
        let message = if suffix.is_empty() {
            format!(
                "`{digits}` has no unit; write `{digits}ms`, `{digits}s`, `{digits}m`, \
                 `{digits}h` or `{digits}d`"
            )
        } else {
            unknown_unit(&suffix, &units)
        };
        cx.error(tokens, message);
        return None;
    };
    if digits.starts_with('-') {
        cx.error(tokens, "a duration cannot be negative");
        return None;
    }
    match exact_millis(&digits, unit_ms) {
        Ok(ms) => Some(ms),
        Err(problem) => {
            cx.error(tokens, problem);
            None
        }
    }
}

/// A number then a word (`2 seconds`, `5 s`): the number's digits and the word.
fn spaced_unit(tokens: &TokenStream) -> Option<(String, String)> {
    let mut iter = tokens.clone().into_iter();
    let (Some(TokenTree::Literal(number)), Some(TokenTree::Ident(word)), None) =
        (iter.next(), iter.next(), iter.next())
    else {
        return None;
    };
    let digits = match Lit::new(number) {
        Lit::Int(n) if n.suffix().is_empty() => n.base10_digits().to_owned(),
        Lit::Float(f) if f.suffix().is_empty() => f.base10_digits().to_owned(),
        _ => return None,
    };
    Some((digits, word.to_string()))
}

/// The DSL's unit for `word`: a unit itself, or one of its usual spellings (`sec`, `min`, ...).
fn known_unit<'a>(word: &str, units: &[&'a str]) -> Option<&'a str> {
    const SPELLINGS: &[(&str, &[&str])] = &[
        ("ms", &["msec", "msecs", "millis", "milliseconds"]),
        ("s", &["sec", "secs", "second", "seconds"]),
        ("m", &["min", "mins", "minute", "minutes"]),
        ("h", &["hr", "hrs", "hour", "hours"]),
        ("d", &["day", "days"]),
    ];
    units
        .iter()
        .copied()
        .find(|unit| *unit == word)
        .or_else(|| {
            SPELLINGS
                .iter()
                .find(|(_, spellings)| spellings.contains(&word))
                .and_then(|(unit, _)| units.iter().copied().find(|u| u == unit))
        })
}

/// The message for a duration unit that is not one of `units`, with the usual spellings of
/// the units (`sec`, `min`, ...) mapped to the DSL's.
pub(super) fn unknown_unit(suffix: &str, units: &[&str]) -> String {
    let valid = format!("the duration units are {}", suggest::all_of(units));
    match known_unit(suffix, units) {
        Some(unit) => {
            format!("unknown duration unit `{suffix}`; write `{unit}` instead ({valid})")
        }
        None => format!("unknown duration unit `{suffix}`; {valid}"),
    }
}

/// `digits` (such as `1.5` or `2e3`) times `unit_ms`, computed exactly: a float would make
/// `1.1s` 1100.0000000000002 ms.
pub(super) fn exact_millis(digits: &str, unit_ms: u128) -> Result<u64, &'static str> {
    const TOO_LONG: &str = "this duration is too long";
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| TOO_LONG)?),
        None => (digits, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let number: u128 = format!("{whole}{fraction}").parse().map_err(|_| TOO_LONG)?;
    let scale = exponent - i32::try_from(fraction.len()).map_err(|_| TOO_LONG)?;
    let power = |n: i32| 10u128.checked_pow(n.unsigned_abs()).ok_or(TOO_LONG);
    let ms = number.checked_mul(unit_ms).ok_or(TOO_LONG)?;
    let ms = if scale >= 0 {
        ms.checked_mul(power(scale)?).ok_or(TOO_LONG)?
    } else {
        let divisor = power(scale)?;
        if ms % divisor != 0 {
            return Err("durations are whole milliseconds; the smallest is `1ms`");
        }
        ms / divisor
    };
    u64::try_from(ms).map_err(|_| TOO_LONG)
}

#[cfg(test)]
mod tests {
    use super::exact_millis;

    #[test]
    fn durations_are_exact() {
        assert_eq!(exact_millis("500", 1), Ok(500));
        assert_eq!(exact_millis("1.5", 1_000), Ok(1_500));
        assert_eq!(exact_millis("1.1", 1_000), Ok(1_100));
        assert_eq!(exact_millis("2e3", 1), Ok(2_000));
        assert_eq!(exact_millis("0.25", 60_000), Ok(15_000));
        assert!(exact_millis("0.0001", 1_000).is_err());
        assert!(exact_millis("1e40", 1).is_err());
    }
}
