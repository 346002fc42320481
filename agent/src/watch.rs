//! Follows the mounted files. Kubernetes updates a Secret volume by swapping a symlink, and
//! cert-manager or a CSI driver may rewrite files in place: polling the bytes sees both, where
//! inotify on the files would miss the swap.

use crate::material::{Files, Material};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::status::Status;

pub struct Watcher {
    dir: PathBuf,
    interval: Duration,
    /// The bytes last looked at, good or bad, so a bad state is reported once, not every poll.
    seen: Files,
    /// Bytes that failed the checks once: a writer may be between files, so they count as a
    /// failure only if the next poll finds them unchanged.
    suspect: Option<Files>,
    material: watch::Sender<Arc<Material>>,
    status: watch::Sender<Status>,
}

impl Watcher {
    pub fn new(dir: PathBuf, interval: Duration, first: Material) -> Watcher {
        Watcher {
            dir,
            interval,
            seen: first.files.clone(),
            suspect: None,
            material: watch::Sender::new(Arc::new(first)),
            status: watch::Sender::new(Status::default()),
        }
    }

    pub fn material(&self) -> watch::Receiver<Arc<Material>> {
        self.material.subscribe()
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Polls until every receiver of the material is gone.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.poll(),
                () = self.material.closed() => return,
            }
        }
    }

    fn poll(&mut self) {
        // A file missing for a moment (a swap in progress) is retried at the next tick.
        let Ok(files) = Files::read(&self.dir) else {
            return;
        };
        if files == self.seen {
            return;
        }
        let generation = self.material.borrow().generation + 1;
        match Material::check(&self.dir, files.clone(), generation) {
            Ok(material) => {
                tracing::info!(identity = %material.identity, not_after = %material.not_after,
                    generation, "serving new workload credentials");
                self.seen = material.files.clone();
                self.suspect = None;
                crate::metrics::global().served(&material, true);
                self.material.send_replace(Arc::new(material));
                self.status.send_modify(|s| s.reloads += 1);
            }
            Err(crate::material::Error::Changing { .. }) => {}
            Err(_) if self.suspect.as_ref() != Some(&files) => self.suspect = Some(files),
            Err(e) => {
                tracing::error!(error = %e, "refusing the new credentials; the last good ones stay served");
                self.seen = files;
                self.suspect = None;
                self.status.send_modify(|s| {
                    s.failures += 1;
                    s.last_error = Some(e.to_string());
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
