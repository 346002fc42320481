//! Cluster networks: gateways answer across clusters, pod addresses stay private to their
//! cluster, and every namespace is gone once the Network is dropped, panic or not.
//!
//! As root (CI) isolation is required: a Loopback fallback there fails the tests rather than
//! letting them pass without isolation. Without root the fallback is what gets checked.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use meshfed_testbed::netns::{ClusterNet, Mode, Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Bound on every wait, so a broken network fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Creates the network and checks it is isolated exactly when we are root.
fn create(clusters: &[&str]) -> Network {
    let net = Network::create(clusters).expect("creating cluster networks");
    let expected = if running_as_root() {
        Mode::Isolated
    } else {
        Mode::Loopback
    };
    let reason = net.fallback_reason().unwrap_or("none");
    let root = running_as_root();
    assert_eq!(
        net.mode(),
        expected,
        "root: {root}, fallback reason: {reason}"
    );
    net
}

fn cluster<'a>(net: &'a Network, name: &str) -> &'a ClusterNet {
    net.cluster(name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// Which of `names` `ip netns list` still shows.
fn still_listed(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names
        .iter()
        .filter(|n| listed.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// Listens on every address and echoes each connection back, until `stop` fires.
async fn echo_until_stopped(
    addrs: Vec<SocketAddr>,
    bound: mpsc::Sender<io::Result<()>>,
    stop: oneshot::Receiver<()>,
) {
    let mut listeners = Vec::new();
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                let _ = bound.send(Err(e));
                return;
            }
        }
    }
    let _ = bound.send(Ok(()));
    for listener in listeners {
        tokio::spawn(echo_forever(listener));
    }
    let _ = stop.await;
}

async fn echo_forever(listener: TcpListener) {
    while let Ok((mut conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut message = Vec::new();
            if conn.read_to_end(&mut message).await.is_ok() {
                let _ = conn.write_all(&message).await;
            }
        });
    }
}

/// Sends `message`, half-closes, and returns what comes back.
async fn exchange(addr: SocketAddr, message: &'static [u8]) -> io::Result<Vec<u8>> {
    let talk = async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.write_all(message).await?;
        conn.shutdown().await?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        Ok(reply)
    };
    let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: no answer"));
    tokio::time::timeout(WAIT, talk).await.map_err(timed_out)?
}

#[test]
fn gateway_is_reachable_across_clusters_but_pods_are_not() {
    let net = create(&["cluster1", "cluster2"]);
    let (c1, c2) = (cluster(&net, "cluster1"), cluster(&net, "cluster2"));
    let gateway = SocketAddr::new(c2.gateway_ip(), 15443);
    let pod = SocketAddr::new(c2.pod_ip(5).unwrap(), 8080);

    let (bound_tx, bound) = mpsc::channel();
    let (stop, stop_rx) = oneshot::channel();
    let server = c2.spawn(move || echo_until_stopped(vec![gateway, pod], bound_tx, stop_rx));
    let bound = bound
        .recv_timeout(WAIT)
        .expect("cluster2 never bound its listeners");
    bound.expect("binding listeners in cluster2");

    // The pod listener is really there: its own cluster reaches it.
    let local = c2.spawn(move || exchange(pod, b"pod-local"));
    let local = local.join_timeout(WAIT).unwrap();
    assert_eq!(local.expect("cluster2 reaching its own pod"), b"pod-local");

    let remote = c1.spawn(move || async move {
        (
            exchange(gateway, b"east-west").await,
            exchange(pod, b"cross-pod").await,
        )
    });
    let (via_gateway, to_pod) = remote.join_timeout(WAIT).unwrap();
    let via_gateway = via_gateway.expect("cluster1 reaching cluster2's gateway");
    assert_eq!(via_gateway, b"east-west");
    match net.mode() {
        Mode::Isolated => {
            let err = to_pod.expect_err("cluster1 reached a pod of cluster2");
            assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable, "{err}");
        }
        Mode::Loopback => assert_eq!(to_pod.expect("loopback isolates nothing"), b"cross-pod"),
    }

    let _ = stop.send(());
    server.join_timeout(WAIT).unwrap();
}

#[test]
fn commands_run_inside_their_cluster() {
    let net = create(&["cluster1", "cluster2"]);
    let (c1, c2) = (cluster(&net, "cluster1"), cluster(&net, "cluster2"));
    let pod = c1.pod_ip(3).unwrap();

    let out = c1.command("ip").args(["-o", "addr"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs = String::from_utf8(out.stdout).unwrap();
    let shows = |ip: IpAddr| addrs.contains(&format!("inet {ip}/"));
    match net.mode() {
        Mode::Isolated => {
            assert!(
                shows(c1.gateway_ip()),
                "cluster1's gateway missing:\n{addrs}"
            );
            assert!(shows(pod), "cluster1's pod address missing:\n{addrs}");
            assert!(
                !shows(c2.gateway_ip()),
                "cluster2's gateway visible:\n{addrs}"
            );
        }
        Mode::Loopback => assert!(shows([127, 0, 0, 1].into()), "{addrs}"),
    }
}

#[test]
fn dropping_the_network_deletes_its_namespaces() {
    let net = create(&["cluster1", "cluster2"]);
    let names = net.namespaces().to_vec();
    assert_eq!(
        names.len(),
        if net.mode() == Mode::Isolated { 3 } else { 0 }
    );
    assert_eq!(
        still_listed(&names),
        names,
        "namespaces missing while alive"
    );

    drop(net);
    assert_eq!(still_listed(&names), Vec::<String>::new());
}

#[test]
fn a_panic_while_the_network_is_alive_still_deletes_its_namespaces() {
    let names = Mutex::new(Vec::new());
    let outcome: std::thread::Result<()> = panic::catch_unwind(AssertUnwindSafe(|| {
        let net = create(&["cluster1", "cluster2"]);
        *names.lock().unwrap() = net.namespaces().to_vec();
        panic!("deliberate panic while the network is alive");
    }));
    assert!(outcome.is_err());

    let names = names.into_inner().unwrap();
    assert_eq!(names.is_empty(), !running_as_root());
    assert_eq!(still_listed(&names), Vec::<String>::new());
}

#[test]
fn create_removes_namespaces_left_by_a_killed_run() {
    if !running_as_root() {
        // Without root no run can leave namespaces behind; just check the fallback.
        create(&["cluster1"]);
        return;
    }
    // A pid that has just exited: a stand-in for a test run killed before its Drop ran.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = vec![format!("mf{dead_pid:06x}0000c1")];
    let added = Command::new("ip")
        .args(["netns", "add", &stale[0]])
        .status()
        .unwrap();
    assert!(added.success());
    assert_eq!(still_listed(&stale), stale);

    let _net = create(&["cluster1"]);
    assert_eq!(still_listed(&stale), Vec::<String>::new());
}
