//! Reading a key file the way ssh reads a private key: only if it is a regular file owned by
//! root (or by the agent's own uid, for tests and unprivileged trials) that no group or other
//! user can read or write. Anything else stops the agent with the file, what is wrong and the
//! command that fixes it.

use std::{
    fs::File,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use zeroize::Zeroizing;

/// Key files larger than this are not keys (an RSA-8192 PEM is under 7 KiB).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not a regular file")]
    NotRegular { path: String },
    #[error(
        "key file {path} is owned by uid {owner}; it must be owned by root (chown root:root {path})"
    )]
    Owner { path: String, owner: u32 },
    #[error(
        "key file {path} has mode {mode:04o}; it must not be accessible by group or others \
         (chmod 600 {path})"
    )]
    Mode { path: String, mode: u32 },
    #[error("key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes; not a key")]
    TooLarge { path: String },
}

/// The file's contents, zeroized when dropped. Symlinks are not followed: a link could be
/// swapped between the check and the read.
pub fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let shown = path.display().to_string();
    let open = |source| KeyFileError::Open {
        path: shown.clone(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(open)?;
    // Checked on the open file, so what is checked is what is read.
    let meta = file.metadata().map_err(open)?;
    if !meta.file_type().is_file() {
        return Err(KeyFileError::NotRegular { path: shown });
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(KeyFileError::Owner {
            path: shown,
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyFileError::Mode {
            path: shown,
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge { path: shown });
    }
    // Sized up front so the buffer never reallocates and leaves an unzeroized copy behind.
    let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(open)?;
    if contents.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyFileError::TooLarge { path: shown });
    }
    Ok(contents)
}

/// A public file the agent trusts (the workload issuer's JWKS): read only if it is a regular
/// file owned by root (or the agent's uid) that no group or other user can write, since whoever
/// can write it can forge workload tokens.
pub fn read_trusted(path: &Path, max_bytes: u64) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let shown = path.display();
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {shown}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {shown}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        anyhow::bail!("{shown} is not a regular file");
    }
    if meta.uid() != 0 && meta.uid() != me {
        anyhow::bail!(
            "{shown} is owned by uid {}; it must be owned by root (chown root:root {shown})",
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{shown} has mode {:04o}; it must not be writable by group or others (chmod 644 {shown})",
            meta.mode() & 0o7777
        );
    }
    let mut contents = Vec::new();
    (&mut file)
        .take(max_bytes + 1)
        .read_to_end(&mut contents)
        .with_context(|| format!("reading {shown}"))?;
    if contents.len() as u64 > max_bytes {
        anyhow::bail!("{shown} is larger than {max_bytes} bytes");
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "secret material").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_private_file_is_read() {
        let (_dir, path) = key_file(0o600);
        assert_eq!(read_private(&path).unwrap().as_slice(), b"secret material");
        let (_dir, path) = key_file(0o400);
        assert!(read_private(&path).is_ok());
    }

    #[test]
    fn group_or_other_access_is_refused_with_the_fix() {
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            let (_dir, path) = key_file(mode);
            let err = read_private(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("mode {mode:04o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn symlinks_and_directories_are_refused() {
        let (dir, path) = key_file(0o600);
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            read_private(&link),
            Err(KeyFileError::Open { .. })
        ));
        assert!(matches!(
            read_private(dir.path()),
            Err(KeyFileError::Open { .. } | KeyFileError::NotRegular { .. })
        ));
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let (_dir, path) = key_file(0o600);
        std::fs::write(&path, vec![b'a'; 70 * 1024]).unwrap();
        assert!(matches!(
            read_private(&path),
            Err(KeyFileError::TooLarge { .. })
        ));
    }
}
