//! "Did you mean": the closest known name to a mistyped one (`trian` -> `train`,
//! `epoch` -> `epochs`), so that a typo costs one look, not a round trip to the docs.

/// ` (did you mean `x`?)` for the candidate nearest to `word` by edit distance, when one is
/// close enough (at most a third of the word's length, and at least one edit, away); else "".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters, with a swap of neighbours counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, slot) in d.iter_mut().enumerate().take(width) {
        *slot = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_name_and_a_stranger_gets_nothing() {
        let stages = ["train", "probe", "transfer101", "report"];
        assert_eq!(did_you_mean("trian", stages), " (did you mean `train`?)");
        assert_eq!(
            did_you_mean("epoch", ["epochs", "batch_size"]),
            " (did you mean `epochs`?)"
        );
        assert_eq!(did_you_mean("prbe", stages), " (did you mean `probe`?)");
        assert_eq!(did_you_mean("occlusion", stages), "");
        assert_eq!(did_you_mean("x", ["y", "z"]), " (did you mean `y`?)");
        assert_eq!(did_you_mean("train", stages), "");
    }
}
