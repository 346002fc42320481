//! `--output-dir`: the served credentials also as files (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), as Istio's agent writes them with `OUTPUT_CERTS`, for proxyless gRPC's
//! file_watcher certificate provider. Each file is replaced by a rename over the old one, so a
//! reader sees the old file or the new, never a missing or half-written one. The root goes
//! first and the chain last: a reader that sees a new chain finds its key and root in place.

use crate::material::Files;
use meshfed_certs::files::{CERT_CHAIN, KEY, ROOT_CERT};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// Writes `files` into `dir` (created if missing); the key owner-only.
pub fn write(dir: &Path, files: &Files) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|error| Error {
        path: dir.to_path_buf(),
        error,
    })?;
    for (name, bytes, mode) in [
        (ROOT_CERT, &files.root, 0o644),
        (KEY, &files.key, 0o600),
        (CERT_CHAIN, &files.cert_chain, 0o644),
    ] {
        replace(&dir.join(name), bytes, mode)?;
    }
    Ok(())
}

/// Writes `bytes` to a new temporary file beside `target` (created with `mode`, so a key
/// is never readable by others even for a moment), syncs it and renames it over `target`.
fn replace(target: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error { path, error }
    };
    // A temporary left by a crashed run is ours to replace; O_EXCL after removing it means a
    // symlink planted there is never written through.
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err(&tmp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, target)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(target)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files(tag: &str) -> Files {
        Files {
            cert_chain: format!("chain {tag}").into_bytes(),
            key: format!("key {tag}").into_bytes(),
            root: format!("root {tag}").into_bytes(),
        }
    }

    /// What Istio's agent leaves in OUTPUT_CERTS: the three files, the key owner-only, each
    /// replaced in place on rotation (a file's inode changes: it was renamed over).
    #[test]
    fn files_are_written_and_replaced_whole_with_a_private_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        write(&out, &files("1")).expect("write");
        let read = |n: &str| std::fs::read_to_string(out.join(n)).expect("read");
        assert_eq!(read(CERT_CHAIN), "chain 1");
        assert_eq!(read(KEY), "key 1");
        assert_eq!(read(ROOT_CERT), "root 1");
        let mode = |n: &str| {
            std::fs::metadata(out.join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEY), 0o600);
        assert_eq!(mode(CERT_CHAIN), 0o644);
        let inode = |n: &str| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(out.join(n)).expect("meta"))
        };
        let before = inode(KEY);
        write(&out, &files("2")).expect("rewrite");
        assert_eq!(read(KEY), "key 2");
        assert_ne!(inode(KEY), before, "renamed over, not rewritten in place");
        let names: Vec<_> = std::fs::read_dir(&out)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporaries left: {names:?}");
    }
}
