//! `kubectl` as a judge of the test bed API server: rules are applied and deleted with the
//! real client, from YAML text as a user would write it.

use std::path::Path;
use std::process::Command;

/// `kubectl apply -f` of `yaml` (one or more documents) against `kubeconfig`.
pub fn apply(kubeconfig: &Path, yaml: &str) -> Result<(), String> {
    run(kubeconfig, &["apply", "--validate=false"], yaml)
}

/// `kubectl delete -f` of the objects `yaml` names.
pub fn delete(kubeconfig: &Path, yaml: &str) -> Result<(), String> {
    run(kubeconfig, &["delete", "--ignore-not-found"], yaml)
}

fn run(kubeconfig: &Path, args: &[&str], yaml: &str) -> Result<(), String> {
    let file = tempfile_with(yaml)?;
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .arg("-f")
        .arg(file.path())
        .output()
        .map_err(|e| format!("kubectl (installed by scripts/test.sh): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl {}: {}\n{yaml}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A file holding `text`, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_with(text: &str) -> Result<TempFile, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("meshfed-kubectl-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(TempFile(path))
}
