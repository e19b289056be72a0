//! Where a bare request body goes when quick mode's URL is a base URL (the
//! way OpenAI's SDKs take `OPENAI_BASE_URL`): its shape names the endpoint.

/// Whether `url` is a base URL rather than an endpoint: its path is empty,
/// `/`, or ends in a version segment (`/v1`, `/openai/v1`, `/api/v2/`).
pub fn is_base_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let path = uri.path().trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or("");
    path.is_empty()
        || (last.len() > 1
            && last.starts_with('v')
            && last[1..].bytes().all(|b| b.is_ascii_digit()))
}

/// The endpoint, relative to a base URL, that a body with these fields is
/// for: `messages` → `chat/completions`, `input` → `embeddings`, `prompt` →
/// `completions`.
pub(crate) fn endpoint_for(messages: bool, input: bool, prompt: bool) -> Option<&'static str> {
    if messages {
        Some("chat/completions")
    } else if input {
        Some("embeddings")
    } else if prompt {
        Some("completions")
    } else {
        None
    }
}

/// `base`'s path with `endpoint` appended (`/v1` + `embeddings` → `/v1/embeddings`).
pub(crate) fn join(base_path: &str, endpoint: &str) -> String {
    format!("{}/{endpoint}", base_path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_end_in_a_version_or_nothing() {
        for base in [
            "https://api.openai.com/v1",
            "https://api.groq.com/openai/v1/",
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "https://openrouter.ai/api/v1",
        ] {
            assert!(is_base_url(base), "{base}");
        }
        for endpoint in [
            "https://api.openai.com/v1/chat/completions",
            "http://h/v1/embeddings",
            "http://h/score",
            "http://h/v1beta",
            "http://h/v",
        ] {
            assert!(!is_base_url(endpoint), "{endpoint}");
        }
    }

    #[test]
    fn the_shape_names_the_endpoint() {
        assert_eq!(endpoint_for(true, false, false), Some("chat/completions"));
        assert_eq!(endpoint_for(false, true, false), Some("embeddings"));
        assert_eq!(endpoint_for(false, false, true), Some("completions"));
        assert_eq!(endpoint_for(false, false, false), None);
        assert_eq!(join("/v1/", "embeddings"), "/v1/embeddings");
        assert_eq!(join("/", "embeddings"), "/embeddings");
    }
}
