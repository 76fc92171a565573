//! Reading a listener's PEM certificate chain and private key.
//!
//! Exists so that a missing, empty or garbled certificate, or a key that does
//! not belong to it, is a config error naming `listeners[i].tls.cert` (or
//! `.key`) and its line — found by `wsgate check` — rather than a failure
//! when the listener starts. PEM is read with `rustls-pki-types`; the
//! key/certificate pair is checked with rustls, which the server uses anyway.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// PEM files larger than this are refused (a chain is a few KiB).
const MAX_PEM_FILE: u64 = 1 << 20;

/// Which of the two files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Cert,
    Key,
}

/// Reads a file of at most `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Reads a PEM file and refuses an empty one.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = read_limited(path, MAX_PEM_FILE).map_err(|e| {
        format!(
            "cannot read {what} file {:?}: {e}",
            path.display().to_string()
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "{what} file {:?} is empty",
            path.display().to_string()
        ));
    }
    Ok(bytes)
}

/// Describes a PEM error in words (the library prints marker lines as bytes).
fn describe(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing end line {:?}", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(e) => format!("bad base64 inside a PEM block: {e}"),
        other => other.to_string(),
    }
}

/// Reads the certificate chain, leaf first; at least one certificate.
pub(crate) fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(path, "certificate")?;
    let shown = path.display().to_string();
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown:?} is not valid PEM: {}", describe(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "no certificate found in {shown:?}: expected PEM blocks \"-----BEGIN CERTIFICATE-----\""
        ));
    }
    Ok(chain)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_pem(path, "private key")?;
    let shown = path.display().to_string();
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "no private key found in {shown:?}: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \"RSA PRIVATE KEY\" (PKCS#1) or \"EC PRIVATE KEY\" (SEC1)"
        ),
        other => format!("{shown:?} is not valid PEM: {}", describe(&other)),
    })
}

/// Checks that rustls can use the key and that it belongs to the leaf
/// certificate.
pub(crate) fn check_pair(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), (Which, String)> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| {
        (
            Which::Key,
            format!(
                "the private key in {:?} is not a usable RSA, ECDSA or Ed25519 key: {e}",
                key_path.display().to_string()
            ),
        )
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), Arc::clone(&signing_key));
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key cannot tell its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            Which::Key,
            format!(
                "the private key in {:?} does not match the certificate in {:?}",
                key_path.display().to_string(),
                cert_path.display().to_string()
            ),
        )),
        Err(e) => Err((
            Which::Cert,
            format!(
                "the first certificate in {:?} is not a valid X.509 certificate: {e}",
                cert_path.display().to_string()
            ),
        )),
    }
}
