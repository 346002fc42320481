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
}
