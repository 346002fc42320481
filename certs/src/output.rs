//! Writing generated files: all or nothing, keys private, nothing overwritten by surprise.

use crate::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One file of generated material.
#[derive(Debug, Clone)]
pub struct OutputFile {
    pub name: &'static str,
    pub contents: String,
    /// Private keys: written with mode 0600.
    pub secret: bool,
}

impl OutputFile {
    pub fn public(name: &'static str, contents: String) -> Self {
        OutputFile {
            name,
            contents,
            secret: false,
        }
    }

    pub fn secret(name: &'static str, contents: String) -> Self {
        OutputFile {
            name,
            contents,
            secret: true,
        }
    }
}

/// Writes `files` into `dir` (created if missing) and returns their paths.
///
/// Unless `force`, any existing target refuses the whole run before anything is written.
/// Each file goes to a temporary name first and is renamed into place, so a reader never
/// sees half a key and a replaced key never inherits looser permissions.
pub fn write_outputs(dir: &Path, files: &[OutputFile], force: bool) -> Result<Vec<PathBuf>> {
    let targets: Vec<PathBuf> = files.iter().map(|f| dir.join(f.name)).collect();
    if !force {
        let existing: Vec<PathBuf> = targets.iter().filter(|p| p.exists()).cloned().collect();
        if !existing.is_empty() {
            return Err(Error::WouldOverwrite(existing));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (file, target) in files.iter().zip(&targets) {
        write_one(file, target)?;
    }
    Ok(targets)
}

fn write_one(file: &OutputFile, target: &Path) -> Result<()> {
    let tmp = target.with_file_name(format!(".{}.tmp-{}", file.name, std::process::id()));
    let mode = if file.secret { 0o600 } else { 0o644 };
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(file.contents.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, target));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(target, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files() -> Vec<OutputFile> {
        vec![
            OutputFile::public("cert.pem", "CERT".into()),
            OutputFile::secret("key.pem", "KEY".into()),
        ]
    }

    #[test]
    fn keys_are_private_and_certs_readable() {
        let dir = tempfile::tempdir().unwrap();
        write_outputs(dir.path(), &files(), false).unwrap();
        let mode = |n| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("key.pem"), 0o600);
        assert_eq!(mode("cert.pem"), 0o644);
    }

    #[test]
    fn refusal_touches_nothing_and_force_replaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), "OLD").unwrap();
        let err = write_outputs(dir.path(), &files(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(!dir.path().join("cert.pem").exists(), "partial write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
            "OLD"
        );

        write_outputs(dir.path(), &files(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
            "KEY"
        );
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(leftovers.len(), 2, "temporary files left behind");
    }
}
