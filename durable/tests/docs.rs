//! The README and the guides say one thing twice on purpose: the README's "Guarantees" list is
//! the guarantees guide's (`durable/docs/guarantees.md`, the page docs.rs shows), word for
//! word, so that a reader of either gets the same promises. This test fails when one of the
//! two lists changes without the other.

/// The bullet list right after the line `heading`: its bullets (`- `) and their continuation
/// lines (indented), up to the first line that is neither.
fn list_after<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = doc.lines().skip_while(|line| *line != heading);
    assert_eq!(lines.next(), Some(heading), "no line `{heading}`");
    lines
        .skip_while(|line| line.is_empty())
        .take_while(|line| line.starts_with("- ") || line.starts_with("  "))
        .collect()
}

#[test]
fn readme_guarantees_are_the_guarantees_guides() {
    let readme = list_after(include_str!("../../README.md"), "## Guarantees");
    let guide = list_after(include_str!("../docs/guarantees.md"), "# Guarantees");
    assert!(
        readme.len() > 10,
        "the README's Guarantees list is too short to be it: {readme:?}"
    );
    assert_eq!(
        readme, guide,
        "the README's Guarantees list and the one in durable/docs/guarantees.md differ: change both"
    );
}
