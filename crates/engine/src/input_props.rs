//! Property tests of the JSONL reader: any bytes give every non-blank line
//! a request or a clear error naming its line, never a panic, and the line
//! numbers are the file's own.
//!
//! Cases: `SLUICE_PROPTEST_CASES` (default 64).

use proptest::prelude::*;

use crate::input::{parse_line, LineReader};

#[path = "../../../tests/support/watchdog.rs"]
mod watchdog;

fn config() -> ProptestConfig {
    // Called on the test's thread before any case: the test's time limit
    // (`SLUICE_TEST_TIMEOUT_SECS`), so a case that hangs names its test.
    watchdog::once_per_test();
    let cases = std::env::var("SLUICE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like JSONL often enough to reach the parser's depths.
fn jsonl_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"{\"custom_id\":\"a\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}".to_vec()),
        Just(b"{\"model\":\"m\",\"input\":\"x\"}".to_vec()),
        Just(b"{\"custom_id\":1,\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just(vec![0xff, 0xfe]),
        prop::collection::vec(any::<u8>(), 0..12),
        "[{}\\[\\]\":,a-z0-9 ]{0,20}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_give_each_line_a_request_or_a_numbered_error(bytes in jsonl_bytes()) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, &bytes).expect("written");
        let mut reader = LineReader::open(&path).expect("opened");
        let lines = bytes.split(|&b| b == b'\n').count() as u64;
        let mut last = 0;
        let mut seen = 0u64;
        while let Some(entry) = reader.next_entry(&[], true).expect("readable") {
            seen += 1;
            let line = match entry {
                Ok(r) => {
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_ok());
                    r.line
                }
                Err(bad) => {
                    prop_assert!(!bad.message.is_empty());
                    bad.line
                }
            };
            prop_assert!(line > last && line <= lines, "line {} after {} of {}", line, last, lines);
            last = line;
        }
        prop_assert!(seen <= lines);
    }

    #[test]
    fn any_text_on_one_line_is_a_request_or_an_error_for_that_line(
        text in "\\PC{0,80}",
        line in 1u64..1_000_000,
    ) {
        match parse_line(&text, line) {
            Ok(r) => prop_assert_eq!(r.line, line),
            Err(bad) => {
                prop_assert_eq!(bad.line, line);
                prop_assert!(!bad.message.is_empty());
            }
        }
    }
}
