//! `meshfed`: one binary, a subcommand per component. Each subcommand only parses
//! arguments and calls the component's library crate.

mod certs_cmd;
mod testbed_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meshfed",
    version,
    about = "Multi-cluster east-west gateway and federation for Kubernetes service meshes",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make, check and package the shared-root CA material (root, per-cluster intermediates, workloads).
    Certs(certs_cmd::CertsArgs),
    /// The local test bed: a small Kubernetes API server (and, later, the seed scenario).
    Testbed(testbed_cmd::TestbedArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(args) => certs_cmd::run(args),
        Command::Testbed(args) => testbed_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every subcommand has help text, and the subcommand's examples use it.
    #[test]
    fn every_flag_is_documented_with_an_example() {
        let cli = Cli::command();
        let mut checked = 0;
        let subs = ["certs", "testbed"].map(|name| cli.find_subcommand(name).expect("subcommand"));
        for sub in subs.iter().flat_map(|c| c.get_subcommands()) {
            let examples = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                examples.contains("Examples:"),
                "{} has no examples",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} {id} has no help",
                    sub.get_name()
                );
                let used = match arg.get_long() {
                    Some(long) => examples.contains(&format!("--{long}")),
                    None => examples.contains(&format!(" {} ", sub.get_name())),
                };
                assert!(used, "{} --{id} has no example", sub.get_name());
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} flags found");
    }
}
