//! Root inside a domain against the kernel (issue: complete enforcement, section 3). The
//! suite and its helpers run as root, so every denial here is bulkhead's, not Unix
//! permissions'.

use crate::{
    access::Outcome,
    harness::Suite,
    kernel_access::OPS,
    scenarios::{expect, run_helper},
};

pub fn add(suite: &mut Suite<'_>) {
    for op in OPS {
        suite.add(format!("deny:kernel-{op}:root-in-domain"), move || {
            expect(
                run_helper(true, "root", &["kernel", op], &[]),
                Outcome::Denied,
            )
        });
        suite.add(format!("control-outside:kernel-{op}"), move || {
            expect(
                run_helper(false, "", &["kernel", op], &[]),
                Outcome::Allowed,
            )
        });
    }
}
