//! A workflow's step graph as data, and as Mermaid or Graphviz text for docs.

use std::fmt::Write as _;

use crate::definition::{Definition, MapOptions, Node, StepOptions, Wake};

/// The steps of a workflow and the edges between them: an edge `a -> b` means `b` starts
/// only after `a` finished (sequence order, the fork and join of blocks, dag dependencies).
///
/// ```
/// use durable::{workflow, Data, StepError, Workflow};
///
/// async fn fetch(d: Data) -> Result<Data, StepError> { Ok(d) }
///
/// workflow! {
///     order {
///         step validate = fetch;
///         parallel { step charge = fetch; step reserve = fetch; }
///         step ship = fetch;
///     }
/// }
///
/// let graph = order.definition().graph();
/// let names: Vec<_> = graph.steps.iter().map(|s| s.name).collect();
/// assert_eq!(names, ["validate", "charge", "reserve", "ship"]);
/// assert_eq!(graph.edges, [(0, 1), (0, 2), (1, 3), (2, 3)]);
/// assert!(order.definition().to_mermaid().contains("validate --> charge"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Graph {
    /// Every step, depth first in declaration order.
    pub steps: Vec<GraphStep>,
    /// `(from, to)` indices into `steps`.
    pub edges: Vec<(usize, usize)>,
}

/// One step of a [`Graph`], or another item that takes its place in the order (a sleep).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GraphStep {
    /// The step's name.
    pub name: &'static str,
    /// What it is: a step, a sleep, ...
    pub kind: GraphKind,
    /// Its options (the defaults for an item that is not a step).
    pub options: StepOptions,
    /// The blocks it sits in, outermost first (`parallel`, `parallel NAME`, `dag`, `seq NAME`,
    /// `map NAME over FIELD`).
    pub blocks: Vec<String>,
}

/// What a [`GraphStep`] is. Mermaid draws a step as a rectangle and a sleep as a stadium
/// (`(["..."])`); DOT draws a step as a box and a sleep as an ellipse.
///
/// ```
/// use std::time::Duration;
/// use durable::graph::GraphKind;
/// use durable::{Definition, Node};
///
/// let def = Definition::new("remind", "", vec![Node::sleep_for("nap", Duration::from_secs(60))]);
/// assert!(matches!(def.graph().steps[0].kind, GraphKind::Sleep(_)));
/// assert!(def.to_mermaid().contains(r#"nap(["sleep nap<br/>for 60s"])"#));
/// assert!(def.to_dot().contains(r#""nap" [label="sleep nap\nfor 60s", shape=ellipse];"#));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GraphKind {
    /// A step.
    Step,
    /// A durable sleep, and when it ends.
    Sleep(Wake),
    /// A `wait_for`: waits for a signal of its name.
    Wait,
    /// A `callback`: hands a token out, then waits for its completion.
    Callback,
    /// A `call`: runs this workflow as a child run and waits for it.
    Call(&'static str),
}

impl Definition {
    /// The workflow's step graph.
    pub fn graph(&self) -> Graph {
        let mut graph = Graph {
            steps: Vec::new(),
            edges: Vec::new(),
        };
        chain(self.nodes(), &mut graph, &mut Vec::new());
        // Steps are numbered in declaration order, so sorted edges read top to bottom.
        graph.edges.sort_unstable();
        graph
    }

    /// The step graph as a Mermaid flowchart, blocks drawn as subgraphs.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let mut counter = 0;
        render(self.nodes(), &mut out, 1, &mut counter, Style::Mermaid);
        let graph = self.graph();
        for (from, to) in graph.edges {
            let _ = writeln!(
                out,
                "    {} --> {}",
                graph.steps[from].name, graph.steps[to].name
            );
        }
        out
    }

    /// The step graph as Graphviz DOT, blocks drawn as clusters.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=TB;\n    node [shape=box];\n",
            self.name()
        );
        let mut counter = 0;
        render(self.nodes(), &mut out, 1, &mut counter, Style::Dot);
        let graph = self.graph();
        for (from, to) in graph.edges {
            let (from, to) = (graph.steps[from].name, graph.steps[to].name);
            let _ = writeln!(out, "    \"{from}\" -> \"{to}\";");
        }
        out.push_str("}\n");
        out
    }
}

/// Entry and exit steps of a subgraph.
struct Ends {
    entries: Vec<usize>,
    exits: Vec<usize>,
}

fn connect(graph: &mut Graph, from: &[usize], to: &[usize]) {
    for &f in from {
        for &t in to {
            graph.edges.push((f, t));
        }
    }
}

/// Adds `nodes` run one after another.
fn chain(nodes: &[Node], graph: &mut Graph, blocks: &mut Vec<String>) -> Ends {
    let mut ends = Ends {
        entries: Vec::new(),
        exits: Vec::new(),
    };
    for (i, node) in nodes.iter().enumerate() {
        let next = add(node, graph, blocks);
        if i == 0 {
            ends.entries = next.entries;
        } else {
            connect(graph, &ends.exits, &next.entries);
        }
        ends.exits = next.exits;
    }
    ends
}

fn add(node: &Node, graph: &mut Graph, blocks: &mut Vec<String>) -> Ends {
    match node {
        Node::Step(step) => {
            graph.steps.push(GraphStep {
                name: step.name,
                kind: GraphKind::Step,
                options: step.options.clone(),
                blocks: blocks.clone(),
            });
            let id = graph.steps.len() - 1;
            Ends {
                entries: vec![id],
                exits: vec![id],
            }
        }
        Node::Sleep(sleep) => {
            graph.steps.push(GraphStep {
                name: sleep.name,
                kind: GraphKind::Sleep(sleep.wake.clone()),
                options: StepOptions::default(),
                blocks: blocks.clone(),
            });
            let id = graph.steps.len() - 1;
            Ends {
                entries: vec![id],
                exits: vec![id],
            }
        }
        Node::Wait(wait) => point(wait.name, GraphKind::Wait, &wait.options, graph, blocks),
        Node::Callback(callback) => point(
            callback.name,
            GraphKind::Callback,
            &callback.options,
            graph,
            blocks,
        ),
        Node::Call(call) => point(
            call.name,
            GraphKind::Call(call.workflow),
            &call.options,
            graph,
            blocks,
        ),
        Node::Seq(seq) => {
            blocks.push(format!("seq {}", seq.name));
            let ends = chain(&seq.nodes, graph, blocks);
            blocks.pop();
            ends
        }
        Node::Map(map) => {
            blocks.push(format!(
                "map {} over {}",
                map.name,
                map.items.unwrap_or(map.over)
            ));
            let ends = chain(&map.nodes, graph, blocks);
            blocks.pop();
            ends
        }
        Node::Parallel(block) => {
            blocks.push(match block.name {
                Some(name) => format!("parallel {name}"),
                None => "parallel".into(),
            });
            let mut ends = Ends {
                entries: Vec::new(),
                exits: Vec::new(),
            };
            for branch in &block.branches {
                let b = add(branch, graph, blocks);
                ends.entries.extend(b.entries);
                ends.exits.extend(b.exits);
            }
            blocks.pop();
            ends
        }
        Node::Dag(dag) => {
            blocks.push("dag".into());
            let parts: Vec<Ends> = dag.nodes.iter().map(|n| add(n, graph, blocks)).collect();
            blocks.pop();
            let deps = dag.dependencies();
            let mut ends = Ends {
                entries: Vec::new(),
                exits: Vec::new(),
            };
            for (i, part) in parts.iter().enumerate() {
                for &d in &deps[i] {
                    connect(graph, &parts[d].exits, &part.entries);
                }
                if deps[i].is_empty() {
                    ends.entries.extend(&part.entries);
                }
                if !deps.iter().any(|ds| ds.contains(&i)) {
                    ends.exits.extend(&part.exits);
                }
            }
            ends
        }
    }
}

/// A node drawn as one point of the graph, like a step.
fn point(
    name: &'static str,
    kind: GraphKind,
    options: &StepOptions,
    graph: &mut Graph,
    blocks: &[String],
) -> Ends {
    graph.steps.push(GraphStep {
        name,
        kind,
        options: options.clone(),
        blocks: blocks.to_vec(),
    });
    let id = graph.steps.len() - 1;
    Ends {
        entries: vec![id],
        exits: vec![id],
    }
}

/// A wait or a callback, in its own shape: Mermaid `{{...}}` (hexagon) and `[/.../]`
/// (parallelogram), DOT `hexagon` and `parallelogram`.
fn waiting(out: &mut String, pad: &str, style: Style, name: &str, label: String, callback: bool) {
    let _ = match (style, callback) {
        (Style::Mermaid, false) => writeln!(out, "{pad}{name}{{{{\"{label}\"}}}}"),
        (Style::Mermaid, true) => writeln!(out, "{pad}{name}[/\"{label}\"/]"),
        (Style::Dot, callback) => writeln!(
            out,
            "{pad}\"{name}\" [shape={}, label=\"{}\"];",
            if callback { "parallelogram" } else { "hexagon" },
            label.replace("<br/>", "\\n")
        ),
    };
}

/// A wait's or a callback's label: what it waits for, then its options.
fn wait_label(what: String, options: &StepOptions) -> String {
    let mut parts = vec![what];
    if options.retry.max_attempts > 1 {
        parts.push(format!("retry ×{}", options.retry.max_attempts));
    }
    if let Some(t) = options.timeout {
        parts.push(format!("timeout {t:?}"));
    }
    if options.optional {
        parts.push("optional".into());
    }
    parts.join("<br/>")
}

#[derive(Clone, Copy)]
enum Style {
    Mermaid,
    Dot,
}

/// Writes the steps, each block as a (nested) subgraph.
fn render(nodes: &[Node], out: &mut String, depth: usize, counter: &mut usize, style: Style) {
    let pad = "    ".repeat(depth);
    for node in nodes {
        match node {
            Node::Step(step) => {
                let label = label(step.name, &step.options);
                let _ = match style {
                    Style::Mermaid => writeln!(out, "{pad}{}[\"{label}\"]", step.name),
                    Style::Dot => writeln!(
                        out,
                        "{pad}\"{}\" [label=\"{}\"];",
                        step.name,
                        label.replace("<br/>", "\\n")
                    ),
                };
            }
            Node::Wait(wait) => {
                let label = wait_label(format!("wait_for {}", wait.name), &wait.options);
                waiting(out, &pad, style, wait.name, label, false);
            }
            Node::Callback(cb) => {
                let what = format!("callback {} = {}", cb.name, cb.submit_name);
                let label = wait_label(what, &cb.options);
                waiting(out, &pad, style, cb.name, label, true);
            }
            // A subroutine: Mermaid `[[...]]`, DOT `box3d`.
            Node::Call(call) => {
                let what = format!("call {} = {}", call.name, call.workflow);
                let label = wait_label(what, &call.options);
                let _ = match style {
                    Style::Mermaid => writeln!(out, "{pad}{}[[\"{label}\"]]", call.name),
                    Style::Dot => writeln!(
                        out,
                        "{pad}\"{}\" [shape=box3d, label=\"{}\"];",
                        call.name,
                        label.replace("<br/>", "\\n")
                    ),
                };
            }
            Node::Sleep(sleep) => {
                let label = format!("sleep {}<br/>{}", sleep.name, wake_label(&sleep.wake));
                let _ = match style {
                    Style::Mermaid => writeln!(out, "{pad}{}([\"{label}\"])", sleep.name),
                    Style::Dot => writeln!(
                        out,
                        "{pad}\"{}\" [label=\"{}\", shape=ellipse];",
                        sleep.name,
                        label.replace("<br/>", "\\n")
                    ),
                };
            }
            _ => {
                *counter += 1;
                let title = match node {
                    Node::Parallel(p) => {
                        let mut title = match p.name {
                            Some(name) => format!("parallel {name}: {}", p.merge.as_str()),
                            None => format!("parallel: {}", p.merge.as_str()),
                        };
                        // With a completion policy, `on_error` does not apply.
                        if !p.options.has_policy() {
                            title = format!("{title}, {}", p.on_error.as_str());
                        }
                        title + &policy(&p.options)
                    }
                    Node::Seq(s) => format!("seq {}", s.name),
                    Node::Map(m) => format!(
                        "map {} over {}{}",
                        m.name,
                        m.items.unwrap_or(m.over),
                        policy(&m.options)
                    ),
                    _ => "dag".to_owned(),
                };
                let _ = match style {
                    Style::Mermaid => writeln!(out, "{pad}subgraph block{counter} [\"{title}\"]"),
                    Style::Dot => writeln!(
                        out,
                        "{pad}subgraph cluster_{counter} {{\n{pad}    label=\"{title}\";"
                    ),
                };
                render(node.children(), out, depth + 1, counter, style);
                let _ = match style {
                    Style::Mermaid => writeln!(out, "{pad}end"),
                    Style::Dot => writeln!(out, "{pad}}}"),
                };
            }
        }
    }
}

/// A block's concurrency limit and completion policy, as `, max_concurrency 2, ...`.
fn policy(options: &MapOptions) -> String {
    let mut out = String::new();
    let counts = [
        ("max_concurrency", options.max_concurrency),
        ("min_successful", options.min_successful),
        ("tolerated_failures", options.tolerated_failures),
    ];
    for (key, value) in counts {
        if let Some(value) = value {
            let _ = write!(out, ", {key} {value}");
        }
    }
    if let Some(p) = options.tolerated_failure_percentage {
        let _ = write!(out, ", tolerated_failure_percentage {p}%");
    }
    out
}

/// `for 10m` or `until FIELD`.
fn wake_label(wake: &Wake) -> String {
    match wake {
        Wake::For(duration) => format!("for {duration:?}"),
        Wake::Until(field) => format!("until {field}"),
    }
}

fn label(name: &str, options: &StepOptions) -> String {
    let mut parts = vec![name.to_owned()];
    if options.retry.max_attempts > 1 {
        parts.push(format!("retry ×{}", options.retry.max_attempts));
    }
    if let Some(t) = options.timeout {
        parts.push(format!("timeout {t:?}"));
    }
    if options.optional {
        parts.push("optional".into());
    }
    parts.join("<br/>")
}
