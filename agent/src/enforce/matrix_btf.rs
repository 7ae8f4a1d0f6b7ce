//! Test support: the BTF of each kernel of the matrix, as `cargo xtask setup` caches it
//! (`<cache>/kernel/<package>/vmlinux.btf`, with the suite's name in `suite`).

use std::path::{Path, PathBuf};

/// (package, BTF path) of the newest cached kernel of `suite`. Without one the caller's check
/// is skipped with a note, unless `BULKHEAD_REQUIRE_MATRIX_BTF` is set (`cargo xtask test`
/// sets it after fetching the matrix), where a missing kernel fails the test.
pub fn matrix_btf(suite: &str) -> Option<(String, PathBuf)> {
    let cache = std::env::var_os("BULKHEAD_CACHE_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").map_or_else(|| "/root".into(), PathBuf::from);
            home.join(".cache/bulkhead")
        },
        PathBuf::from,
    );
    let found = newest(&cache.join("kernel"), suite);
    if found.is_none() {
        assert!(
            std::env::var_os("BULKHEAD_REQUIRE_MATRIX_BTF").is_none(),
            "no cached {suite} kernel under {}",
            cache.display()
        );
        eprintln!("skipped {suite}: no cached kernel (run `cargo xtask setup`)");
    }
    found
}

fn newest(store: &Path, suite: &str) -> Option<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(store)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("suite")).is_ok_and(|s| s.trim() == suite)
                && dir.join("vmlinux.btf").is_file()
        })
        .filter_map(|dir| {
            let package = std::fs::read_to_string(dir.join("package")).ok()?;
            Some((package.trim().to_owned(), dir.join("vmlinux.btf")))
        })
        .collect();
    found.sort();
    found.pop()
}
