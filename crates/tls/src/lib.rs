//! TLS for legacygpu's clients — workers, the SDK and the CLI — and the
//! formats that the coordinator shares with them.
//!
//! - [`CaPin`]: the SHA-256 of the DER `SubjectPublicKeyInfo` of the
//!   coordinator's CA certificate, written as 64 lowercase hex digits. It is
//!   what a join token and `--ca-hash` carry, as kubeadm's
//!   `--discovery-token-ca-cert-hash` does.
//! - [`JoinToken`]: `lgj1-<pin>-<secret>`, the ready-to-paste line the
//!   coordinator prints: the pin tells a newcomer which coordinator to trust,
//!   the secret tells the coordinator to let the newcomer in.
//! - [`client_config`]: a rustls client configuration that either trusts
//!   exactly the pinned CA ([`Trust::Pinned`]) — the certificate chain is
//!   checked against the pin during the TLS handshake, so nothing secret is
//!   ever sent to a coordinator that does not hold the pinned CA — or the
//!   system's roots ([`Trust::System`], for an operator's own certificate).
//! - [`random_secret`]: secrets from the OS CSPRNG.
//!
//! The crypto provider is rustls's `ring`, given explicitly, so that no
//! process-wide default is needed.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

pub use rustls;

/// What went wrong with a pin, a token or a TLS configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error(
        "`{0}` is not a CA hash: expected 64 hex digits (SHA-256 of the CA's public key), as in a join token"
    )]
    BadPin(String),
    #[error(
        "not a join token: expected lgj1-<64 hex digits>-<secret>, as `cluster start` prints it"
    )]
    BadToken,
    #[error("cannot read the certificate: {0}")]
    BadCertificate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

/// The SHA-256 of a CA certificate's DER `SubjectPublicKeyInfo`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Result<CaPin, TlsError> {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
        Ok(CaPin::of_spki(webpki::spki_for_anchor(&anchor).as_ref()))
    }

    /// The pin of a DER `SubjectPublicKeyInfo` (what rcgen's
    /// `public_key_der` returns).
    pub fn of_spki(spki_der: &[u8]) -> CaPin {
        CaPin(Sha256::digest(spki_der).into())
    }

    /// Reads 64 hex digits (either case), optionally prefixed `sha256:`.
    pub fn parse(text: &str) -> Result<CaPin, TlsError> {
        let bad = || TlsError::BadPin(text.chars().take(80).collect());
        let hex = text.trim();
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(CaPin(out))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CaPin {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

/// `lgj1-<pin>-<secret>`: which coordinator to trust, and the secret that
/// admits the bearer. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub pin: CaPin,
    pub secret: String,
}

impl JoinToken {
    pub const PREFIX: &'static str = "lgj1-";

    /// Whether `text` is meant as a join token (it may still be malformed).
    pub fn looks_like(text: &str) -> bool {
        text.trim().starts_with(JoinToken::PREFIX)
    }

    pub fn parse(text: &str) -> Result<JoinToken, TlsError> {
        let rest = text.trim().strip_prefix(JoinToken::PREFIX).ok_or(TlsError::BadToken)?;
        let (pin, secret) = rest.split_at_checked(64).ok_or(TlsError::BadToken)?;
        let pin = CaPin::parse(pin).map_err(|_| TlsError::BadToken)?;
        let secret = secret.strip_prefix('-').ok_or(TlsError::BadToken)?;
        let printable = secret.bytes().all(|b| b.is_ascii_graphic());
        if secret.len() < 16 || !printable {
            return Err(TlsError::BadToken);
        }
        Ok(JoinToken { pin, secret: secret.to_owned() })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}-{}", JoinToken::PREFIX, self.pin, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({}{}-***)", JoinToken::PREFIX, self.pin)
    }
}

/// 32 bytes from the OS CSPRNG, URL-safe base64 without padding (43 characters).
pub fn random_secret() -> Result<String, TlsError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TlsError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes [`provider`] the process's default, for libraries that build TLS
/// configurations of their own (reqwest does, even for `http://`). Calling
/// it again is harmless.
pub fn install_default_provider() {
    // Err means a default is already installed: nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How a client decides to trust the coordinator's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly the CA with this pin (a join token or `--ca-hash`).
    Pinned(CaPin),
    /// The system's root certificates (an operator's own certificate, e.g.
    /// from ACME).
    System,
}

impl Trust {
    /// The pin of a join token given as the token, else `--ca-hash`, else
    /// the system's roots.
    pub fn from_options(token: Option<&str>, ca_hash: Option<&str>) -> Result<Trust, TlsError> {
        if let Some(token) = token.filter(|t| JoinToken::looks_like(t)) {
            return Ok(Trust::Pinned(JoinToken::parse(token)?.pin));
        }
        match ca_hash {
            Some(hash) => Ok(Trust::Pinned(CaPin::parse(hash)?)),
            None => Ok(Trust::System),
        }
    }
}

/// A client configuration for `trust`, speaking HTTP/1.1 (WebSocket
/// upgrades and the REST API both use it).
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = match trust {
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier { pin: *pin, provider }))
            .with_no_client_auth(),
        Trust::System => builder.with_root_certificates(system_roots()?).with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Config(
            "no system root certificates found; give the coordinator's CA hash (--ca-hash) or a join token"
                .to_owned(),
        ));
    }
    Ok(roots)
}

/// Why a pinned verification failed, in words an operator can act on.
struct PinMismatch {
    pinned: CaPin,
    presented: Vec<String>,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the coordinator's certificate is not issued by the pinned CA (sha256 {}; it presented {}): \
             this is another coordinator, or the token or --ca-hash is wrong",
            self.pinned,
            if self.presented.is_empty() {
                "nothing usable".to_owned()
            } else {
                self.presented.join(", ")
            }
        )
    }
}

/// rustls shows the error's `Debug` in its own message: the same words.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

/// Trusts exactly one CA, found in the chain the server presents by its
/// pin; the chain must then verify to it as a trust anchor, names included.
#[derive(Debug)]
struct PinnedVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = || intermediates.iter().chain(std::iter::once(end_entity));
        let Some(anchor) = chain().find(|c| CaPin::of_certificate(c).is_ok_and(|p| p == self.pin))
        else {
            let presented = chain()
                .filter_map(|c| CaPin::of_certificate(c).ok())
                .map(|p| p.to_string())
                .collect();
            let mismatch = PinMismatch { pinned: self.pin, presented };
            return Err(CertificateError::Other(OtherError(Arc::new(mismatch))).into());
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
