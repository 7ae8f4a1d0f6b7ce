//! Keeping secrets out of core dumps, swap and other processes' reach.
//!
//! The process is made non-dumpable (no core file, and /proc/<pid>/mem, environ and ptrace
//! need CAP_SYS_PTRACE even for the same uid) and its core size limit set to zero. The pages
//! holding each key are locked in memory (never swapped) and marked MADV_DONTDUMP. Key bytes
//! are zeroized when dropped (the `zeroize` crate; jsonwebtoken's keys do the same).

use std::io;

use anyhow::Context;

/// Called once at start, before any key is read.
pub fn harden_process() -> anyhow::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_DUMPABLE, 0)");
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_CORE, 0)");
    }
    Ok(())
}

/// Whether the process is non-dumpable now.
pub fn is_dumpable() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// Locks the pages under `bytes` in memory and excludes them from core dumps. The buffer must
/// not move or be freed while locked: callers lock buffers that live as long as the key.
pub fn lock(bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (start, len) = page_span(bytes);
    // SAFETY: the range covers mapped pages of this process (those holding `bytes`); neither
    // call changes their contents.
    unsafe {
        if libc::mlock(start as *const libc::c_void, len) != 0 {
            return Err(io::Error::last_os_error())
                .context("mlock of a key buffer (is RLIMIT_MEMLOCK too small?)");
        }
        if libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTDUMP) != 0 {
            return Err(io::Error::last_os_error())
                .context("madvise(MADV_DONTDUMP) of a key buffer");
        }
    }
    Ok(())
}

/// The page-aligned span covering `bytes`.
fn page_span(bytes: &[u8]) -> (usize, usize) {
    // SAFETY: sysconf with a constant name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let start = bytes.as_ptr() as usize & !(page - 1);
    let end = (bytes.as_ptr() as usize + bytes.len()).div_ceil(page) * page;
    (start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_whole_pages() {
        let buffer = vec![7u8; 10_000];
        let (start, len) = page_span(&buffer[100..5000]);
        assert_eq!(start % 4096, 0);
        assert_eq!(len % 4096, 0);
        assert!(start <= buffer.as_ptr() as usize + 100);
        assert!(start + len >= buffer.as_ptr() as usize + 5000);
    }

    #[test]
    fn a_buffer_can_be_locked() {
        let buffer = vec![1u8; 64];
        lock(&buffer).unwrap();
    }
}
