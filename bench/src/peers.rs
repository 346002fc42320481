//! The proxies under test, each started pinned to one core with an equivalent SNI route,
//! and what `/proc` says about them.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proxy {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// utime + stime of process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks: f64 = fields
        .iter()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts `program args` on core `core` and waits until `addr` accepts connections.
fn spawn(
    name: &'static str,
    core: usize,
    addr: SocketAddr,
    program: &str,
    args: &[String],
    dir: &Path,
) -> Result<Proxy, String> {
    let log_path = dir.join(format!("{name}.stderr"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{name}: cannot start {program}: {e}"))?;
    let mut proxy = Proxy { name, addr, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline || proxy.child.try_wait().ok().flatten().is_some() {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "{name} did not start listening on {addr}: {}",
                said.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proxy)
}

pub fn meshfed(
    bin: &Path,
    dir: &Path,
    core: usize,
    sni_host: &str,
    port: u16,
    backend: SocketAddr,
    copy: &str,
) -> Result<Proxy, String> {
    let addr = free_port().map_err(|e| e.to_string())?;
    let status = free_port().map_err(|e| e.to_string())?;
    let admin = free_port().map_err(|e| e.to_string())?;
    let file = dir.join(format!("meshfed-{copy}.yaml"));
    let routes = format!(
        "services:\n- host: {sni_host}\n  port: {port}\n  endpoints: [{{address: \"{backend}\"}}]\n"
    );
    std::fs::write(&file, routes).map_err(|e| e.to_string())?;
    let args = [
        "gateway".to_string(),
        "--listen".into(),
        addr.to_string(),
        "--status".into(),
        status.to_string(),
        "--admin".into(),
        admin.to_string(),
        "--copy".into(),
        copy.into(),
        "--endpoints".into(),
        file.display().to_string(),
    ];
    let name = if copy == "splice" {
        "meshfed"
    } else {
        "meshfed-buffered"
    };
    spawn(name, core, addr, &bin.display().to_string(), &args, dir)
}

pub fn haproxy(
    dir: &Path,
    core: usize,
    sni: &str,
    backend: SocketAddr,
    fds: u64,
) -> Result<Proxy, String> {
    let addr = free_port().map_err(|e| e.to_string())?;
    let maxconn = fds.saturating_sub(200) / 2;
    let conf = format!(
        "global\n  nbthread 1\n  maxconn {maxconn}\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend fe\n  bind {addr}\n  tcp-request inspect-delay 5s\n  tcp-request content accept if {{ req.ssl_hello_type 1 }}\n\
         \x20 use_backend be if {{ req.ssl_sni -i {sni} }}\nbackend be\n  server s1 {backend}\n"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    spawn(
        "haproxy",
        core,
        addr,
        "haproxy",
        &["-db".into(), "-f".into(), file.display().to_string()],
        dir,
    )
}

pub fn nginx(
    dir: &Path,
    core: usize,
    sni: &str,
    backend: SocketAddr,
    fds: u64,
) -> Result<Proxy, String> {
    let addr = free_port().map_err(|e| e.to_string())?;
    let conns = fds.saturating_sub(200);
    let module = [
        "/usr/lib/nginx/modules/ngx_stream_module.so",
        "/usr/share/nginx/modules/ngx_stream_module.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or("nginx's stream module is missing (package libnginx-mod-stream)")?;
    let conf = format!(
        "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile {fds};\n\
         error_log {dir}/nginx-error.log error;\npid {dir}/nginx.pid;\nevents {{ worker_connections {conns}; }}\n\
         stream {{\n  map_hash_bucket_size 128;\n  map $ssl_preread_server_name $up {{ {sni} {backend}; default 127.0.0.1:9; }}\n\
         \x20 server {{ listen {addr}; ssl_preread on; proxy_pass $up; proxy_connect_timeout 5s; proxy_timeout 1h; }}\n}}\n",
        dir = dir.display()
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    spawn(
        "nginx",
        core,
        addr,
        "nginx",
        &[
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            file.display().to_string(),
        ],
        dir,
    )
}

pub fn sniproxy(dir: &Path, core: usize, sni: &str, backend: SocketAddr) -> Result<Proxy, String> {
    let addr = free_port().map_err(|e| e.to_string())?;
    let pattern = format!("^{}$", sni.replace('.', "\\."));
    let conf = format!(
        "user daemon\npidfile {dir}/sniproxy.pid\nerror_log {{\n  filename {dir}/sniproxy-error.log\n  priority error\n}}\n\
         listener {addr} {{\n  protocol tls\n  table bench\n}}\ntable bench {{\n  {pattern} {backend}\n}}\n",
        dir = dir.display()
    );
    let file = dir.join("sniproxy.conf");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    spawn(
        "sniproxy",
        core,
        addr,
        "sniproxy",
        &["-f".into(), "-c".into(), file.display().to_string()],
        dir,
    )
}
