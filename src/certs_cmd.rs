//! `meshfed certs`: the shared-root CA tooling.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Examples:
  meshfed certs root-ca --out certs/root
  meshfed certs intermediate --root certs/root --cluster cluster1 --out certs/cluster1
  meshfed certs workload --ca certs/cluster1 --spiffe spiffe://cluster.local/ns/sample/sa/sleep --out certs/sleep
  meshfed certs verify certs/root certs/cluster1 certs/sleep
  meshfed certs cacerts-secret --ca certs/cluster1 | kubectl apply -f -")]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the shared root CA: DIR/root-cert.pem and DIR/root-key.pem.
    #[command(after_help = "Examples:
  meshfed certs root-ca --out certs/root
  meshfed certs root-ca --out certs/root --org \"Example Corp\" --days 3650 --key rsa-4096
  meshfed certs root-ca --out certs/root --force      # replace an existing root")]
    RootCa {
        /// Directory to write root-cert.pem and root-key.pem into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Organization (O=) in the root's subject; intermediates inherit it.
        #[arg(long, value_name = "O", default_value = "meshfed")]
        org: String,
        /// Validity in days.
        #[arg(long, value_name = "N", default_value_t = 3650)]
        days: u32,
        /// Key type: ecdsa-p256, rsa-2048 or rsa-4096.
        #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256")]
        key: KeyAlgorithm,
        /// Overwrite existing files instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Create a cluster's intermediate CA in Istio's cacerts layout (CA:TRUE, pathlen:0).
    #[command(after_help = "Examples:
  meshfed certs intermediate --root certs/root --cluster cluster1 --out certs/cluster1
  meshfed certs intermediate --root certs/root --cluster cluster2 --out certs/cluster2 --days 365 --key rsa-2048
  meshfed certs intermediate --root certs/root --cluster cluster1 --out certs/cluster1 --force")]
    Intermediate {
        /// Directory holding root-cert.pem and root-key.pem.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// Cluster name; it appears in the subject (CN and L).
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Directory to write ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem into.
        #[arg(long, value_name = "DIR2")]
        out: PathBuf,
        /// Validity in days (never beyond the root's).
        #[arg(long, value_name = "N", default_value_t = 730)]
        days: u32,
        /// Key type: ecdsa-p256, rsa-2048 or rsa-4096.
        #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256")]
        key: KeyAlgorithm,
        /// Overwrite existing files instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Issue a SPIFFE workload certificate: DIR3/cert-chain.pem, key.pem, root-cert.pem.
    #[command(after_help = "Examples:
  meshfed certs workload --ca certs/cluster1 --spiffe spiffe://cluster.local/ns/sample/sa/sleep --out certs/sleep
  meshfed certs workload --ca certs/cluster2 --spiffe spiffe://cluster.local/ns/sample/sa/helloworld \\
      --out certs/hw --ttl 1h --dns helloworld.sample.svc.cluster.local --dns helloworld.sample --key ecdsa-p256
  meshfed certs workload --ca certs/cluster1 --spiffe spiffe://cluster.local/ns/a/sa/b --out certs/b --force")]
    Workload {
        /// Issuing CA directory (cacerts layout, or a root directory).
        #[arg(long, value_name = "DIR2")]
        ca: PathBuf,
        /// Identity for the URI SAN: spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT.
        #[arg(long, value_name = "ID")]
        spiffe: SpiffeId,
        /// Directory to write cert-chain.pem (leaf, then intermediate), key.pem and root-cert.pem into.
        #[arg(long, value_name = "DIR3")]
        out: PathBuf,
        /// Lifetime, e.g. 24h, 90m, 7d; clamped to the issuing CA's expiry.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = meshfed_certs::parse_duration)]
        ttl: Duration,
        /// Extra DNS SAN (repeatable).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// Key type: ecdsa-p256, rsa-2048 or rsa-4096.
        #[arg(long, value_name = "TYPE", default_value = "ecdsa-p256")]
        key: KeyAlgorithm,
        /// Overwrite existing files instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Check CA or workload material: chain to the root, key match, CA flags and pathlen,
    /// validity (warns under 30 days left), SAN shape. Exits 1 on any failure.
    #[command(
        after_help = "Each PATH is a directory (root, cacerts or workload layout) or a PEM file
holding a chain; a chain without its root is anchored by root-cert.pem beside it.

Examples:
  meshfed certs verify certs/root certs/cluster1 certs/cluster2
  meshfed certs verify certs/sleep
  meshfed certs verify certs/sleep/cert-chain.pem"
    )]
    Verify {
        /// Directories or PEM files to check.
        #[arg(value_name = "DIR|FILE", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the Istio `cacerts` Secret (the four cacerts files as data keys) as YAML.
    #[command(after_help = "Examples:
  meshfed certs cacerts-secret --ca certs/cluster1 | kubectl --context cluster1 apply -f -
  meshfed certs cacerts-secret --ca certs/cluster2 --namespace istio-system > cacerts.yaml")]
    CacertsSecret {
        /// Intermediate CA directory in the cacerts layout.
        #[arg(long, value_name = "DIR2")]
        ca: PathBuf,
        /// Namespace of the Secret.
        #[arg(long, value_name = "NS", default_value = "istio-system")]
        namespace: String,
    },
}

pub fn run(args: CertsArgs) -> Result<ExitCode> {
    match args.command {
        CertsCommand::RootCa {
            out,
            org,
            days,
            key,
            force,
        } => {
            let root = CertificateAuthority::new_root(&RootOptions { org, days, key })?;
            written(&out, &root.root_files(), force)
        }
        CertsCommand::Intermediate {
            root,
            cluster,
            out,
            days,
            key,
            force,
        } => {
            let root = CertificateAuthority::load_root(&root).context("loading the root CA")?;
            let ca = root.issue_intermediate(&IntermediateOptions { cluster, days, key })?;
            written(&out, &ca.cacerts_files(), force)
        }
        CertsCommand::Workload {
            ca,
            spiffe,
            out,
            ttl,
            dns,
            key,
            force,
        } => {
            let ca = CertificateAuthority::load_dir(&ca).context("loading the issuing CA")?;
            let cert = ca.issue_workload(&WorkloadOptions {
                spiffe,
                ttl,
                dns,
                key,
            })?;
            written(&out, &cert.files(), force)
        }
        CertsCommand::Verify { paths } => Ok(verify(&paths)),
        CertsCommand::CacertsSecret { ca, namespace } => {
            print!("{}", meshfed_certs::cacerts_secret_yaml(&ca, &namespace)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn written(dir: &Path, files: &[meshfed_certs::OutputFile], force: bool) -> Result<ExitCode> {
    for path in meshfed_certs::write_outputs(dir, files, force)? {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(paths: &[PathBuf]) -> ExitCode {
    let now = time::OffsetDateTime::now_utc();
    let mut failed = Vec::new();
    for path in paths {
        let report = meshfed_certs::verify_path(path, now);
        println!("== {}", path.display());
        print!("{report}");
        if report.failed() {
            failed.push(path.display().to_string());
        }
    }
    if failed.is_empty() {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("error: verification failed for {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
