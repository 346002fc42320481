//! What the CLI tests share: running meshfed, the test bed's API server and kubectl as
//! processes, and reading an admin port.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts meshfed with `args` and waits for its first line (printed once it serves).
pub fn start(args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(MESHFED)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), line)
}

/// `meshfed testbed apiserver` for cluster `name`, its kubeconfig written to `dir/name`.
pub fn apiserver(dir: &Path, name: &str) -> Killed {
    let kc = dir.join(name);
    start(&[
        "testbed",
        "apiserver",
        "--listen",
        "127.0.0.1:0",
        "--cluster-name",
        name,
        "--kubeconfig-out",
        kc.to_str().unwrap(),
    ])
    .0
}

/// Runs kubectl against `kubeconfig` with `stdin`; panics with its stderr on failure.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is required");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `meshfed ARGS`, which must succeed: its stdout.
pub fn meshfed_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(MESHFED).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `meshfed create-remote-secret` for the cluster of `kubeconfig`, named `name`: the YAML.
pub fn create_remote_secret(kubeconfig: &Path, name: &str) -> String {
    let kubeconfig = kubeconfig.display().to_string();
    meshfed_ok(&[
        "create-remote-secret",
        "--name",
        name,
        "--kubeconfig",
        &kubeconfig,
    ])
}

/// GET `path` on an admin port: the status code and the body.
pub fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let addr = admin.parse().expect("an admin address");
    let a = meshfed_model::admin::AdminClient::new(addr)
        .get_blocking(path)
        .expect("admin answer");
    (a.status, a.body)
}

/// A free loopback port (for tools that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}
