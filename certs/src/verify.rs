//! `meshfed certs verify`: checks CA and workload material the way a peer would see it.

use crate::SpiffeId;
use crate::files::{CA_CERT, CA_KEY, CERT_CHAIN, KEY, ROOT_CERT, ROOT_KEY};
use crate::pem::{read_certs, read_key};
use rcgen::PublicKeyData;
use std::fmt;
use std::path::Path;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Certificates with less than this left are reported, so rotation is not a surprise.
const EXPIRY_WARNING: Duration = Duration::days(30);

/// When to warn about expiry: 30 days, or a fifth of the lifetime for short-lived workload
/// certificates (a 24 h certificate always has under 30 days left; that is by design).
fn warning_threshold(lifetime: Duration) -> Duration {
    EXPIRY_WARNING.min(lifetime / 5)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub outcome: Outcome,
    pub what: String,
    pub message: String,
}

/// Everything that was checked, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    pub fn warnings(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Warn)
            .count()
    }

    fn push(&mut self, outcome: Outcome, what: &str, message: impl Into<String>) {
        self.checks.push(Check {
            outcome,
            what: what.to_string(),
            message: message.into(),
        });
    }
    fn ok(&mut self, what: &str, message: impl Into<String>) {
        self.push(Outcome::Ok, what, message);
    }
    fn warn(&mut self, what: &str, message: impl Into<String>) {
        self.push(Outcome::Warn, what, message);
    }
    fn fail(&mut self, what: &str, message: impl Into<String>) {
        self.push(Outcome::Fail, what, message);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let tag = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
            };
            writeln!(f, "{tag} {}: {}", c.what, c.message)?;
        }
        Ok(())
    }
}

/// Checks a directory in one of the three layouts (root, `cacerts`, workload) or a PEM
/// file holding a chain, at time `now`.
pub fn verify_path(path: &Path, now: OffsetDateTime) -> Report {
    let mut report = Report::default();
    let shown = path.display().to_string();
    if path.is_dir() {
        verify_dir(path, now, &mut report);
    } else if path.exists() {
        verify_file(path, now, &mut report);
    } else {
        report.fail(&shown, "no such file or directory");
    }
    report
}

fn verify_dir(dir: &Path, now: OffsetDateTime, report: &mut Report) {
    let has = |name| dir.join(name).is_file();
    if has(CA_CERT) {
        let Some(ca) = load(dir, CA_CERT, report) else {
            return;
        };
        let Some(chain) = load(dir, CERT_CHAIN, report) else {
            return;
        };
        if chain.first() == ca.first() {
            report.ok(CERT_CHAIN, "starts with ca-cert.pem");
        } else {
            report.fail(CERT_CHAIN, "does not start with ca-cert.pem");
        }
        key_matches(dir, CA_KEY, &ca[0], report);
        let Some(root) = load(dir, ROOT_CERT, report) else {
            return;
        };
        check_chain(CERT_CHAIN, &chain, &root[0], now, report);
    } else if has(CERT_CHAIN) {
        let Some(chain) = load(dir, CERT_CHAIN, report) else {
            return;
        };
        key_matches(dir, KEY, &chain[0], report);
        let Some(root) = load(dir, ROOT_CERT, report) else {
            return;
        };
        check_chain(CERT_CHAIN, &chain, &root[0], now, report);
    } else if has(ROOT_CERT) {
        let Some(root) = load(dir, ROOT_CERT, report) else {
            return;
        };
        if has(ROOT_KEY) {
            key_matches(dir, ROOT_KEY, &root[0], report);
        }
        check_chain(ROOT_CERT, &root, &root[0], now, report);
    } else {
        report.fail(
            &dir.display().to_string(),
            "no root-cert.pem, ca-cert.pem or cert-chain.pem: not a CA or workload directory",
        );
    }
}

fn verify_file(path: &Path, now: OffsetDateTime, report: &mut Report) {
    let what = path.display().to_string();
    let certs = match read_certs(path) {
        Ok(c) => c,
        Err(e) => return report.fail(&what, e.to_string()),
    };
    let last = &certs[certs.len() - 1];
    let root = if is_self_signed(last) {
        last.clone()
    } else {
        let beside = path.with_file_name(ROOT_CERT);
        match read_certs(&beside) {
            Ok(r) if r.len() == 1 => r[0].clone(),
            _ => {
                return report.fail(
                    &what,
                    "chain has no root and there is no root-cert.pem beside it",
                );
            }
        }
    };
    check_chain(&what, &certs, &root, now, report);
}

fn load(dir: &Path, name: &str, report: &mut Report) -> Option<Vec<Vec<u8>>> {
    match read_certs(&dir.join(name)) {
        Ok(certs) => Some(certs),
        Err(e) => {
            report.fail(name, e.to_string());
            None
        }
    }
}

fn key_matches(dir: &Path, key_name: &str, cert_der: &[u8], report: &mut Report) {
    let key = match read_key(&dir.join(key_name)) {
        Ok(k) => k,
        Err(e) => return report.fail(key_name, e.to_string()),
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return report.fail(key_name, "certificate unparsable");
    };
    if cert.public_key().subject_public_key.data.as_ref() == key.der_bytes() {
        report.ok(key_name, "private key matches the certificate");
    } else {
        report.fail(key_name, "private key does not match the certificate");
    }
}

fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| {
            c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok()
        })
        .unwrap_or(false)
}

/// Walks `certs` (leaf or lowest CA first) up to `root`, checking each link and each certificate.
fn check_chain(
    what: &str,
    certs: &[Vec<u8>],
    root: &[u8],
    now: OffsetDateTime,
    report: &mut Report,
) {
    let mut path: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
    if path.last() != Some(&root) {
        if path.last().is_some_and(|c| is_self_signed(c)) {
            return report.fail(what, "chain ends at a root other than root-cert.pem");
        }
        path.push(root);
    }
    let mut parsed: Vec<X509Certificate> = Vec::with_capacity(path.len());
    for der in &path {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => parsed.push(cert),
            Err(e) => return report.fail(what, format!("unparsable certificate: {e}")),
        }
    }
    let mut cas_below = 0;
    for (i, cert) in parsed.iter().enumerate() {
        let issuer = parsed.get(i + 1).unwrap_or(cert);
        let label = format!("{what}[{i}] {}", describe(cert));
        check_link(&label, cert, issuer, i + 1 == parsed.len(), report);
        check_validity(&label, cert, issuer, now, report);
        if i == 0 && !cert.is_ca() {
            check_leaf(&label, cert, report);
        } else {
            check_ca(&label, cert, cas_below, report);
            cas_below += 1;
        }
    }
}

fn describe(cert: &X509Certificate) -> String {
    let subject = cert.subject().to_string();
    if subject.is_empty() {
        "(empty subject)".into()
    } else {
        format!("\"{subject}\"")
    }
}

fn check_link(
    label: &str,
    cert: &X509Certificate,
    issuer: &X509Certificate,
    is_root: bool,
    report: &mut Report,
) {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return report.fail(
            label,
            format!(
                "issuer {} is not the next certificate's subject",
                cert.issuer()
            ),
        );
    }
    match cert.verify_signature(Some(issuer.public_key())) {
        Ok(()) if is_root => report.ok(label, "self-signed root, signature valid"),
        Ok(()) => report.ok(label, format!("signed by {}", describe(issuer))),
        Err(e) => report.fail(label, format!("signature does not verify ({e})")),
    }
}

fn check_validity(
    label: &str,
    cert: &X509Certificate,
    issuer: &X509Certificate,
    now: OffsetDateTime,
    report: &mut Report,
) {
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if now < not_before {
        return report.fail(label, format!("not valid before {}", rfc3339(not_before)));
    }
    if now > not_after {
        return report.fail(label, format!("expired at {}", rfc3339(not_after)));
    }
    let left = not_after - now;
    let until = rfc3339(not_after);
    let left_text = if left >= Duration::days(2) {
        format!("{} days left", left.whole_days())
    } else {
        format!("{} hours left", left.whole_hours())
    };
    if left < warning_threshold(not_after - not_before) {
        report.warn(label, format!("expires soon: {until} ({left_text})"));
    } else {
        report.ok(label, format!("valid until {until} ({left_text})"));
    }
    if not_after > issuer.validity().not_after.to_datetime() {
        report.warn(
            label,
            "outlives its issuer: it stops working when the issuer expires",
        );
    }
}

fn check_ca(label: &str, cert: &X509Certificate, cas_below: u32, report: &mut Report) {
    let bc = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => bc.value,
        _ => return report.fail(label, "signs other certificates but is not a CA (CA:FALSE)"),
    };
    let can_sign = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    if !can_sign {
        return report.fail(label, "CA without keyCertSign key usage");
    }
    match bc.path_len_constraint {
        Some(max) if cas_below > max => report.fail(
            label,
            format!("pathlen:{max} but {cas_below} CA certificate(s) below it"),
        ),
        Some(max) => report.ok(label, format!("CA:TRUE, pathlen:{max}, keyCertSign")),
        None => report.ok(label, "CA:TRUE, no pathlen limit, keyCertSign"),
    }
}

fn check_leaf(label: &str, cert: &X509Certificate, report: &mut Report) {
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        Ok(None) => return report.fail(label, "leaf has no subjectAltName"),
        Err(e) => return report.fail(label, format!("bad subjectAltName: {e}")),
    };
    let mut spiffe = Vec::new();
    for name in &names {
        if let GeneralName::URI(uri) = name {
            match uri.parse::<SpiffeId>() {
                Ok(id) => spiffe.push(id.to_string()),
                Err(e) if uri.starts_with("spiffe://") => return report.fail(label, e.to_string()),
                Err(_) => {}
            }
        }
    }
    match spiffe.len() {
        0 => report.warn(label, "no SPIFFE URI SAN: not a mesh workload certificate"),
        1 => report.ok(label, format!("URI SAN {}", spiffe[0])),
        _ => report.fail(
            label,
            format!(
                "several SPIFFE IDs in one certificate: {}",
                spiffe.join(", ")
            ),
        ),
    }
    let eku = cert.extended_key_usage().ok().flatten().map(|e| e.value);
    match eku {
        Some(e) if e.server_auth && e.client_auth => report.ok(label, "EKU serverAuth, clientAuth"),
        _ => report.warn(
            label,
            "EKU lacks serverAuth or clientAuth: mutual TLS needs both",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warning_is_30_days_or_a_fifth_of_short_lifetimes() {
        assert_eq!(warning_threshold(Duration::days(3650)), Duration::days(30));
        assert_eq!(warning_threshold(Duration::days(60)), Duration::days(12));
        assert_eq!(
            warning_threshold(Duration::hours(24)),
            Duration::minutes(288)
        );
    }
}
