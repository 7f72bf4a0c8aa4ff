//! Pins, tokens, and the pinned verifier in real (in-memory) TLS handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, ServerConfig, ServerConnection};

use super::*;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca { params, key, der }
}

/// A server configuration with a certificate for `names` issued by `ca`,
/// presenting the CA in its chain.
fn server(ca: &Ca, names: &[&str]) -> Arc<ServerConfig> {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
    let chain = vec![leaf.der().clone(), ca.der.clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Runs a handshake in memory; the client's error, if any. `sent` says
/// whether the client could write application data before failing.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<(), String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut c = ClientConnection::new(client, name).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut buf.as_slice()).unwrap();
        if let Err(e) = s.process_new_packets() {
            return Err(format!("server: {e}"));
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets().map_err(|e| e.to_string())?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn the_pin_is_the_sha256_of_the_ca_spki_in_lowercase_hex() {
    let ca = ca("test CA");
    let pin = CaPin::of_certificate(&ca.der).unwrap();
    assert_eq!(pin, CaPin::of_spki(&ca.key.subject_public_key_info()));
    let hex = pin.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{hex}");
    assert_eq!(CaPin::parse(&hex).unwrap(), pin);
    assert_eq!(CaPin::parse(&hex.to_uppercase()).unwrap(), pin);
    assert_eq!(CaPin::parse(&format!("sha256:{hex}")).unwrap(), pin);
    assert!(CaPin::parse(&hex[1..]).is_err());
    assert!(CaPin::parse(&format!("{}zz", &hex[2..])).is_err());
    assert!(CaPin::parse("é".repeat(32).as_str()).is_err());
    assert!(CaPin::of_certificate(b"not a certificate").is_err());
}

#[test]
fn join_tokens_round_trip_and_hide_their_secret() {
    let pin = CaPin::of_certificate(&ca("t").der).unwrap();
    let token = JoinToken { pin, secret: random_secret().unwrap() };
    let text = token.to_string();
    assert!(text.starts_with("lgj1-") && JoinToken::looks_like(&text));
    assert_eq!(JoinToken::parse(&text).unwrap(), token);
    assert!(!format!("{token:?}").contains(&token.secret));
    for bad in ["", "lgj1-", "lgj2-x", &text[..70], &format!("{}x{}", &text[..69], &text[70..])] {
        assert!(JoinToken::parse(bad).is_err(), "{bad}");
    }
    let trust = Trust::from_options(Some(&text), None).unwrap();
    assert_eq!(trust, Trust::Pinned(pin));
    assert_eq!(Trust::from_options(Some("plain-token"), None).unwrap(), Trust::System);
}

#[test]
fn secrets_are_random_and_url_safe() {
    let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
}

#[test]
fn a_pinned_client_trusts_exactly_its_ca() {
    let ours = ca("ours");
    let pin = CaPin::of_certificate(&ours.der).unwrap();
    let client = client_config(&Trust::Pinned(pin)).unwrap();
    handshake(Arc::clone(&client), server(&ours, &["localhost", "127.0.0.1"]), "localhost")
        .unwrap();
    handshake(Arc::clone(&client), server(&ours, &["localhost", "127.0.0.1"]), "127.0.0.1")
        .unwrap();
    // Another CA, even with the right names: refused during the handshake,
    // with the pins in the message.
    let theirs = ca("theirs");
    let err =
        handshake(Arc::clone(&client), server(&theirs, &["localhost"]), "localhost").unwrap_err();
    assert!(err.contains("not issued by the pinned CA") && err.contains(&pin.to_string()), "{err}");
    // Our CA, but a name the certificate does not carry.
    let err = handshake(client, server(&ours, &["localhost"]), "10.1.2.3").unwrap_err();
    assert!(err.to_lowercase().contains("name"), "{err}");
}
