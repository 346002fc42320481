//! Clients we did not write, as judges: gRPC's proxyless xDS clients (grpcio from PyPI,
//! @grpc/grpc-js-xds from npm), gRPC backends and an Istio CA client (grpcio-tools stubs,
//! `cryptography` CSRs), driven over stdin/stdout one JSON line per command. `scripts/test.sh`
//! installs them; a missing one is an error, never a skip.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn script(name: &str) -> PathBuf {
    root().join("e2e/judges").join(name)
}

/// The venv's python with grpcio ($MESHFED_JUDGE_PYTHON overrides).
pub fn python() -> Result<PathBuf, String> {
    let p = std::env::var_os("MESHFED_JUDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/judges/venv/bin/python"));
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run scripts/test.sh (it installs grpcio)",
            p.display()
        ))
    }
}

/// `node` with @grpc/grpc-js-xds installed under e2e/judges.
pub fn node() -> Result<Command, String> {
    let modules = script("node_modules/@grpc/grpc-js-xds");
    if !modules.exists() {
        return Err(format!(
            "{} is missing: run scripts/test.sh (npm ci in e2e/judges)",
            modules.display()
        ));
    }
    let mut c = Command::new("node");
    c.current_dir(script(""));
    Ok(c)
}

/// A running judge process.
pub struct Judge {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl Judge {
    pub fn spawn(mut cmd: Command, what: &str) -> Result<Judge, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Judge {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            what: what.to_string(),
        })
    }

    /// The next line the judge prints, within `timeout`.
    pub async fn line(&mut self, timeout: Duration) -> Result<String, String> {
        match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => Err(format!("{} exited: {:?}", self.what, self.child.try_wait())),
            Ok(Err(e)) => Err(format!("{}: {e}", self.what)),
            Err(_) => Err(format!("{}: no answer within {timeout:?}", self.what)),
        }
    }

    pub async fn json(&mut self, timeout: Duration) -> Result<Value, String> {
        let l = self.line(timeout).await?;
        serde_json::from_str(&l).map_err(|e| format!("{}: {e}: {l}", self.what))
    }

    /// Sends one command and reads its JSON answer.
    pub async fn ask(&mut self, command: &str, timeout: Duration) -> Result<Value, String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", self.what))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("{}: {e}", self.what))?;
        self.json(timeout).await
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A gRPC backend answering with `name` on `ip` (a free port); returns it and its port.
pub async fn backend(ip: &str, name: &str) -> Result<(Judge, u16), String> {
    backend_with(ip, name, &[]).await
}

/// [`backend`] holding each call `hold` seconds before it answers, so that calls overlap.
pub async fn held_backend(ip: &str, name: &str, hold: f64) -> Result<(Judge, u16), String> {
    backend_with(ip, name, &[hold.to_string()]).await
}

/// `grpc_backend.py IP:0 NAME ARGS..`, ready once it has said its port.
async fn backend_with(ip: &str, name: &str, args: &[String]) -> Result<(Judge, u16), String> {
    let mut cmd = Command::new(python()?);
    cmd.arg(script("grpc_backend.py"))
        .arg(format!("{ip}:0"))
        .arg(name)
        .args(args);
    let mut j = Judge::spawn(cmd, &format!("backend {name}"))?;
    let line = j.line(Duration::from_secs(20)).await?;
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("backend {name}: {line}"))?;
    Ok((j, port))
}

/// Istio's CA client as `ca_client.py` plays it (grpcio stubs from proto/ca.proto, CSRs from
/// `cryptography`), calling the CA at `addr` over TLS checked against `root_pem` (a file) under
/// the name `istiod.istio-system.svc`; ready once it has printed its first line.
pub async fn ca_client(
    addr: std::net::SocketAddr,
    root_pem: &std::path::Path,
) -> Result<Judge, String> {
    let mut cmd = Command::new(python()?);
    cmd.arg(script("ca_client.py"))
        .arg(addr.to_string())
        .arg(root_pem);
    let mut j = Judge::spawn(cmd, "ca_client.py")?;
    let ready = j.json(Duration::from_secs(30)).await?;
    if ready["ready"] != true {
        return Err(format!("ca_client.py: {ready}"));
    }
    Ok(j)
}

/// How a gRPC client reaches its xDS server: the bootstrap's `channel_creds`.
pub enum ChannelCreds<'a> {
    /// Plaintext (`insecure`), as to the federation's opt-in `--xds-listen` port.
    Insecure,
    /// gRFC A65's `tls`: the server checked against `ca_certificate_file`; with a workload's
    /// `cert-chain.pem` and `key.pem` (what the agent's --output-dir writes) it is mTLS.
    Tls {
        ca: &'a Path,
        cert_and_key: Option<(&'a Path, &'a Path)>,
    },
}

impl ChannelCreds<'_> {
    fn json(&self) -> Value {
        let path = |p: &Path| Value::from(p.display().to_string());
        match self {
            ChannelCreds::Insecure => serde_json::json!({"type": "insecure"}),
            ChannelCreds::Tls { ca, cert_and_key } => {
                let mut config = serde_json::Map::new();
                config.insert("ca_certificate_file".into(), path(ca));
                if let Some((cert, key)) = cert_and_key {
                    config.insert("certificate_file".into(), path(cert));
                    config.insert("private_key_file".into(), path(key));
                }
                serde_json::json!({"type": "tls", "config": config})
            }
        }
    }
}

/// An xDS bootstrap as Istio writes it for proxyless gRPC.
pub fn bootstrap(
    xds: &str,
    creds: &ChannelCreds,
    node_id: &str,
    region: &str,
    zone: &str,
    meta: &[(&str, &str)],
) -> Value {
    let metadata: serde_json::Map<String, Value> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    serde_json::json!({
        "xds_servers": [{"server_uri": xds, "channel_creds": [creds.json()], "server_features": ["xds_v3"]}],
        "node": {"id": node_id, "locality": {"region": region, "zone": zone}, "metadata": metadata},
    })
}

/// `openssl s_server` on `ip` (a free port) presenting a workload certificate for
/// `spiffe://cluster.local/ns/sample/sa/{sa}` issued by `ca`; killed on drop.
pub struct TlsServer {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn openssl_server(
    dir: &std::path::Path,
    ca: &meshfed_certs::CertificateAuthority,
    sa: &str,
    ip: &str,
) -> Result<TlsServer, String> {
    use std::io::BufRead;
    let id =
        meshfed_certs::SpiffeId::new("cluster.local", "sample", sa).map_err(|e| e.to_string())?;
    let cert = ca
        .issue_workload(&meshfed_certs::WorkloadOptions::new(id))
        .map_err(|e| e.to_string())?;
    let d = dir.join(sa);
    meshfed_certs::write_outputs(&d, &cert.files(), false).map_err(|e| e.to_string())?;
    let write =
        |name: &str, pem: &str| std::fs::write(d.join(name), pem).map_err(|e| e.to_string());
    write("leaf.pem", &cert.chain[0])?;
    write("int.pem", &cert.chain[1])?;
    let mut child = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-accept", &format!("{ip}:0")])
        .arg("-cert")
        .arg(d.join("leaf.pem"))
        .arg("-cert_chain")
        .arg(d.join("int.pem"))
        .arg("-key")
        .arg(d.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("openssl (installed by scripts/test.sh): {e}"))?;
    let mut lines = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or("s_server exited")?
            .map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("ACCEPT ") {
            break a.parse().map_err(|e| format!("{line}: {e}"))?;
        }
    };
    // Keep draining s_server's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(TlsServer { child, addr })
}

/// `openssl s_client` to `addr` with `sni`, verifying against `root`: the peer's SANs when
/// the handshake succeeded, else the error output.
pub fn openssl_peer(
    addr: std::net::SocketAddr,
    sni: &str,
    root: &std::path::Path,
) -> Result<String, String> {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
            "-verify_return_error",
            "-showcerts",
        ])
        .arg("-CAfile")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !text.contains("Verify return code: 0 (ok)") {
        return Err(text);
    }
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or("no certificate shown")?;
    let pem = &text[begin..];
    let end = pem
        .find("-----END CERTIFICATE-----")
        .ok_or("truncated certificate")?
        + 25;
    let parsed = x509_sans(&pem[..end])?;
    Ok(parsed)
}

fn x509_sans(pem: &str) -> Result<String, String> {
    use std::io::Write;
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    x509.stdin
        .take()
        .ok_or("no stdin")?
        .write_all(pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = x509.wait_with_output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
