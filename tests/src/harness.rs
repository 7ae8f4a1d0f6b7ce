//! Test registry and the console protocol xtask reads (see xtask/src/vm.rs).

use std::io::Write;

type TestFn<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

/// What a test returns (as its error) when it cannot apply on this kernel; it is reported as
/// skipped with the reason, neither passed nor failed.
const SKIP_PREFIX: &str = "\u{0}skip: ";

pub fn skip(reason: &str) -> Result<(), String> {
    Err(format!("{SKIP_PREFIX}{reason}"))
}

pub struct Suite<'a> {
    tests: Vec<(String, TestFn<'a>)>,
}

impl<'a> Suite<'a> {
    pub fn new() -> Self {
        Self { tests: Vec::new() }
    }

    pub fn add(&mut self, name: impl Into<String>, test: impl FnOnce() -> Result<(), String> + 'a) {
        self.tests.push((name.into(), Box::new(test)));
    }

    /// Runs the tests whose name contains `filter`; returns the number that failed.
    pub fn run(self, filter: Option<&str>) -> usize {
        let selected: Vec<_> = self
            .tests
            .into_iter()
            .filter(|(name, _)| filter.is_none_or(|f| name.contains(f)))
            .collect();
        emit(&format!("BULKHEAD-SUITE planned={}", selected.len()));
        let mut failed = 0;
        for (name, test) in selected {
            match test() {
                Ok(()) => emit(&format!("BULKHEAD-TEST ok {name}")),
                Err(detail) if detail.starts_with(SKIP_PREFIX) => emit(&format!(
                    "BULKHEAD-TEST skip {name} :: {}",
                    &detail[SKIP_PREFIX.len()..]
                )),
                Err(detail) => {
                    failed += 1;
                    emit(&format!(
                        "BULKHEAD-TEST FAIL {name} :: {}",
                        detail.replace('\n', " | ")
                    ));
                }
            }
        }
        failed
    }
}

/// One write per line, so kernel console output cannot split a marker.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}
