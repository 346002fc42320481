//! `bench gateway --json FILE`: meshfed's gateway side by side with HAProxy, nginx and sniproxy.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num =
        |flag: &str, default: f64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    if args.first().map(String::as_str) == Some("federation") {
        let opts = meshfed_e2e::bench::federation::FederationOptions {
            json: PathBuf::from(value("--json").unwrap_or_else(|| "bench-federation.json".into())),
            meshfed: PathBuf::from(
                value("--meshfed").unwrap_or_else(|| "target/release/meshfed".into()),
            ),
            changes: num("--changes", 1000.0) as usize,
            clusters: num("--clusters", 3.0) as usize,
            services: num("--services", 2000.0) as usize,
            endpoints: num("--endpoints", 10.0) as usize,
        };
        return report(meshfed_e2e::bench::federation::run(&opts));
    }
    if args.first().map(String::as_str) == Some("xds") {
        let opts = meshfed_e2e::bench::xds::XdsOptions {
            json: PathBuf::from(value("--json").unwrap_or_else(|| "bench-xds.json".into())),
            meshfed: PathBuf::from(
                value("--meshfed").unwrap_or_else(|| "target/release/meshfed".into()),
            ),
            clients: num("--clients", 1000.0) as usize,
            changes: num("--changes", 20.0) as usize,
            services: num("--services", 100.0) as usize,
            modes: value("--modes")
                .unwrap_or_else(|| "delta,sotw".into())
                .split(',')
                .map(str::to_string)
                .collect(),
        };
        return report(meshfed_e2e::bench::xds::run(&opts));
    }
    if args.first().map(String::as_str) != Some("gateway") {
        eprintln!(
            "usage: bench gateway|federation|xds --json FILE [--meshfed target/release/meshfed] [--secs 2] [--rounds 3] [--idle 10000] [--rate 1000] [--workers 64] [--conn-only]"
        );
        return ExitCode::from(2);
    }
    let num =
        |flag: &str, default: f64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    let opts = meshfed_e2e::bench::GatewayOptions {
        json: PathBuf::from(value("--json").unwrap_or_else(|| "bench-gateway.json".into())),
        meshfed: PathBuf::from(
            value("--meshfed").unwrap_or_else(|| "target/release/meshfed".into()),
        ),
        secs: num("--secs", 2.0),
        rounds: num("--rounds", 3.0) as usize,
        idle: num("--idle", 10_000.0) as usize,
        rate: num("--rate", 1000.0) as u32,
        workers: num("--workers", 64.0) as usize,
        conn_only: args.iter().any(|a| a == "--conn-only"),
    };
    report(meshfed_e2e::bench::gateway(&opts))
}

fn report(result: Result<serde_json::Value, String>) -> ExitCode {
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
