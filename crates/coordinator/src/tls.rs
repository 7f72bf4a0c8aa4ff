//! The coordinator's certificates.
//!
//! Unless the operator gives a certificate and key of their own
//! ([`CertSource::Files`], e.g. from ACME), the coordinator keeps a CA of its
//! own in `DATA_DIR/tls/` (`ca.pem`, and `ca-key.pem` readable by its owner
//! only), made at first start, and issues itself a fresh server certificate
//! for the names it is given at every start and every reload, written beside
//! it as `server.pem` (the chain, for `openssl x509` and monitoring; its key
//! stays in memory: a new one each time). Joining
//! workers and clients pin that CA: its [`CaPin`] is in every join token, and
//! it stays the same across restarts, reloads and changes of names.
//!
//! [`Tls::reload`] reads everything again and swaps the configuration that
//! new connections use; connections already open keep theirs. The CLI calls
//! it on SIGHUP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tls::CaPin;
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Our own CA, kept in `dir/tls/` (or in memory only, for a coordinator
    /// without a data dir: then it changes at every start), and a server
    /// certificate for `names` (DNS names or IP addresses; `localhost`,
    /// `127.0.0.1` and `::1` are always added).
    Generated { dir: Option<PathBuf>, names: Vec<String> },
    /// The operator's PEM files: the chain (server certificate first; the
    /// last certificate is the one clients pin) and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Why certificates could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot make the certificates: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The current certificates, shared by both ports.
#[derive(Debug)]
pub struct Tls {
    source: CertSource,
    current: RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    config: Arc<ServerConfig>,
    pin: CaPin,
    /// The names the server certificate carries (generated mode only).
    names: Vec<String>,
}

impl Tls {
    /// Reads (or, the first time, makes) the certificates.
    pub fn load(source: CertSource) -> Result<Tls, TlsError> {
        let current = build(&source)?;
        Ok(Tls { source, current: RwLock::new(current) })
    }

    /// Reads the certificates again; new connections use them at once. On
    /// an error the certificates in use stay.
    pub fn reload(&self) -> Result<CaPin, TlsError> {
        let fresh = build(&self.source)?;
        let pin = fresh.pin;
        if let Ok(mut current) = self.current.write() {
            *current = fresh;
        }
        Ok(pin)
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.snapshot().config))
    }

    /// The pin of the CA that clients trust.
    pub fn pin(&self) -> CaPin {
        self.snapshot().pin
    }

    /// The names in the generated server certificate (none for the
    /// operator's own).
    pub fn names(&self) -> Vec<String> {
        self.snapshot().names
    }

    fn snapshot(&self) -> Current {
        // A poisoned lock still holds a whole configuration: writers only
        // ever replace it in one assignment.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn build(source: &CertSource) -> Result<Current, TlsError> {
    match source {
        CertSource::Generated { dir, names } => generated(dir.as_deref(), names),
        CertSource::Files { cert, key } => files(cert, key),
    }
}

fn files(cert: &Path, key: &Path) -> Result<Current, TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| invalid(cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(last) = chain.last() else {
        return Err(invalid(cert, "holds no certificate".to_owned()));
    };
    let pin = CaPin::of_certificate(last).map_err(|e| invalid(cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
    let config = server_config(chain, key_der)?;
    Ok(Current { config, pin, names: Vec::new() })
}

fn generated(dir: Option<&Path>, extra: &[String]) -> Result<Current, TlsError> {
    let (ca_params, ca_key, ca_der) = match dir {
        Some(dir) => stored_ca(&dir.join("tls"))?,
        None => new_ca()?.0,
    };
    let pin = CaPin::of_certificate(&ca_der).map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for name in extra {
        let name = name.trim().trim_start_matches('[').trim_end_matches(']').to_owned();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(names.clone()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, "legacygpu coordinator");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = params.signed_by(&key, &issuer).map_err(gen_err)?;
    if let Some(dir) = dir {
        let ca_path = dir.join("tls/ca.pem");
        let ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|source| TlsError::Read { path: ca_path.display().to_string(), source })?;
        let chain_pem = format!("{}{ca_pem}", leaf.pem());
        write_replacing(&dir.join("tls/server.pem"), chain_pem.as_bytes())?;
    }
    let chain = vec![leaf.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Current { config: server_config(chain, key)?, pin, names })
}

/// The CA's parameters; the same every time, so that a stored CA key
/// signs certificates whose issuer matches the stored CA certificate.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "legacygpu cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

type Ca = (CertificateParams, KeyPair, CertificateDer<'static>);

/// A new CA, and its certificate in PEM.
fn new_ca() -> Result<(Ca, String), TlsError> {
    let params = ca_params()?;
    let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
    let der = cert.der().clone();
    Ok(((params, key, der), cert.pem()))
}

/// The CA in `dir`, made and written there the first time.
fn stored_ca(dir: &Path) -> Result<Ca, TlsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if !cert_path.exists() && !key_path.exists() {
        let (ca, pem) = new_ca()?;
        create_private_dir(dir)?;
        write_private(&key_path, ca.1.serialize_pem().as_bytes())?;
        write_private(&cert_path, pem.as_bytes())?;
        return Ok(ca);
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|source| TlsError::Read { path: path.display().to_string(), source })
    };
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let key =
        KeyPair::from_pem(&read(&key_path)?).map_err(|e| invalid(&key_path, e.to_string()))?;
    let der = CertificateDer::from_pem_slice(read(&cert_path)?.as_bytes())
        .map_err(|e| invalid(&cert_path, e.to_string()))?;
    Ok((ca_params()?, key, der))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: dir.display().to_string(), source };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(err)
}

/// Writes a public file (mode 0644), replacing the one there by a rename.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.display().to_string(), source };
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes a file only its owner may read (mode 0600), replacing none.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.display().to_string(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(err)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_generated_ca_is_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::Generated {
            dir: Some(dir.path().to_owned()),
            names: vec!["coord.example".into(), "[2001:db8::1]".into()],
        };
        let first = Tls::load(source.clone()).unwrap();
        assert!(first.names().contains(&"coord.example".to_owned()));
        assert!(first.names().contains(&"2001:db8::1".to_owned()));
        // The server certificate is written beside the CA, as its chain.
        let server = dir.path().join("tls/server.pem");
        let chain = |path: &Path| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_file_iter(path).unwrap().collect::<Result<_, _>>().unwrap()
        };
        let written = chain(&server);
        assert_eq!(written.len(), 2);
        assert_eq!(CaPin::of_certificate(&written[1]).unwrap(), first.pin());
        let again = Tls::load(source).unwrap();
        assert_eq!(first.pin(), again.pin(), "the CA survives a restart");
        assert_eq!(first.reload().unwrap(), first.pin(), "and a reload");
        let reissued = chain(&server);
        assert_ne!(reissued[0], written[0], "each start and reload issues a new one");
        assert_eq!(reissued[1], written[1]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/ca-key.pem")).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        let ephemeral = Tls::load(CertSource::Generated { dir: None, names: vec![] }).unwrap();
        assert_ne!(ephemeral.pin(), first.pin());
    }

    #[test]
    fn operator_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let ((_, key, der), pem) = new_ca().unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let tls = Tls::load(CertSource::Files { cert: cert_path.clone(), key: key_path.clone() })
            .unwrap();
        assert_eq!(tls.pin(), CaPin::of_certificate(&der).unwrap());
        // New files are picked up by a reload; bad ones leave the old in use.
        let ((_, key2, der2), pem2) = new_ca().unwrap();
        std::fs::write(&cert_path, &pem2).unwrap();
        std::fs::write(&key_path, key2.serialize_pem()).unwrap();
        assert_eq!(tls.reload().unwrap(), CaPin::of_certificate(&der2).unwrap());
        std::fs::write(&cert_path, "not PEM").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.pin(), CaPin::of_certificate(&der2).unwrap());
        std::fs::write(&cert_path, pem2).unwrap();
        std::fs::write(&key_path, "garbage").unwrap();
        let err = Tls::load(CertSource::Files { cert: cert_path, key: key_path.clone() })
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key_path.display().to_string()), "{err}");
    }
}
