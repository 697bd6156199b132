//! `map name(options) { ... }`: nodes that run for every element of an array, the elements
//! concurrently, each element as their state. What the map runs over is read in `over`.

use syn::Type;

use super::step::STEP_OPTIONS;
use super::{empty, Node};
use crate::ast;
use crate::model;
use crate::suggest;
use crate::validate::options::{after_list, count, percentage, unique, value, value_tokens};
use crate::validate::{Parent, Walk};

mod over;

use over::Over;

/// The options a map takes, for "did you mean".
const MAP_OPTIONS: &[&str] = &[
    "over",
    "item",
    "max_concurrency",
    "min_successful",
    "tolerated_failures",
    "tolerated_failure_percentage",
    "after",
];

impl<'a> Walk<'a> {
    /// A map: what it runs over, its item type and its concurrency and completion policy,
    /// and the nodes each element runs.
    pub(super) fn map(&mut self, map: &'a ast::Map, parent: Parent) -> Node<'a> {
        let name = self.define(&map.name, "map");
        let (keyword, ident) = (&map.keyword, &map.name);
        let mut over = None;
        let mut over_given = false;
        let mut over_misspelled = false;
        let mut item = None;
        let mut item_given = false;
        let mut options = model::MapOptions::default();
        let mut min_successful = None;
        let mut after = None;
        for opt in unique(self.cx, map.options.as_ref()) {
            let key = opt.key.to_string();
            match key.as_str() {
                "over" => {
                    over_given = true;
                    over = over::over(self.cx, opt);
                }
                "item" => {
                    item_given = true;
                    if let Some(tokens) = value(self.cx, opt, "item = LineItem") {
                        match syn::parse2::<Type>(tokens.clone()) {
                            Ok(ty) => item = Some(ty),
                            Err(_) => self.cx.error(
                                tokens,
                                "expected the type of the array's elements, the state of the \
                                 steps inside the map, as in `item = LineItem`",
                            ),
                        }
                    }
                }
                "max_concurrency" => {
                    options.max_concurrency = count(
                        self.cx,
                        opt,
                        "max_concurrency = 4",
                        Some(
                            "`max_concurrency = 0` would never start an item, so the map could \
                             never finish; give the most items that may run at once, at least \
                             1, as in `max_concurrency = 4`, or remove it to run every item at \
                             once",
                        ),
                    )
                }
                "min_successful" => {
                    options.min_successful = count(
                        self.cx,
                        opt,
                        "min_successful = 4",
                        Some(
                            "`min_successful = 0` would make the map succeed before any item \
                             ran; give how many items must succeed, at least 1, as in \
                             `min_successful = 4`, or remove it to wait for every item",
                        ),
                    );
                    min_successful = options.min_successful.zip(value_tokens(opt));
                }
                "tolerated_failures" => {
                    options.tolerated_failures = count(self.cx, opt, "tolerated_failures = 2", None)
                }
                "tolerated_failure_percentage" => {
                    options.tolerated_failure_percentage = percentage(self.cx, opt)
                }
                "after" => after = after_list(self.cx, opt),
                key if STEP_OPTIONS.contains(&key) => self.cx.error(
                    &opt.key,
                    format_args!(
                        "{}; `{key}` is a step option: give it to the steps inside",
                        suggest::unknown("map option", key, MAP_OPTIONS)
                    ),
                ),
                key => {
                    over_misspelled |= suggest::closest(key, MAP_OPTIONS) == Some("over");
                    self.cx
                        .error(&opt.key, suggest::unknown("map option", key, MAP_OPTIONS))
                }
            }
        }
        // After a typo such as `ovr = items`, the unknown-option error already says what to fix.
        if !over_given && !over_misspelled {
            self.cx.error(
                quote::quote!(#keyword #ident),
                format_args!(
                    "map `{name}` needs `over`, the state's field holding the array whose \
                     elements it runs over: write `over = items`, as in \
                     `map {name}(over = items) {{ ... }}`, or list the items themselves, as in \
                     `over = [1, 2, 3]`"
                ),
            );
        }
        if let Some(Over::List(list)) = &over {
            if let Some((k, tokens)) = min_successful.filter(|(k, _)| *k > list.len) {
                let (len, items) = (list.len, if list.len == 1 { "item" } else { "items" });
                self.cx.error(
                    tokens,
                    format_args!(
                        "`min_successful = {k}` can never be reached: this map has only {len} \
                         {items}; write at most `min_successful = {len}`"
                    ),
                );
            }
            // The default item type, `Data`, is a JSON object, which no literal is.
            if !item_given {
                let ty = list.item_type;
                self.cx.error(
                    list.tokens,
                    format_args!(
                        "the steps inside map `{name}` take its items, which are not JSON \
                         objects, so they cannot be the default `Data`: give the items' type, \
                         as in `map {name}(over = [...], item = {ty})`"
                    ),
                );
            }
        }
        let after = self.placed(after, parent);
        if map.body.items.is_empty() {
            empty(
                self.cx,
                quote::quote!(#keyword #ident),
                &map.body,
                format_args!(
                    "map `{name}` is empty; give it the nodes each item runs, at least one, as \
                     in `map {name}(over = items) {{ step process_item; }}`"
                ),
            );
        }
        let items = self.items(
            &map.body.items,
            Parent::Map {
                name: &map.name,
                in_dag: matches!(parent, Parent::Dag),
            },
        );
        let over = match over {
            Some(Over::Field(field)) => model::Over::Field(field),
            Some(Over::List(list)) => model::Over::Items(list.json),
            None => model::Over::Field(String::new()),
        };
        let map = model::Map {
            name: name.clone(),
            ident: map.name.clone(),
            over,
            item,
            options,
            items,
        };
        Node {
            item: model::Item::Map(map),
            after,
            name: Some(name),
            kind: "map",
        }
    }
}
