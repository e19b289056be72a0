//! What a model reads of a conversation, hashed: the model, then each
//! message's role and text (a system prompt being the first message). Replies
//! are seeded by it, so the same conversation gets the same answer whether it
//! came as an OpenAI chat completion or an Anthropic message, live, streamed
//! or in a batch.

use xxhash_rust::xxh3::Xxh3;

/// The hash of a message's text: its text parts, concatenated.
pub(crate) fn text_hash<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = Xxh3::new();
    for t in texts {
        h.update(t.as_bytes());
    }
    h.digest()
}

/// The hash of a conversation: `model`, then `(role, text_hash)` per message.
pub(crate) fn hash<'a>(model: &str, messages: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut h = Xxh3::new();
    h.update(model.as_bytes());
    h.update(&[0xff]);
    for (role, text) in messages {
        h.update(role.as_bytes());
        h.update(&[0]);
        h.update(&text.to_le_bytes());
    }
    h.digest()
}

/// The reply seed of a conversation on a server seeded with `seed`.
pub(crate) fn reply_seed(seed: u64, conversation: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&conversation.to_le_bytes(), seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_strings_hash_alike_and_order_matters() {
        assert_eq!(text_hash(["ab"]), text_hash(["a", "b"]));
        let a = hash(
            "m",
            [("system", text_hash(["s"])), ("user", text_hash(["q"]))],
        );
        let b = hash(
            "m",
            [("user", text_hash(["q"])), ("system", text_hash(["s"]))],
        );
        assert_ne!(a, b);
        assert_ne!(
            a,
            hash(
                "n",
                [("system", text_hash(["s"])), ("user", text_hash(["q"]))]
            )
        );
        assert_ne!(reply_seed(1, a), reply_seed(2, a));
    }
}
