//! "Did you mean": the closest of a list of names to a misspelt one, for
//! unknown keys, template variables, item fields and request parameters.

/// The candidate closest to `name`, when it is close enough to be a likely
/// typo: an edit distance (insertions, deletions, substitutions and swaps of
/// neighbours) of at most a third of the longer name's length (1 to 3),
/// or the same name in another case or with `-`/`_` swapped.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let folded = fold(name);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        if fold(candidate) == folded {
            return Some(candidate);
        }
        let distance = edit_distance(name, candidate);
        let longest = name.chars().count().max(candidate.chars().count());
        let allowed = (longest / 3).clamp(1, 3);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// `; did you mean `x`?` when a candidate is close, else nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

fn fold(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}

/// Optimal string alignment distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
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
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_intended_name() {
        let keys = ["response_format", "params", "messages", "model"];
        assert_eq!(closest("respone_format", keys), Some("response_format"));
        assert_eq!(closest("mesages", keys), Some("messages"));
        assert_eq!(closest("modle", keys), Some("model"));
        assert_eq!(closest("Model", keys), Some("model"));
        assert_eq!(
            closest("max_token", ["max_tokens", "top_p"]),
            Some("max_tokens")
        );
        assert_eq!(closest("promt", ["id", "prompt", "topic"]), Some("prompt"));
    }

    #[test]
    fn unrelated_names_get_no_suggestion() {
        assert_eq!(closest("question", ["id", "prompt", "topic"]), None);
        assert_eq!(closest("subject", ["id", "prompt", "topic"]), None);
        assert_eq!(closest("x", ["id"]), None);
        assert_eq!(closest("model", ["model"]), None, "the name itself");
        assert_eq!(did_you_mean("zzz", ["model"]), "");
        assert_eq!(did_you_mean("modl", ["model"]), "; did you mean `model`?");
    }
}
