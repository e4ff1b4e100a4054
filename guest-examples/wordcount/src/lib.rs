//! ferray example: map-reduce word count. The driver `put`s the chunks of a text, passes each
//! chunk's object ref to a `count-words` task (a dependency, resolved before the task runs), and
//! passes the list of the map results' refs to one `merge` task.
//!
//! `ferray run wordcount.wasm run "a b a" 2 10` prints `[("a", 2), ("b", 1)]`.

use std::collections::BTreeMap;

use ferray_sdk::{ObjectRef, Task};

wit_bindgen::generate!({ path: "wit", world: "wordcount" });

struct Component;

/// Splits `text` into at most `chunks` non-empty pieces of similar size, cutting only at
/// whitespace so that no word is split.
fn split_chunks(text: &str, chunks: u32) -> Vec<&str> {
    let chunks = chunks.max(1) as usize;
    let target = text.len().div_ceil(chunks).max(1);
    let mut pieces = Vec::with_capacity(chunks);
    let mut rest = text;
    while !rest.is_empty() {
        if pieces.len() + 1 == chunks || rest.len() <= target {
            pieces.push(rest);
            break;
        }
        // The first whitespace at or after `target` (on a char boundary) ends this piece.
        let mut cut = target;
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let end = rest[cut..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| cut + i);
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces.retain(|p| !p.trim().is_empty());
    pieces
}

fn count(chunk: &str) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for word in chunk
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Map with one task per chunk, reduce with one `merge` task.
fn word_count(text: &str, chunks: u32, top: u32) -> ferray_sdk::Result<Vec<(String, u32)>> {
    let pieces: Vec<ObjectRef> = split_chunks(text, chunks)
        .into_iter()
        .map(ferray_sdk::put)
        .collect();
    let maps = pieces
        .iter()
        .map(|piece| Task::new("count-words").arg_ref(piece).submit())
        .collect::<ferray_sdk::Result<Vec<_>>>()?;
    let merged = Task::new("merge")
        .arg_list_of_refs(&maps)
        .arg(&top)
        .submit()?;
    ferray_sdk::get(&merged)
}

impl Guest for Component {
    fn run(text: String, chunks: u32, top: u32) -> Vec<(String, u32)> {
        word_count(&text, chunks, top).expect("word count tasks failed")
    }

    fn run_file(path: String, chunks: u32, top: u32) -> Result<Vec<(String, u32)>, String> {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        word_count(&text, chunks, top).map_err(|e| e.to_string())
    }

    fn count_words(chunk: String) -> Vec<(String, u32)> {
        count(&chunk).into_iter().collect()
    }

    fn merge(parts: Vec<Vec<(String, u32)>>, top: u32) -> Vec<(String, u32)> {
        let mut totals: BTreeMap<String, u32> = BTreeMap::new();
        for (word, n) in parts.into_iter().flatten() {
            *totals.entry(word).or_insert(0) += n;
        }
        let mut sorted: Vec<(String, u32)> = totals.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if top > 0 {
            sorted.truncate(top as usize);
        }
        sorted
    }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_at_whitespace_only() {
        let text = "the quick brown fox jumps over the lazy dog";
        for n in 1..12 {
            let pieces = split_chunks(text, n);
            assert!(pieces.len() <= n as usize);
            assert_eq!(pieces.concat(), text);
            let words: usize = pieces.iter().map(|p| p.split_whitespace().count()).sum();
            assert_eq!(words, 9, "n = {n}: {pieces:?}");
        }
        assert!(split_chunks("", 3).is_empty());
    }
}
