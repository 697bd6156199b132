//! `sleep name(for = 10m);` and `sleep name(until = field);`: a durable timer, journaled
//! under `name`.

use syn::Ident;

use super::Node;
use crate::ast;
use crate::model::{self, Wake};
use crate::suggest;
use crate::validate::options::{after_list, duration, unique, value};
use crate::validate::{Parent, Walk};

/// The options a sleep takes, for "did you mean".
const SLEEP_OPTIONS: &[&str] = &["for", "until", "after"];

impl<'a> Walk<'a> {
    /// A sleep: exactly one of `for` and `until`, and its `;`.
    pub(super) fn sleep(&mut self, sleep: &'a ast::Sleep, parent: Parent) -> Node<'a> {
        let name = self.define(&sleep.name, "sleep");
        let mut wake: Option<(&Ident, Option<Wake>)> = None;
        let mut after = None;
        // An option reported as unknown may have been meant as `for` or `until`.
        let mut unknown = false;
        for opt in unique(self.cx, sleep.options.as_ref()) {
            let key = opt.key.to_string();
            let this =
                match key.as_str() {
                    "for" => duration(self.cx, opt, "for = 10m").map(Wake::ForMs),
                    "until" => value(self.cx, opt, "until = due_at").and_then(|tokens| {
                        match syn::parse2::<Ident>(tokens.clone()) {
                            Ok(field) => Some(Wake::Until(field)),
                            Err(_) => {
                                self.cx.error(
                                    tokens,
                                    format_args!(
                                        "expected the name of a state field holding the time to \
                                     wake at (Unix milliseconds or an RFC 3339 string), as in \
                                     `sleep {name}(until = due_at);`; for a fixed delay write \
                                     `sleep {name}(for = 10m);`"
                                    ),
                                );
                                None
                            }
                        }
                    }),
                    "after" => {
                        after = after_list(self.cx, opt);
                        continue;
                    }
                    "timeout" | "duration" | "delay" | "wait" => {
                        unknown = true;
                        self.cx.error(
                            &opt.key,
                            format_args!(
                                "{}; write `sleep {name}(for = 10m);` for a delay",
                                suggest::unknown("sleep option", &key, SLEEP_OPTIONS)
                            ),
                        );
                        continue;
                    }
                    _ => {
                        unknown = true;
                        self.cx.error(
                            &opt.key,
                            suggest::unknown("sleep option", &key, SLEEP_OPTIONS),
                        );
                        continue;
                    }
                };
            match &wake {
                Some((first, _)) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "sleep `{name}` has `{first}` already: it sleeps either `for` a \
                         duration or `until` a time, not both; remove one"
                    ),
                ),
                None => wake = Some((&opt.key, this)),
            }
        }
        let after = self.placed(after, parent);
        if wake.is_none() && !unknown {
            self.cx.error(
                &sleep.name,
                format_args!(
                    "sleep `{name}` needs how long or until when: write \
                     `sleep {name}(for = 10m);` or `sleep {name}(until = due_at);` (a state \
                     field holding Unix milliseconds or an RFC 3339 time)"
                ),
            );
        }
        if sleep.semi.is_none() {
            let at = match &sleep.options {
                Some(options) => options.paren.span.close(),
                None => sleep.name.span(),
            };
            self.cx
                .error_at(at, format_args!("expected `;` after sleep `{name}`"));
        }
        // A sleep with an error is lowered all the same (expansion is skipped on errors).
        let wake = wake.and_then(|(_, wake)| wake).unwrap_or(Wake::ForMs(0));
        Node {
            item: model::Item::Sleep(model::Sleep {
                name: name.clone(),
                wake,
            }),
            after,
            name: Some(name),
            kind: "sleep",
        }
    }
}
