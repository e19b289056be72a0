//! Every complete job in docs/JOBS.md (a ```toml block with `[input]` and
//! `[[steps]]`) loads.

use super::parse;

const JOBS_MD: &str = include_str!("../../../../docs/JOBS.md");

#[test]
fn every_complete_example_in_the_docs_is_valid() {
    let blocks: Vec<&str> = JOBS_MD
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .filter(|block| block.contains("[input]") && block.contains("[[steps]]"))
        .collect();
    assert!(
        blocks.len() >= 7,
        "found {} complete examples",
        blocks.len()
    );
    for block in blocks {
        if let Err(e) = parse(block, &[]) {
            panic!("docs/JOBS.md example is invalid:\n{e}\n---\n{block}");
        }
    }
}
