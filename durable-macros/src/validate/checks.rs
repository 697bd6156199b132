//! The workflow-wide checks, which no single item can make on its own: every name of a step,
//! seq, map or named parallel block is unique in the whole workflow, `after` is written only
//! on a node directly inside a dag, and every dag's `after`s name nodes of that dag and form
//! no cycle. The items call `define` and `placed` as the walk meets them; the dags are checked
//! by `check_dags` once the walk is over, when every name of the workflow is known.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::Ident;

use super::{After, Parent, Walk};
use crate::suggest;

/// A node of a dag, as the check of the dag's `after`s needs it.
pub(super) struct DagEntry {
    /// The node's name; `None` for a `parallel` or `dag` block, which has none.
    pub(super) name: Option<String>,
    /// `step`, `seq`, `map`, `parallel` or `dag`.
    pub(super) kind: &'static str,
    /// The names in its `after`, with their spans.
    pub(super) after: Vec<Ident>,
    /// The names of the steps, seqs and maps nested inside it.
    pub(super) inner: Vec<String>,
}

impl<'a> Walk<'a> {
    /// `after`, if given and allowed: reported when the node is not directly in a dag.
    pub(super) fn placed(&mut self, after: Option<After<'a>>, parent: Parent) -> Option<After<'a>> {
        let key = after.as_ref()?.key;
        let why = match parent {
            Parent::Dag => return after,
            Parent::Workflow => "the workflow's items run in order, each after the one before \
                                 it: remove `after`, or put this node and the ones it comes \
                                 after in a `dag { ... }`"
                .to_owned(),
            Parent::Parallel => "the branches of a `parallel` block all start together: remove \
                                 `after`, or make the block a `dag { ... }`"
                .to_owned(),
            Parent::Seq { name, in_dag: true } => format!(
                "the nodes of seq `{name}` run in order, each after the one before it; to make \
                 the whole seq wait, give it the `after`, as in `seq {name}(after = [...]) {{ ... }}`"
            ),
            Parent::Seq { name, in_dag: false } => format!(
                "the nodes of seq `{name}` run in order, each after the one before it: remove \
                 `after`, or make the seq a `dag {{ ... }}`"
            ),
            Parent::Map { name, in_dag: true } => format!(
                "the nodes of map `{name}` run in order for each item, each after the one \
                 before it; to make the whole map wait, give it the `after`, as in \
                 `map {name}(over = ..., after = [...]) {{ ... }}`"
            ),
            Parent::Map { name, in_dag: false } => format!(
                "the nodes of map `{name}` run in order for each item, each after the one \
                 before it: remove `after`, or put them in a `dag {{ ... }}` inside the map"
            ),
        };
        self.cx.error(
            key,
            format_args!("`after` only works on a node directly inside a `dag {{ … }}`; {why}"),
        );
        None
    }

    /// Records the name of a step, seq, map, `wait_for` or `callback`, reporting it if it is
    /// taken.
    pub(super) fn define(&mut self, ident: &Ident, kind: &'static str) -> String {
        let name = ident.unraw().to_string();
        self.order.push(name.clone());
        match self.names.get(&name) {
            Some(&(first, "step")) if kind == "step" => self.cx.error(
                ident,
                format_args!(
                    "step `{name}` is already defined {}; step names must be unique because \
                     the journal is keyed by them: rename one",
                    where_is(first)
                ),
            ),
            Some(&(first, first_kind)) => {
                let waits = [first_kind, kind]
                    .iter()
                    .any(|k| matches!(*k, "wait_for" | "callback" | "call"));
                let kinds = if waits {
                    // A wait's or a callback's name is also the state key its payload goes
                    // under.
                    "steps, seqs, maps, sleeps, `wait_for`s, `callback`s and `call`s"
                } else {
                    "steps, seqs, maps and sleeps"
                };
                self.cx.error(
                    ident,
                    format_args!(
                        "`{name}` is already the name of the {first_kind} {}; {kinds} share \
                         one namespace, unique in the whole workflow, because the journal and \
                         `after` refer to them by name: rename one",
                        where_is(first)
                    ),
                )
            }
            None => {
                self.names.insert(name.clone(), (ident.span(), kind));
            }
        }
        name
    }
}

/// "on line 12" where the compiler tells lines, else "in this workflow".
fn where_is(span: Span) -> String {
    // `unwrap` panics outside a procedural macro, as in this crate's unit tests.
    if proc_macro::is_available() {
        format!("on line {}", span.unwrap().line())
    } else {
        "in this workflow".to_owned()
    }
}

impl Walk<'_> {
    /// Checks every dag's `after`s against the dag's nodes: each names another node of the
    /// same dag, and they form no cycle.
    pub(super) fn check_dags(&mut self) {
        for entries in std::mem::take(&mut self.dags) {
            // `edges[i]`: the nodes `i` comes after, each with the name that says so.
            let mut edges: Vec<Vec<(usize, &Ident)>> = vec![Vec::new(); entries.len()];
            for (i, entry) in entries.iter().enumerate() {
                for dep in &entry.after {
                    let name = dep.unraw().to_string();
                    match entries
                        .iter()
                        .position(|e| e.name.as_deref() == Some(&*name))
                    {
                        Some(j) if j == i => self.cx.error(
                            dep,
                            format_args!(
                                "{} `{name}` comes after itself, so it could never start; \
                                 remove `{name}` from its `after`",
                                entry.kind
                            ),
                        ),
                        Some(j) => {
                            if entries.iter().any(|e| e.name.is_none() && e.kind == name) {
                                self.cx.error(
                                    dep,
                                    format_args!(
                                        "`{name}` names both the {} `{name}` and a `{name}` \
                                         block of this dag, which the runtime cannot tell \
                                         apart: rename the {}",
                                        entries[j].kind, entries[j].kind
                                    ),
                                );
                            }
                            edges[i].push((j, dep));
                        }
                        None => self.unresolved(&entries, i, dep, &name),
                    }
                }
            }
            self.cycles(&entries, &edges);
        }
    }

    /// Reports a name in `entries[i]`'s `after` that is no node of its dag.
    fn unresolved(&mut self, entries: &[DagEntry], i: usize, dep: &Ident, name: &str) {
        let holder = entries
            .iter()
            .position(|e| e.inner.iter().any(|inner| inner == name));
        let others: Vec<&str> = entries
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(_, e)| e.name.as_deref())
            .collect();
        let others_are = match others.as_slice() {
            [] => "this dag has no other named node".to_owned(),
            [only] => format!("the only other node of this dag is `{only}`"),
            _ => format!(
                "the other nodes of this dag are {}",
                suggest::all_of(&others)
            ),
        };
        let message = match holder {
            Some(j) if j == i => format!(
                "`{name}` is inside this {} itself: a node cannot come after its own steps; \
                 remove `{name}` from `after`",
                entries[i].kind
            ),
            Some(j) => match &entries[j].name {
                Some(holder) => format!(
                    "`{name}` is inside {} `{holder}`, not directly in this dag, and `after` \
                     names only the dag's own nodes: name `{holder}` instead, to come after the \
                     whole of it",
                    entries[j].kind
                ),
                None => format!(
                    "`{name}` is inside a `{}` block of this dag, not directly in the dag, and \
                     the block has no name to come after: wrap the block in \
                     `seq name {{ ... }}` and write `after = [name]`",
                    entries[j].kind
                ),
            },
            None => match self.names.get(name) {
                Some((_, kind)) => format!(
                    "`{name}` is a {kind} of this workflow but not of this dag: `after` names \
                     only the nodes directly inside the same `dag {{ ... }}`; {others_are}"
                ),
                None if entries.iter().any(|e| e.name.is_none() && e.kind == name) => format!(
                    "a `{name}` block has no name, so `after` cannot refer to it: wrap the \
                     block in `seq name {{ ... }}` and write `after = [name]`"
                ),
                None => match suggest::closest(name, &others) {
                    Some(close) => format!(
                        "unknown name `{name}` in `after`; did you mean `{close}`? {}",
                        suggest::capitalize(&others_are)
                    ),
                    None => format!(
                        "unknown name `{name}` in `after`: no step, seq or map has this name; \
                         {others_are}"
                    ),
                },
            },
        };
        self.cx.error(dep, message);
    }

    /// Reports each cycle of `edges`, once per strongly connected group of nodes.
    fn cycles(&mut self, entries: &[DagEntry], edges: &[Vec<(usize, &Ident)>]) {
        let n = entries.len();
        // `reach[i][j]`: `i` comes after `j`, directly or not.
        let mut reach = vec![vec![false; n]; n];
        for (i, row) in reach.iter_mut().enumerate() {
            let mut stack: Vec<usize> = edges[i].iter().map(|&(j, _)| j).collect();
            while let Some(j) = stack.pop() {
                if !row[j] {
                    row[j] = true;
                    stack.extend(edges[j].iter().map(|&(k, _)| k));
                }
            }
        }
        let mut reported = vec![false; n];
        for start in 0..n {
            if reported[start] || !reach[start][start] {
                continue;
            }
            let group: Vec<usize> = (0..n)
                .filter(|&j| reach[start][j] && reach[j][start])
                .collect();
            for &j in &group {
                reported[j] = true;
            }
            // The shortest cycle through `start`, in the order the nodes would run: a
            // breadth-first search from `start` to the nodes that come after it.
            let mut previous: Vec<Option<usize>> = vec![None; n];
            let mut queue = std::collections::VecDeque::from([start]);
            let mut last = None;
            'search: while let Some(node) = queue.pop_front() {
                for &next in &group {
                    if edges[next].iter().any(|&(d, _)| d == node) {
                        if next == start {
                            last = Some(node);
                            break 'search;
                        }
                        if previous[next].is_none() {
                            previous[next] = Some(node);
                            queue.push_back(next);
                        }
                    }
                }
            }
            let Some(last) = last else { continue };
            let mut path = vec![last];
            while let Some(&node) = path.last() {
                if node == start {
                    break;
                }
                match previous[node] {
                    Some(before) => path.push(before),
                    None => break,
                }
            }
            path.reverse();
            path.push(start);
            let names: Vec<String> = path
                .iter()
                .map(|&j| {
                    format!(
                        "`{}`",
                        entries[j].name.as_deref().unwrap_or(entries[j].kind)
                    )
                })
                .collect();
            // Pointed at the `after` that closes the cycle: `start` coming after `last`.
            let Some(&(_, dep)) = edges[start].iter().find(|&&(d, _)| d == last) else {
                continue;
            };
            self.cx.error(
                dep,
                format_args!(
                    "these `after`s form a cycle: {} (each comes after the one before it), so \
                     none of them can ever start; remove one of these dependencies",
                    names.join(" -> ")
                ),
            );
        }
    }
}
