//! "Did you mean" suggestions and lists of valid names for error messages.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
///
/// Uses the optimal string alignment distance (a transposition counts as one edit, so `stpe`
/// is one edit from `step`) and rustc's threshold of a third of the word's length.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let threshold = word.chars().count().max(3) / 3;
    candidates
        .iter()
        .map(|candidate| (distance(word, candidate), *candidate))
        .filter(|(d, _)| *d <= threshold)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// The message for an unknown name: "unknown retry option `max_attempt`; did you mean
/// `max_attempts`? The retry options are `max_attempts`, ... and `jitter`".
pub fn unknown(kind: &str, word: &str, candidates: &[&str]) -> String {
    let valid = match candidates {
        [only] => format!("the only {kind} is `{only}`"),
        _ => format!("the {} are {}", plural(kind), all_of(candidates)),
    };
    match closest(word, candidates) {
        Some(candidate) => {
            format!(
                "unknown {kind} `{word}`; did you mean `{candidate}`? {}",
                capitalize(&valid)
            )
        }
        None => format!("unknown {kind} `{word}`; {valid}"),
    }
}

/// The candidates as prose: "`a`, `b` and `c`".
pub fn all_of(candidates: &[&str]) -> String {
    let quoted: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `kind` in the plural; the kinds in messages are regular English nouns.
pub fn plural(kind: &str) -> String {
    match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    }
}

/// `text` with its first letter in upper case.
pub fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters each count as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::{all_of, closest, unknown};

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("stpe", &["step", "parallel"]), Some("step"));
        assert_eq!(
            closest("max_attempt", &["max_attempts", "max_interval"]),
            Some("max_attempts")
        );
        assert_eq!(closest("rerty", &["retry"]), Some("retry"));
        assert_eq!(closest("timeout", &["retry"]), None);
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(all_of(&["a"]), "`a`");
        assert_eq!(all_of(&["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(
            unknown("merge strategy", "deep", &["deep_merge", "collect"]),
            "unknown merge strategy `deep`; the merge strategies are `deep_merge` and `collect`"
        );
        assert_eq!(
            unknown("step option", "rety", &["retry"]),
            "unknown step option `rety`; did you mean `retry`? The only step option is `retry`"
        );
    }
}
