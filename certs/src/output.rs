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
/// With `force` the set is replaced all or nothing: every file is first written in full to
/// a unique temporary name (so a reader never sees half a key, and a replaced key never
/// inherits looser permissions), the old files are set aside, and the new ones renamed in;
/// any failure puts the old set back.
pub fn write_outputs(dir: &Path, files: &[OutputFile], force: bool) -> Result<Vec<PathBuf>> {
    let targets: Vec<PathBuf> = files.iter().map(|f| dir.join(f.name)).collect();
    if !force {
        let existing: Vec<PathBuf> = targets.iter().filter(|p| p.exists()).cloned().collect();
        if !existing.is_empty() {
            return Err(Error::WouldOverwrite(existing));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut temps = Vec::new();
    for (file, target) in files.iter().zip(&targets) {
        match write_temp(file, target) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                remove_all(&temps);
                return Err(e);
            }
        }
    }
    swap_in(&temps, &targets, |from, to| std::fs::rename(from, to))?;
    Ok(targets)
}

/// Renames each temporary file over its target, the old ones set aside first and restored
/// if any step fails.
fn swap_in(
    temps: &[PathBuf],
    targets: &[PathBuf],
    mut rename: impl FnMut(&Path, &Path) -> std::io::Result<()>,
) -> Result<()> {
    let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut placed: Vec<&PathBuf> = Vec::new();
    let mut step = || -> std::result::Result<(), (PathBuf, std::io::Error)> {
        for target in targets.iter().filter(|t| t.exists()) {
            let backup = unique(target, "old");
            rename(target, &backup).map_err(|e| (target.clone(), e))?;
            aside.push((backup, target.clone()));
        }
        for (tmp, target) in temps.iter().zip(targets) {
            rename(tmp, target).map_err(|e| (target.clone(), e))?;
            placed.push(target);
        }
        Ok(())
    };
    let outcome = step();
    match outcome {
        Ok(()) => {
            remove_all(&aside.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>());
            Ok(())
        }
        Err((path, e)) => {
            for target in placed {
                let _ = std::fs::remove_file(target);
            }
            for (backup, target) in &aside {
                let _ = std::fs::rename(backup, target);
            }
            remove_all(temps);
            Err(Error::io(&path, e))
        }
    }
}

/// A name beside `target` that nothing else uses: pid, time and a counter.
fn unique(target: &Path, what: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{what}-{}-{nanos}-{n}", std::process::id()))
}

fn write_temp(file: &OutputFile, target: &Path) -> Result<PathBuf> {
    let tmp = unique(target, "tmp");
    let mode = if file.secret { 0o600 } else { 0o644 };
    // create_new: never follow or reuse whatever a name already points at.
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(file.contents.as_bytes())?;
            f.sync_all()
        });
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io(target, e))
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
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

    /// A replacement whose renames fail half way (here the fourth rename: both old files are
    /// set aside, the first new one is in) puts the old set back: all or nothing.
    #[test]
    fn force_replaces_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "OLD CERT").unwrap();
        std::fs::write(dir.path().join("key.pem"), "OLD KEY").unwrap();
        let files = files();
        let targets: Vec<PathBuf> = files.iter().map(|f| dir.path().join(f.name)).collect();
        let temps: Vec<PathBuf> = files
            .iter()
            .zip(&targets)
            .map(|(f, t)| write_temp(f, t).unwrap())
            .collect();
        let mut calls = 0;
        let failing = |from: &Path, to: &Path| {
            calls += 1;
            if calls == 4 {
                return Err(std::io::Error::other("disk gone"));
            }
            std::fs::rename(from, to)
        };
        assert!(swap_in(&temps, &targets, failing).is_err());
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(
            (read("cert.pem"), read("key.pem")),
            ("OLD CERT".into(), "OLD KEY".into())
        );
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "temporary or set-aside files left behind");
    }
}
