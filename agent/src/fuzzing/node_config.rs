//! Fuzz target `node_config`: one node config file's text.

use crate::config::NodeConfig;

/// Parses `text` as a node config. Refusals must say something a person can act on; an
/// accepted config must parse the same way twice (nothing in parsing depends on state).
/// Returns whether it was accepted (1) or not (0).
pub fn parse_node_config(text: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(text) else {
        return 0;
    };
    match NodeConfig::parse(text) {
        Ok(config) => {
            let again = NodeConfig::parse(text).expect("the same text parsed once");
            assert_eq!(config, again, "one text, two configs");
            1
        }
        Err(message) => {
            assert!(!message.trim().is_empty(), "a refusal without a reason");
            0
        }
    }
}
