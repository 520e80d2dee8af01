//! Mutual TLS and roles on a 3-member cluster whose client and peer URLs are
//! all https: only certificates from the cluster's CA get in, each only as
//! far as its role allows, and each refusal is logged clearly.
//!
//! - `certificates`: who gets in, and as whom.
//! - `roles`: the role matrix over gRPC and the JSON gateway.
//! - `limits`: connection floods, agent streams and refusal logging.
//!
//! `rustls_client` here is shared with `floods`.

mod certificates;
mod limits;
mod roles;

use std::path::Path;

use crate::common::Cluster;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A rustls client presenting `cert` from the cluster's dev CA.
pub(crate) fn rustls_client(c: &Cluster, cert: &str) -> rustls::ClientConfig {
    let certs = c.tls.clone().unwrap();
    let (crt, key) = c.cert(cert);
    let mut roots = rustls::RootCertStore::empty();
    for ca in secretd_api::tls::read_certs(&certs.join("ca.pem")).unwrap() {
        roots.add(ca).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            secretd_api::tls::read_certs(Path::new(&crt)).unwrap(),
            secretd_api::tls::read_key(Path::new(&key)).unwrap(),
        )
        .unwrap()
}
