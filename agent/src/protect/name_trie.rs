//! The protected patterns as a trie of path components, the form in which the kernel judges a
//! new name (bulkhead_common::names).
//!
//! A component is a literal or `prefix*suffix`: one `*`, matching any bytes (none included)
//! but `/`. Brackets holding exactly one character (`[*]`, the way `glob::Pattern::escape`
//! writes a literal `*`) stand for that character. Anything else a shell glob allows (`?`,
//! character classes, a second `*`, `**`) is refused: the programs compare a prefix and a
//! suffix and nothing more, and a pattern they could only approximate would protect a
//! different set of names in the kernel than in the agent.

use bulkhead_common::names::{MAX_NAME_NODES, NAME_MAX, NameNode, prefix_hash, suffix_hash};

/// One path component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    Literal(Vec<u8>),
    /// `prefix*suffix`.
    Wildcard {
        prefix: Vec<u8>,
        suffix: Vec<u8>,
    },
}

impl Component {
    /// Parses one component of `pattern` (named in errors).
    pub fn parse(component: &str, pattern: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            Err(format!(
                "refusing {pattern:?}: {why} (a component may be a literal name or hold one `*`; \
                 write a literal `*`, `?` or `[` as `[*]`, `[?]`, `[[]`)"
            ))
        };
        let mut before: Vec<u8> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut chars = component.chars();
        while let Some(c) = chars.next() {
            let literal = match c {
                '*' if after.is_some() => return refuse("more than one `*` in a component"),
                '*' => {
                    after = Some(Vec::new());
                    continue;
                }
                '?' => return refuse("`?` is not supported"),
                ']' => return refuse("an unmatched `]`"),
                '[' => {
                    let (Some(inner), Some(']')) = (chars.next(), chars.next()) else {
                        return refuse("character classes (`[...]`) are not supported");
                    };
                    inner
                }
                other => other,
            };
            let mut bytes = [0; 4];
            let encoded = literal.encode_utf8(&mut bytes).as_bytes();
            after
                .as_mut()
                .unwrap_or(&mut before)
                .extend_from_slice(encoded);
        }
        let literal_len = before.len() + after.as_ref().map_or(0, Vec::len);
        if literal_len > NAME_MAX {
            return refuse("a component longer than a file name can be (255 bytes)");
        }
        Ok(match after {
            None => Self::Literal(before),
            Some(suffix) => Self::Wildcard {
                prefix: before,
                suffix,
            },
        })
    }

    /// Does the directory entry `name` match?
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            Self::Literal(literal) => name == literal.as_slice(),
            Self::Wildcard { prefix, suffix } => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
        }
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrieNode {
    pub component: Component,
    /// A pattern ends here.
    pub protect: bool,
    /// Ids of the nodes below this one.
    pub children: u64,
}

/// The trie: node ids are indexes into `nodes` and bits of the `children` sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTrie {
    nodes: Vec<TrieNode>,
    root_children: u64,
}

/// What a name matched among some candidate nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameMatch {
    pub protect: bool,
    pub children: u64,
}

impl NameTrie {
    /// Builds the trie of `patterns` (absolute, already checked by the config parser for `..`
    /// and a wildcard first component).
    pub fn build<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut trie = Self::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let mut parent: Option<usize> = None;
            let mut components = pattern.split('/').filter(|c| !c.is_empty()).peekable();
            if components.peek().is_none() {
                return Err(format!("refusing {pattern:?}: it names no file"));
            }
            while let Some(text) = components.next() {
                if text.contains("**") {
                    return Err(format!(
                        "refusing {pattern:?}: `**` (any depth) is not supported; protect the \
                         directory itself to protect everything below it"
                    ));
                }
                let component = Component::parse(text, pattern)?;
                let id = trie.child(parent, component, pattern)?;
                if components.peek().is_none() {
                    trie.nodes[id].protect = true;
                }
                parent = Some(id);
            }
        }
        Ok(trie)
    }

    /// The node for `component` below `parent` (the root when `None`), added if new.
    fn child(
        &mut self,
        parent: Option<usize>,
        component: Component,
        pattern: &str,
    ) -> Result<usize, String> {
        let siblings = parent.map_or(self.root_children, |id| self.nodes[id].children);
        if let Some(id) = ids(siblings).find(|id| self.nodes[*id].component == component) {
            return Ok(id);
        }
        let id = self.nodes.len();
        if id == MAX_NAME_NODES {
            return Err(format!(
                "refusing {pattern:?}: the protected paths have more than {MAX_NAME_NODES} \
                 distinct path components in all; protect a common directory instead of many \
                 files in different places"
            ));
        }
        self.nodes.push(TrieNode {
            component,
            protect: false,
            children: 0,
        });
        let bit = 1u64 << id;
        match parent {
            None => self.root_children |= bit,
            Some(parent) => self.nodes[parent].children |= bit,
        }
        Ok(id)
    }

    /// The nodes `/` guards.
    pub fn root_children(&self) -> u64 {
        self.root_children
    }

    pub fn node(&self, id: usize) -> &TrieNode {
        &self.nodes[id]
    }

    /// The nodes of `candidates` that `name` matches, combined.
    pub fn match_name(&self, candidates: u64, name: &[u8]) -> NameMatch {
        ids(candidates)
            .map(|id| &self.nodes[id])
            .filter(|node| node.component.matches(name))
            .fold(NameMatch::default(), |found, node| NameMatch {
                protect: found.protect || node.protect,
                children: found.children | node.children,
            })
    }

    /// The table the programs read, indexed by node id.
    pub fn kernel_nodes(&self) -> Vec<NameNode> {
        self.nodes.iter().map(kernel_node).collect()
    }
}

fn kernel_node(node: &TrieNode) -> NameNode {
    let (prefix, suffix, exact): (&[u8], &[u8], u32) = match &node.component {
        Component::Literal(literal) => (literal, &[], 1),
        Component::Wildcard { prefix, suffix } => (prefix, suffix, 0),
    };
    NameNode {
        prefix_hash: prefix_hash(prefix),
        suffix_hash: suffix_hash(suffix),
        // Parsing kept both within NAME_MAX.
        prefix_len: prefix.len() as u32,
        suffix_len: suffix.len() as u32,
        exact,
        protect: u32::from(node.protect),
        children: node.children,
    }
}

/// The node ids in a set.
pub fn ids(set: u64) -> impl Iterator<Item = usize> {
    (0..MAX_NAME_NODES).filter(move |id| set & (1u64 << id) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The programs' way of matching (names.rs): the hashes of every prefix and suffix of the
    /// name, and `NameNode::matches` on each candidate.
    fn kernel_match(trie: &NameTrie, candidates: u64, name: &[u8]) -> NameMatch {
        let nodes = trie.kernel_nodes();
        let len = name.len();
        ids(candidates)
            .map(|id| nodes[id])
            .filter(|node| {
                let prefix_len = (node.prefix_len as usize).min(len);
                let suffix_len = (node.suffix_len as usize).min(len);
                node.matches(
                    len as u32,
                    prefix_hash(&name[..prefix_len]),
                    suffix_hash(&name[len - suffix_len..]),
                )
            })
            .fold(NameMatch::default(), |found, node| NameMatch {
                protect: found.protect || node.protect != 0,
                children: found.children | node.children,
            })
    }

    /// Walks `path` down the trie the way the kernel does, one name at a time from `/`.
    fn protected_by_kernel(trie: &NameTrie, path: &str) -> bool {
        let mut candidates = trie.root_children();
        let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for (depth, name) in names.iter().enumerate() {
            let found = kernel_match(trie, candidates, name.as_bytes());
            if found.protect {
                // A protected directory protects everything below it.
                return true;
            }
            if depth + 1 == names.len() {
                return false;
            }
            candidates = found.children;
        }
        false
    }

    const PATTERNS: &[&str] = &[
        "/etc/airflow/airflow.cfg",
        "/etc/airflow/*.key",
        "/srv/keys/*",
        "/home/*/.ssh/id_*",
        "/opt/app/secret-*-prod.json",
        "/var/lib/bulkhead",
        "/data/[*]literal",
    ];

    const PATHS: &[&str] = &[
        "/etc/airflow/airflow.cfg",
        "/etc/airflow/airflow.cfg.bak",
        "/etc/airflow/x.key",
        "/etc/airflow/.key",
        "/etc/airflow/key",
        "/etc/airflow/sub/x.key",
        "/etc/passwd",
        "/srv/keys/a",
        "/srv/keys/a/b",
        "/srv/key",
        "/home/alice/.ssh/id_ed25519",
        "/home/alice/.ssh/id_",
        "/home/alice/.ssh/known_hosts",
        "/home/.ssh/id_rsa",
        "/home/alice/x/.ssh/id_rsa",
        "/opt/app/secret--prod.json",
        "/opt/app/secret-eu-prod.json",
        "/opt/app/secret-prod.json",
        "/opt/app/secret-eu-prod.jsonx",
        "/var/lib/bulkhead",
        "/var/lib/bulkhead/state.db",
        "/var/lib/bulkheads",
        "/data/*literal",
        "/data/xliteral",
    ];

    /// The oracle: the glob crate, as the agent's scan expands the same patterns.
    fn protected_by_glob(path: &str) -> bool {
        PATTERNS.iter().any(|pattern| {
            let pattern = glob::Pattern::new(pattern).unwrap();
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..glob::MatchOptions::new()
            };
            // The path itself or any ancestor: a protected directory covers what is below.
            std::iter::successors(Some(std::path::Path::new(path)), |p| p.parent())
                .any(|p| pattern.matches_path_with(p, options))
        })
    }

    #[test]
    fn the_kernel_match_agrees_with_glob_on_every_path() {
        let trie = NameTrie::build(PATTERNS).unwrap();
        for path in PATHS {
            assert_eq!(
                protected_by_kernel(&trie, path),
                protected_by_glob(path),
                "{path}"
            );
        }
        // The control: the table contains both protected and unprotected paths.
        assert!(PATHS.iter().any(|p| protected_by_glob(p)));
        assert!(PATHS.iter().any(|p| !protected_by_glob(p)));
    }

    #[test]
    fn hashes_and_strings_agree_for_every_node_and_name() {
        let trie = NameTrie::build(PATTERNS).unwrap();
        let all = (1u64 << trie.kernel_nodes().len()) - 1;
        for path in PATHS {
            for name in path.split('/').filter(|c| !c.is_empty()) {
                for id in ids(all) {
                    let bit = 1u64 << id;
                    assert_eq!(
                        kernel_match(&trie, bit, name.as_bytes()),
                        trie.match_name(bit, name.as_bytes()),
                        "node {:?} and {name:?}",
                        trie.node(id).component
                    );
                }
            }
        }
    }

    #[test]
    fn shared_prefixes_share_nodes() {
        let trie = NameTrie::build(&["/etc/airflow/a", "/etc/airflow/b", "/etc/other"]).unwrap();
        // etc, airflow, a, b, other
        assert_eq!(trie.kernel_nodes().len(), 5);
        assert_eq!(ids(trie.root_children()).count(), 1);
    }

    #[test]
    fn unsupported_syntax_is_refused_with_the_reason() {
        for (pattern, why) in [
            ("/etc/a?c", "`?`"),
            ("/etc/[ab]c", "character classes"),
            ("/etc/*x*", "more than one `*`"),
            ("/etc/**/key", "`**`"),
            ("/etc/a]", "unmatched"),
        ] {
            let err = NameTrie::build(&[pattern]).unwrap_err();
            assert!(err.contains(why), "{pattern}: {err}");
            assert!(err.contains(pattern), "{err}");
        }
        let long = format!("/etc/{}", "x".repeat(256));
        assert!(NameTrie::build(&[long]).unwrap_err().contains("255 bytes"));
    }

    #[test]
    fn more_than_64_components_are_refused() {
        let patterns: Vec<String> = (0..64).map(|i| format!("/srv/file{i}")).collect();
        let err = NameTrie::build(&patterns).unwrap_err();
        assert!(err.contains("more than 64"), "{err}");
        assert!(NameTrie::build(&patterns[..63]).is_ok());
    }

    #[test]
    fn escaped_paths_are_literals() {
        let escaped = glob::Pattern::escape("/var/lib/odd*[name]?");
        let trie = NameTrie::build(&[escaped]).unwrap();
        let last = trie.kernel_nodes().len() - 1;
        assert_eq!(
            trie.node(last).component,
            Component::Literal(b"odd*[name]?".to_vec())
        );
    }
}
