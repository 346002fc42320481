//! Making and loading certificate authorities, and issuing from them.

use crate::files::{CA_CERT, CA_KEY, CERT_CHAIN, KEY, ROOT_CERT, ROOT_KEY};
use crate::pem::{read_certs, read_key, to_pem};
use crate::{Error, KeyAlgorithm, OutputFile, Result, SpiffeId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// Certificates start a little in the past so that peers whose clocks lag still accept them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

pub struct RootOptions {
    pub org: String,
    pub days: u32,
    pub key: KeyAlgorithm,
}

pub struct IntermediateOptions {
    pub cluster: String,
    pub days: u32,
    pub key: KeyAlgorithm,
}

pub struct WorkloadOptions {
    pub spiffe: SpiffeId,
    pub ttl: Duration,
    pub dns: Vec<String>,
    pub key: KeyAlgorithm,
}

impl WorkloadOptions {
    /// A 24 h ECDSA workload certificate for `spiffe` with no DNS names: Istio's default.
    pub fn new(spiffe: SpiffeId) -> Self {
        WorkloadOptions {
            spiffe,
            ttl: Duration::from_secs(24 * 3600),
            dns: Vec::new(),
            key: KeyAlgorithm::EcdsaP256,
        }
    }
}

/// A PKCS#10 request whose signature verified.
pub struct Csr(CertificateSigningRequestParams);

impl Csr {
    /// Parses `pem` and checks the request's signature with its own key.
    pub fn parse(pem: &str) -> Result<Csr> {
        CertificateSigningRequestParams::from_pem(pem)
            .map(Csr)
            .map_err(|e| Error::Invalid(format!("bad certificate signing request: {e}")))
    }

    /// The names the request asks for (its subjectAltName entries, as `URI:…`, `DNS:…`,
    /// `IP:…`, `email:…`): what a CA compares with the caller's identity before signing.
    pub fn names(&self) -> Vec<String> {
        self.0
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                rcgen::SanType::URI(u) => format!("URI:{}", u.as_str()),
                rcgen::SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
                rcgen::SanType::IpAddress(ip) => format!("IP:{ip}"),
                rcgen::SanType::Rfc822Name(e) => format!("email:{}", e.as_str()),
                other => format!("other:{other:?}"),
            })
            .collect()
    }
}

/// A CA that can sign: a root, or an intermediate in Istio's `cacerts` layout.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate, then each issuer above it, ending with the root (PEM).
    chain: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// A workload's credentials.
pub struct WorkloadCert {
    /// The leaf, then the intermediates that issued it (the root is not included).
    pub chain: Vec<String>,
    pub key_pem: String,
    pub root_pem: String,
    pub not_after: OffsetDateTime,
}

impl WorkloadCert {
    pub fn chain_pem(&self) -> String {
        self.chain.concat()
    }

    /// `cert-chain.pem`, `key.pem` and `root-cert.pem`, as Istio's agent writes them.
    pub fn files(&self) -> Vec<OutputFile> {
        vec![
            OutputFile::public(CERT_CHAIN, self.chain_pem()),
            OutputFile::secret(KEY, self.key_pem.clone()),
            OutputFile::public(ROOT_CERT, self.root_pem.clone()),
        ]
    }
}

impl CertificateAuthority {
    /// A new self-signed root.
    pub fn new_root(opts: &RootOptions) -> Result<Self> {
        let key = opts.key.generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params(now - BACKDATE, now + days(opts.days))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn(&[
            (DnType::OrganizationName, &opts.org),
            (DnType::CommonName, "Root CA"),
        ]);
        let cert = params.self_signed(&key)?;
        Self::from_parts(&cert.pem(), key, Vec::new())
    }

    /// A per-cluster intermediate: CA with pathlen 0, so it can issue only workload certificates.
    pub fn issue_intermediate(&self, opts: &IntermediateOptions) -> Result<Self> {
        if opts.cluster.is_empty() {
            return Err(Error::Invalid("cluster name must not be empty".into()));
        }
        let key = opts.key.generate()?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = self.clamp(now - BACKDATE, now + days(opts.days));
        let mut params = ca_params(not_before, not_after)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let org = self.organization().unwrap_or_else(|| "meshfed".into());
        params.distinguished_name = dn(&[
            (DnType::OrganizationName, &org),
            (
                DnType::CommonName,
                &format!("Intermediate CA {}", opts.cluster),
            ),
            (DnType::LocalityName, &opts.cluster),
        ]);
        let cert = params.signed_by(&key, &self.issuer)?;
        Self::from_parts(&cert.pem(), key, self.chain.clone())
    }

    /// A SPIFFE workload certificate, valid for `ttl` but never beyond this CA.
    pub fn issue_workload(&self, opts: &WorkloadOptions) -> Result<WorkloadCert> {
        let key = opts.key.generate()?;
        let params = self.leaf_params(&opts.spiffe, opts.ttl, &opts.dns)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(WorkloadCert {
            chain: self.leaf_chain(cert.pem()),
            key_pem: key.serialize_pem(),
            root_pem: self.root_pem().to_string(),
            not_after: params.not_after,
        })
    }

    /// A TLS server certificate for infrastructure (the test bed's API server): DNS and IP
    /// SANs, serverAuth only. Each name that parses as an IP address becomes an IP SAN.
    pub fn issue_server(&self, names: &[String], ttl: Duration) -> Result<WorkloadCert> {
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = self.clamp(now - BACKDATE, now + ttl);
        let mut params = CertificateParams::new(names.to_vec())?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.distinguished_name = dn(&[(
            DnType::CommonName,
            names.first().map(String::as_str).unwrap_or("server"),
        )]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.is_ca = IsCa::ExplicitNoCa;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(WorkloadCert {
            chain: self.leaf_chain(cert.pem()),
            key_pem: key.serialize_pem(),
            root_pem: self.root_pem().to_string(),
            not_after,
        })
    }

    /// Signs a PKCS#10 request for `spiffe` (as Istio's CA service does). The identity,
    /// validity and usages come from the caller, never from the request; the result is the
    /// leaf followed by the whole chain up to the root, as Istio returns it.
    pub fn sign_csr(&self, csr_pem: &str, spiffe: &SpiffeId, ttl: Duration) -> Result<Vec<String>> {
        self.sign(&Csr::parse(csr_pem)?, spiffe, ttl)
    }

    /// [`CertificateAuthority::sign_csr`] of a request already parsed and verified (a CA
    /// service checks its names first: parsing once halves the signature checks).
    pub fn sign(&self, csr: &Csr, spiffe: &SpiffeId, ttl: Duration) -> Result<Vec<String>> {
        let params = self.leaf_params(spiffe, ttl, &[])?;
        let cert = params.signed_by(&csr.0.public_key, &self.issuer)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// The names a PKCS#10 request asks for, after checking its signature (see [`Csr`]).
    pub fn csr_names(csr_pem: &str) -> Result<Vec<String>> {
        Ok(Csr::parse(csr_pem)?.names())
    }

    /// Loads a root from `root-cert.pem` and `root-key.pem` in `dir`.
    pub fn load_root(dir: &Path) -> Result<Self> {
        let cert = single_cert(&dir.join(ROOT_CERT))?;
        let key = read_key(&dir.join(ROOT_KEY))?;
        Self::checked(&dir.join(ROOT_KEY), &cert, key, Vec::new())
    }

    /// Loads an intermediate from Istio's `cacerts` layout in `dir`.
    pub fn load_intermediate(dir: &Path) -> Result<Self> {
        Self::intermediate_from(dir, |name| crate::pem::read_file(&dir.join(name)))
    }

    /// An intermediate from the `cacerts` files as `read` gives them by name (`ca-cert.pem`,
    /// `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`): a directory's, or a Secret's data
    /// keys (so that the CA key never has to be written to disk). `origin` names them in errors.
    pub fn intermediate_from(
        origin: &Path,
        read: impl Fn(&str) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let path = |name: &str| origin.join(name);
        let one = |name: &str| -> Result<Vec<u8>> {
            let mut certs = crate::pem::certs_of(&path(name), &read(name)?)?;
            match certs.len() {
                1 => Ok(certs.remove(0)),
                n => Err(Error::bad_file(
                    path(name),
                    format!("expected one certificate, found {n}"),
                )),
            }
        };
        let cert = one(CA_CERT)?;
        let key = crate::pem::key_of(&path(CA_KEY), &read(CA_KEY)?)?;
        let chain = crate::pem::certs_of(&path(CERT_CHAIN), &read(CERT_CHAIN)?)?;
        if chain.first() != Some(&cert) {
            return Err(Error::bad_file(
                path(CERT_CHAIN),
                "does not start with ca-cert.pem",
            ));
        }
        let root = one(ROOT_CERT)?;
        if chain.last() != Some(&root) {
            return Err(Error::bad_file(
                path(CERT_CHAIN),
                "does not end with root-cert.pem",
            ));
        }
        let above = chain[1..].iter().map(|der| to_pem(der)).collect();
        Self::checked(&path(CA_KEY), &cert, key, above)
    }

    fn checked(key_path: &Path, cert_der: &[u8], key: KeyPair, above: Vec<String>) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Invalid(format!("unparsable CA certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(Error::bad_file(
                key_path,
                "private key does not match the CA certificate",
            ));
        }
        if !cert.is_ca() {
            return Err(Error::bad_file(
                key_path,
                "certificate beside this key is not a CA (CA:FALSE)",
            ));
        }
        Self::from_parts(&to_pem(cert_der), key, above)
    }

    fn from_parts(cert_pem: &str, key: KeyPair, above: Vec<String>) -> Result<Self> {
        let blocks = crate::pem::parse_blocks(cert_pem.as_bytes()).map_err(Error::Invalid)?;
        let der = &blocks
            .first()
            .ok_or_else(|| Error::Invalid("empty certificate".into()))?
            .contents;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Invalid(format!("unparsable CA certificate: {e}")))?;
        let validity = cert.validity();
        let (not_before, not_after) = (
            validity.not_before.to_datetime(),
            validity.not_after.to_datetime(),
        );
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let mut chain = vec![cert_pem.to_string()];
        chain.extend(above);
        Ok(CertificateAuthority {
            issuer,
            chain,
            not_before,
            not_after,
        })
    }

    fn leaf_params(
        &self,
        spiffe: &SpiffeId,
        ttl: Duration,
        dns: &[String],
    ) -> Result<CertificateParams> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = self.clamp(now - BACKDATE, now + ttl);
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        // Istio leaves the subject empty and puts the identity in the URI SAN.
        params.distinguished_name = DistinguishedName::new();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe.to_string().try_into()?));
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // X509-SVID (SPIFFE §4.1): a leaf MUST say CA:FALSE, and validators MUST check it
        // (§5.2); Istio's leaves carry it too.
        params.is_ca = IsCa::ExplicitNoCa;
        Ok(params)
    }

    /// Keeps a validity window inside this CA's own.
    fn clamp(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (OffsetDateTime, OffsetDateTime) {
        (
            not_before.max(self.not_before),
            not_after.min(self.not_after),
        )
    }

    /// The leaf followed by every CA certificate below the root.
    fn leaf_chain(&self, leaf: String) -> Vec<String> {
        let mut chain = vec![leaf];
        chain.extend(self.chain[..self.chain.len() - 1].iter().cloned());
        chain
    }

    fn organization(&self) -> Option<String> {
        let cert = self.cert_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert).ok()?;
        let org = cert
            .subject()
            .iter_organization()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        Some(org)
    }

    fn cert_der(&self) -> Vec<u8> {
        crate::pem::parse_blocks(self.chain[0].as_bytes())
            .ok()
            .and_then(|b| b.into_iter().next())
            .map(|b| b.contents)
            .unwrap_or_default()
    }

    pub fn cert_pem(&self) -> &str {
        &self.chain[0]
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn root_pem(&self) -> &str {
        self.chain.last().map(String::as_str).unwrap_or_default()
    }

    /// This CA's certificate, then its issuers up to and including the root.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// `root-cert.pem` and `root-key.pem`.
    pub fn root_files(&self) -> Vec<OutputFile> {
        vec![
            OutputFile::public(ROOT_CERT, self.cert_pem().to_string()),
            OutputFile::secret(ROOT_KEY, self.key_pem()),
        ]
    }

    /// Istio's `cacerts` layout: `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`.
    pub fn cacerts_files(&self) -> Vec<OutputFile> {
        vec![
            OutputFile::public(CA_CERT, self.cert_pem().to_string()),
            OutputFile::secret(CA_KEY, self.key_pem()),
            OutputFile::public(CERT_CHAIN, self.chain.concat()),
            OutputFile::public(ROOT_CERT, self.root_pem().to_string()),
        ]
    }
}

fn single_cert(path: &Path) -> Result<Vec<u8>> {
    let mut certs = read_certs(path)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(Error::bad_file(
            path,
            format!("expected one certificate, found {n}"),
        )),
    }
}

fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<CertificateParams> {
    if not_after <= not_before + BACKDATE {
        return Err(Error::Invalid(
            "validity must be at least one day, within the issuer's".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in parts {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// 128 random bits, positive: RFC 5280 wants serials unique per issuer, and rcgen's default
/// (a hash of the public key) would repeat for a re-signed key.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Loads whichever CA `dir` holds: an intermediate (`cacerts` layout) or a root.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        if dir.join(CA_CERT).exists() {
            Self::load_intermediate(dir)
        } else if dir.join(ROOT_KEY).exists() {
            Self::load_root(dir)
        } else {
            Err(Error::bad_file(
                dir,
                "holds neither ca-cert.pem/ca-key.pem nor root-cert.pem/root-key.pem",
            ))
        }
    }
}
