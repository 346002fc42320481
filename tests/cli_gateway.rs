//! `meshfed gateway` as a process: bad input, routing, and draining on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{MESHFED, admin_get};

#[test]
fn a_bad_route_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "services:\n- host: a.b\n  port: 80\n  endpoints: [{address: nowhere}]\n",
    )
    .unwrap();
    let out = Command::new(MESHFED)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--status",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--endpoints",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes.yaml") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
}

#[test]
fn sigterm_drains_open_connections_then_exits() {
    // A plain TCP backend is enough: the gateway only reads the ClientHello.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    let routes = format!(
        "services:\n- host: echo.sample.svc.cluster.local\n  port: 7\n  endpoints: [{{address: \"{}\"}}]\n",
        backend.local_addr().unwrap()
    );
    std::fs::write(&file, routes).unwrap();
    let mut gw = Command::new(MESHFED)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--status",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--drain-timeout",
            "30s",
            "--endpoints",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(gw.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "gateway listening on ADDR (status ADDR, admin ADDR)"
    let words: Vec<&str> = line.split_whitespace().collect();
    let (listen, status, admin) = (
        words[3].to_string(),
        words[5].trim_end_matches(',').to_string(),
        words[7].trim_end_matches(')').to_string(),
    );
    assert_eq!(admin_get(&status, "/healthz/ready").0, 200, "{line}");
    assert_eq!(admin_get(&status, "/debug/routes").0, 404, "{line}");
    assert_eq!(admin_get(&status, "/metrics").0, 404, "{line}");
    assert_eq!(admin_get(&admin, "/debug/routes").0, 200, "{line}");

    let mut client = TcpStream::connect(&listen).unwrap();
    let hello = meshfed_gateway::clienthello::build::records(
        &meshfed_gateway::clienthello::build::client_hello(
            Some("outbound_.7_._.echo.sample.svc.cluster.local"),
            &[],
        ),
        16_384,
    );
    client.write_all(&hello).unwrap();
    let (mut upstream, _) = backend.accept().unwrap();
    let mut got = vec![0; hello.len()];
    upstream.read_exact(&mut got).unwrap();
    assert_eq!(got, hello, "the ClientHello must be replayed unchanged");

    assert!(
        Command::new("kill")
            .args(["-TERM", &gw.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Draining: no longer ready, but the open connection still carries bytes both ways.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while admin_get(&status, "/healthz/ready").0 != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready while draining"
        );
    }
    upstream.write_all(b"pong").unwrap();
    let mut buf = [0u8; 4];
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    assert!(
        gw.try_wait().unwrap().is_none(),
        "exited with a connection open"
    );
    drop(client);
    drop(upstream);
    let status = gw.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
