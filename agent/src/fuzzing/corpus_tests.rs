//! Replays every input in `fuzz/corpus/<target>/` (the seeds, and whatever the fuzzer kept or
//! was added after a finding) through its target, so `cargo test` runs what fuzzing found.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("corpus {}: {err}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    // A missing or emptied corpus would make the replay pass by testing nothing.
    assert!(
        inputs.len() >= 5,
        "corpus {} has {} inputs",
        dir.display(),
        inputs.len()
    );
    inputs
}

/// Runs every input; inputs whose name starts with `accepted-` are seeds the target must
/// accept, so the checks on accepted inputs are known to run (and a target that accepts
/// nothing, or a corpus left with only junk, fails).
fn replay(target: &str, run: fn(&[u8]) -> usize) {
    let mut seeds_accepted = 0;
    for input in corpus(target) {
        let data = std::fs::read(&input).expect("corpus input");
        // The panic names the input, so a failure points at the file to debug with.
        eprintln!("{target}: {}", input.display());
        let accepted = run(&data);
        let name = input
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with("accepted-") {
            assert!(accepted > 0, "seed {} was not accepted", input.display());
            seeds_accepted += 1;
        }
    }
    assert!(seeds_accepted > 0, "corpus {target} has no accepted- seeds");
}

#[test]
fn request_decoding_corpus() {
    replay("request_decoding", super::request::decode_request);
}

#[test]
fn token_parsing_corpus() {
    replay("token_parsing", super::token::parse_token);
}

#[test]
fn node_config_corpus() {
    replay("node_config", super::node_config::parse_node_config);
}
