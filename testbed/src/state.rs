//! The test bed's state directory holds keys, bearer tokens and kubeconfigs: it is private to
//! its owner (0700), and every file in it is created anew (`O_EXCL`) without following a
//! symlink (`O_NOFOLLOW`), so a link planted in a shared `$TMPDIR` cannot redirect a write.

use anyhow::{Context, bail};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) owner-only, and refuses one that is a symlink or
/// belongs to someone else.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symlink?): refusing to keep state there",
            dir.display()
        );
    }
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to us: refusing to keep state there",
            dir.display(),
            meta.uid()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// A new, empty file at `path` with `mode`: whatever was there (a file of an earlier run, or
/// a symlink) is removed first, and the open neither reuses nor follows a name.
pub fn fresh_file(path: &Path, mode: u32) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
}

/// Puts `bytes` at `path` (mode `mode`) in one step, as kubelet swaps a projected token: a
/// fresh file beside it, then a rename, so a reader sees the old content or the new, never a
/// half-written or missing file.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fresh_file(&tmp, mode).with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_state_dir_is_private_and_a_planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let log = state.join("federation.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        fresh_file(&log, 0o600)
            .unwrap()
            .write_all(b"log line")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "log line");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(private_dir(&link).is_err(), "a state dir behind a symlink");
    }

    /// kubelet swaps a projected token atomically: a reader sees the old token or the new
    /// one. The temporary file is made as every state file is, so a link planted at its name
    /// is replaced, not written through.
    #[test]
    fn a_token_file_is_replaced_whole_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let token = tmp.path().join("istio-token");
        std::os::unix::fs::symlink(&victim, tmp.path().join(".istio-token.tmp")).unwrap();
        replace_file(&token, b"one", 0o600).unwrap();
        replace_file(&token, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "two");
        let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only the victim and the token: {left:?}");
    }
}
