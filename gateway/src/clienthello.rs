//! Reads the SNI from a TLS ClientHello without terminating TLS.
//!
//! Call [`parse`] with everything received so far; it answers `NeedMore` until the whole
//! ClientHello has arrived. Records may be split across reads, and the ClientHello may span
//! several handshake records (large post-quantum key shares do). Anything that is not a
//! well-formed ClientHello is an error, so the caller can close and count it.

/// The largest ClientHello we wait for; real ones are well under 4 KiB even with
/// post-quantum key shares. Beyond this, the peer is refused rather than buffered.
pub const MAX_HELLO: usize = 16 * 1024;
const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet.
    NeedMore,
    /// The ClientHello is complete: its SNI (lowercased), if it has one, and how many bytes
    /// of the input it used (records are forwarded unchanged, so this is informational).
    Done {
        sni: Option<String>,
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not TLS")]
    NotTls,
    #[error("not a ClientHello")]
    NotClientHello,
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

impl HelloError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            HelloError::NotTls => "not_tls",
            HelloError::NotClientHello => "not_client_hello",
            HelloError::TooLarge => "too_large",
            HelloError::Malformed(_) => "malformed",
        }
    }
}

pub fn parse(input: &[u8]) -> Result<Parsed, HelloError> {
    // Reject plain text on its first byte rather than waiting for a record header.
    if input.first().is_some_and(|&b| b != CONTENT_HANDSHAKE) {
        return Err(HelloError::NotTls);
    }
    let mut message = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = input.get(pos..pos + RECORD_HEADER) else {
            return Ok(Parsed::NeedMore);
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(HelloError::Malformed(
                "non-handshake record inside the ClientHello",
            ));
        }
        if header[1] != 3 {
            return Err(HelloError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        if len > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        let Some(fragment) = input.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else {
            return Ok(Parsed::NeedMore);
        };
        pos += RECORD_HEADER + len;
        message.extend_from_slice(fragment);
        if let Some(body) = complete_message(&message)? {
            let sni = client_hello_sni(body)?;
            return Ok(Parsed::Done { sni, consumed: pos });
        }
    }
}

/// The ClientHello body once the reassembled handshake message is complete.
fn complete_message(message: &[u8]) -> Result<Option<&[u8]>, HelloError> {
    let Some(header) = message.get(..4) else {
        return Ok(None);
    };
    if header[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::NotClientHello);
    }
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    if len > MAX_HELLO {
        return Err(HelloError::TooLarge);
    }
    match message.len().cmp(&(4 + len)) {
        std::cmp::Ordering::Less => Ok(None),
        std::cmp::Ordering::Equal => Ok(Some(&message[4..])),
        std::cmp::Ordering::Greater => Err(HelloError::Malformed(
            "data after the ClientHello in its records",
        )),
    }
}

/// A cursor over a byte slice whose reads fail with a reason instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if n > self.0.len() {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

fn client_hello_sni(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    let version = r.u16("version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Malformed("version"));
    }
    r.take(32, "random")?;
    if r.vec8("session id")?.len() > 32 {
        return Err(HelloError::Malformed("session id longer than 32"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(HelloError::Malformed("compression methods"));
    }
    if r.0.is_empty() {
        return Ok(None); // No extensions at all: legal, and without SNI.
    }
    let mut exts = Reader(r.vec16("extensions")?);
    if !r.0.is_empty() {
        return Err(HelloError::Malformed("trailing bytes after extensions"));
    }
    let mut sni = None;
    while !exts.0.is_empty() {
        let kind = exts.u16("extension type")?;
        let data = exts.vec16("extension data")?;
        if kind == EXT_SERVER_NAME {
            if sni.is_some() {
                return Err(HelloError::Malformed("two server_name extensions"));
            }
            sni = Some(server_name(data)?);
        }
    }
    Ok(sni)
}

fn server_name(data: &[u8]) -> Result<String, HelloError> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16("server name list")?);
    if !ext.0.is_empty() {
        return Err(HelloError::Malformed("server_name extension length"));
    }
    let mut host = None;
    while !list.0.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        if kind == NAME_TYPE_HOST {
            if host.is_some() {
                return Err(HelloError::Malformed("two host names"));
            }
            host = Some(name);
        }
    }
    let name = host.ok_or(HelloError::Malformed("server_name without a host name"))?;
    let valid = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !valid {
        return Err(HelloError::Malformed("host name characters"));
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Builds ClientHellos for tests and benchmarks (not a TLS implementation: enough bytes for
/// a router to read).
pub mod build {
    /// One ClientHello message (handshake header included) with the given SNI and extra
    /// extensions (type, data), e.g. GREASE or padding.
    pub fn client_hello(sni: Option<&str>, extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 6, 0x1a, 0x1a, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        for (kind, data) in extra {
            push_ext(&mut exts, *kind, data);
        }
        if let Some(host) = sni {
            let mut list = vec![0];
            list.extend_from_slice(&(host.len() as u16).to_be_bytes());
            list.extend_from_slice(host.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            push_ext(&mut exts, 0, &data);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    fn push_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    /// Wraps a handshake message into records of at most `max` bytes each.
    pub fn records(message: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(max.max(1)) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests;
