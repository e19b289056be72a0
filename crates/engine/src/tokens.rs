//! Token estimates made before a call, to reserve tokens/minute budget.
//!
//! OpenAI-family models (`gpt-*`, `o1`/`o3`/`o4*`, `text-embedding-*`, …) are
//! counted with their own BPE tokenizer (tiktoken-rs embeds the tables, so it
//! works offline); any other model falls back to characters ÷ 4. Either way
//! the response's `usage` corrects the reservation afterwards.

use sluice_limit::estimate_text_tokens;

/// Estimated tokens of `text` for `model`.
pub(crate) fn estimate(model: Option<&str>, text: &str) -> u64 {
    match model.and_then(|m| tiktoken_rs::bpe_for_model(m).ok()) {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => estimate_text_tokens(text),
    }
}

/// Loads, on a thread of its own, the tokenizer tables of every model in
/// `candidates` that has one, so the first estimate does not stall the
/// single-threaded dispatcher while the tables are built (~0.3 s release,
/// seconds in debug). Names without a tokenizer cost nothing.
pub(crate) fn warm_up(candidates: Vec<String>) {
    let known: Vec<String> = candidates
        .into_iter()
        .filter(|m| tiktoken_rs::tokenizer::get_tokenizer(m).is_some())
        .collect();
    if known.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-tokenizer".into())
        .spawn(move || {
            for model in known {
                let _ = tiktoken_rs::bpe_for_model(&model);
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("tokenizer tables load on first use: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_use_their_tokenizer_others_chars_over_four() {
        // "hello world" is two tokens for o200k and cl100k alike.
        assert_eq!(estimate(Some("gpt-4o"), "hello world"), 2);
        assert_eq!(estimate(Some("gpt-4o-mini"), "hello world"), 2);
        assert_eq!(estimate(Some("gpt-3.5-turbo"), "hello world"), 2);
        // 11 characters → 3 by the fallback.
        assert_eq!(estimate(Some("qwen-72b"), "hello world"), 3);
        assert_eq!(estimate(None, "hello world"), 3);
    }
}
