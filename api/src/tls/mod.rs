//! Mutual TLS on every connection, and roles from certificates.
//!
//! Roles are SAN URIs in the certificate the cluster's CA signed:
//! `spiffe://secretd/admin` (operators, `secretctl`, `etcdctl`),
//! `spiffe://secretd/node/<name>` (the node agent of `<name>`) and
//! `spiffe://secretd/member/<name>` (a cluster member, on the peer port and
//! as a client of other members). A certificate with none of these gets
//! nothing.
//!
//! Listeners accept TLS themselves (`incoming`), so every refused handshake
//! gets one clear log line (wrong CA, expired, no certificate), then hand
//! the connection to tonic, which exposes the peer's certificate to the
//! role checks (`authorize`).

pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tonic::transport::Endpoint;

use crate::identity::Role;

pub const SPIFFE_PREFIX: &str = "spiffe://secretd/";

/// The role a certificate grants, from its SAN URIs.
pub fn role_of(der: &[u8]) -> Result<Role, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let uris = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        });
    for u in uris {
        let Some(rest) = u.strip_prefix(SPIFFE_PREFIX) else {
            continue;
        };
        let named = |n: &str| {
            if secretd_secrets::validate::is_valid_name(n) {
                Ok(n.to_string())
            } else {
                Err(format!("bad name in certificate role {u}"))
            }
        };
        return match rest.split_once('/') {
            None if rest == "admin" => Ok(Role::Admin),
            Some(("node", n)) => named(n).map(Role::Node),
            Some(("member", n)) => named(n).map(Role::Member),
            Some(("driver", n)) => named(n).map(Role::Driver),
            _ => Err(format!("unknown certificate role {u}")),
        };
    }
    Err(format!(
        "the client certificate carries no secretd role (a SAN URI {SPIFFE_PREFIX}admin, node/NAME, member/NAME or driver/NAME)"
    ))
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("{} is not a PEM private key", path.display()))
}

/// One listener's TLS files, as etcd's flags name them.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trusted_ca: Option<PathBuf>,
    pub client_cert_auth: bool,
}

/// Must clients present a certificate? With `--client-cert-auth`, or, as
/// etcd decides it, whenever a trusted CA is given.
pub fn requires_client_certs(client_cert_auth: bool, trusted_ca: &Option<PathBuf>) -> bool {
    client_cert_auth || trusted_ca.is_some()
}

/// Why a listener that requires client certificates cannot start without
/// a CA, and what each way out gives (`flag` is `--` or `--peer-`).
fn no_trusted_ca(flag: &str) -> anyhow::Error {
    if flag == "--peer-" {
        return anyhow!(
            "https peer URLs with --peer-cert-file and --peer-key-file but no --peer-trusted-ca-file: \
             members must present member certificates (--peer-client-cert-auth defaults to true). \
             Give --peer-trusted-ca-file with the CA of the members' certificates \
             (--peer-client-cert-auth=false would let anyone who reaches the peer port \
             speak raft and fetch the key-encryption key)"
        );
    }
    anyhow!(
        "https client URLs with --cert-file and --key-file but no --trusted-ca-file: secretd \
         requires client certificates by default (--client-cert-auth defaults to true, unlike \
         etcd), because a certificate is what gives a client its role. Give --trusted-ca-file \
         with the CA that signs your clients' certificates; or, for etcd's behaviour (TLS \
         without client certificates), pass --client-cert-auth=false: a caller without a \
         certificate may then use etcd's API only (KV, Watch, Lease, Cluster, Maintenance, \
         Auth, the JSON gateway and /metrics) as etcd's users and roles allow (anything in \
         etcd's keyspace until `etcdctl auth enable`), and none of secretd's secrets, configs, \
         tasks, settings or agent APIs"
    )
}

/// A server config; when `requires_client_certs`, clients must present a
/// certificate from `trusted_ca`.
pub fn server_config(f: &TlsFiles, flag: &str) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?;
    let builder = if requires_client_certs(f.client_cert_auth, &f.trusted_ca) {
        let ca = f.trusted_ca.as_ref().ok_or_else(|| no_trusted_ca(flag))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca)? {
            roots
                .add(c)
                .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| anyhow!("{}: {e}", ca.display()))?;
        builder.with_client_cert_verifier(Arc::new(PlainerAlerts(verifier)))
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder
        .with_single_cert(read_certs(&f.cert)?, read_key(&f.key)?)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable certificate and key",
                f.cert.display(),
                f.key.display()
            )
        })?;
    // gRPC over HTTP/2; etcd's JSON gateway also over HTTP/1.1.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// WebPKI's client verifier, with one alert changed: rustls answers a
/// certificate that is not valid *yet* with `certificate_expired` (which
/// RFC 8446 allows: "expired or not currently valid"), and a client then
/// reports an expired certificate, which sends its operator the wrong way.
/// We answer `certificate_unknown` and keep the exact reason for our log.
#[derive(Debug)]
struct PlainerAlerts(Arc<dyn rustls::server::danger::ClientCertVerifier>);

/// rustls logs this error with `{:?}`, so Debug reads as a sentence.
struct NotValidYet(String);

impl std::fmt::Debug for NotValidYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for NotValidYet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client certificate is not valid yet ({})", self.0)
    }
}

impl std::error::Error for NotValidYet {}

impl rustls::server::danger::ClientCertVerifier for PlainerAlerts {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        use rustls::{CertificateError as C, Error as E};
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| match e {
                E::InvalidCertificate(C::NotValidYet) => {
                    E::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(NotValidYet(
                        "its notBefore is in the future".into(),
                    )))))
                }
                E::InvalidCertificate(C::NotValidYetContext { time, not_before }) => {
                    E::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(NotValidYet(
                        format!(
                            "its notBefore is {} s from now",
                            not_before.as_secs().saturating_sub(time.as_secs())
                        ),
                    )))))
                }
                e => e,
            })
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The subject's common name, which etcd takes for the user name of a
/// client that sends no token once auth is enabled.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

pub use secretd_client::ClientTls;

static PEER_CLIENT: OnceLock<Option<ClientTls>> = OnceLock::new();
static PEER_RUSTLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Sets the TLS client config of this member's raft streams (`peer::raw`):
/// the cluster's CA, and the member's certificate as client identity.
pub fn set_peer_raw_client(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_root_certificates(roots);
    let cfg = match (cert, key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(read_certs(c)?, read_key(k)?)
            .with_context(|| {
                format!(
                    "{} and {} do not make a usable certificate and key",
                    c.display(),
                    k.display()
                )
            })?,
        _ => builder.with_no_client_auth(),
    };
    let _ = PEER_RUSTLS.set(Arc::new(cfg));
    Ok(())
}

pub fn peer_client_config() -> Option<Arc<rustls::ClientConfig>> {
    PEER_RUSTLS.get().cloned()
}

/// Sets how this member connects to other members (once, at start).
pub fn set_peer_client(tls: Option<ClientTls>) {
    let _ = PEER_CLIENT.set(tls);
}

/// An endpoint for a member's peer URL, with the member's TLS identity
/// when peer URLs are https.
pub fn peer_endpoint(url: &str) -> Result<Endpoint> {
    let ep = Endpoint::from_shared(url.to_string()).map_err(|e| anyhow!("peer URL {url}: {e}"))?;
    if url.starts_with("https://") {
        let tls = PEER_CLIENT
            .get()
            .and_then(|t| t.as_ref())
            .ok_or_else(|| anyhow!("peer URL {url} is https but this member has no --peer-cert-file/--peer-trusted-ca-file"))?;
        return ep
            .tls_config(tls.config())
            .map_err(|e| anyhow!("peer URL {url}: {e}"));
    }
    Ok(ep)
}
