//! A development PKI (`secretd certs init`): a CA, and certificates for
//! members, an admin, node agents and secret drivers, each with its role
//! as a SAN URI.
//! Production users bring their own CA; these files are for one machine.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::SPIFFE_PREFIX;

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "secretd");
    dn
}

impl Ca {
    pub fn new(common_name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name = name(common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = p.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// A CA from its certificate and key files (as `init` writes them).
    pub fn load(cert: &Path, key: &Path) -> Result<Ca> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let params = CertificateParams::from_ca_cert_pem(&read(cert)?)
            .with_context(|| format!("{} is not a CA certificate", cert.display()))?;
        let key = KeyPair::from_pem(&read(key)?)
            .with_context(|| format!("{} is not a private key", key.display()))?;
        // Same subject and key: what it signs chains to the original.
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate for `role` (the SAN URI's path after
    /// `spiffe://secretd/`). Members also get server names for loopback
    /// and `hosts`. `expired` makes one that ended in 2020 (for tests).
    pub fn issue(
        &self,
        role: &str,
        member_hosts: Option<&[String]>,
        expired: bool,
    ) -> Result<Issued> {
        let mut p = client_params(role)?;
        if let Some(hosts) = member_hosts {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            names.extend(hosts.iter().cloned());
            for h in names {
                p.subject_alt_names.push(match h.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(h.as_str().try_into()?),
                });
            }
        }
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        } else {
            p.not_after = rcgen::date_time_ymd(2036, 1, 1);
        }
        self.sign(p)
    }

    /// A client certificate for `role` that becomes valid only in 2090
    /// (for tests of how such a certificate is refused).
    pub fn issue_not_yet_valid(&self, role: &str) -> Result<Issued> {
        let mut p = client_params(role)?;
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
        self.sign(p)
    }

    fn sign(&self, p: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A client certificate's parameters for `role`: its name, its SAN URI,
/// client authentication.
fn client_params(role: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(role);
    let uri = format!("{SPIFFE_PREFIX}{role}");
    p.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// Creates `path` whole or not at all, never over an existing file
/// (`secretd_crypto::create_whole`): an interrupted `certs init` left a
/// truncated key the next run refused to replace.
fn write(path: &Path, data: &str, mode: u32) -> Result<()> {
    if path.exists() {
        bail!("cannot create {}: it already exists", path.display());
    }
    secretd_crypto::create_whole(path, data.as_bytes(), mode)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Writes `<name>.pem` and `<name>-key.pem` (0600) into `dir`.
pub fn save(dir: &Path, file: &str, i: &Issued) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}-key.pem"));
    write(&cert, &i.cert_pem, 0o644)?;
    write(&key, &i.key_pem, 0o600)?;
    Ok((cert, key))
}

/// `secretd certs init`: a new CA in `dir` and certificates for the given
/// members (`name` or `name=host,host`), node agents, secret drivers and
/// one admin.
pub fn init(
    dir: &Path,
    members: &[String],
    nodes: &[String],
    drivers: &[String],
) -> Result<Vec<PathBuf>> {
    if dir.join("ca.pem").exists() {
        bail!(
            "{} already holds a CA (ca.pem); use another directory or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = Ca::new("secretd dev CA")?;
    let mut out = Vec::new();
    let ca_pem = dir.join("ca.pem");
    write(&ca_pem, &ca.cert_pem(), 0o644)?;
    write(&dir.join("ca-key.pem"), &ca.key.serialize_pem(), 0o600)?;
    out.push(ca_pem);
    for m in members {
        let (n, hosts) = match m.split_once('=') {
            Some((n, h)) => (n, h.split(',').map(str::to_string).collect()),
            None => (m.as_str(), Vec::new()),
        };
        if !secretd_secrets::validate::is_valid_name(n) {
            bail!("invalid member name {n:?}");
        }
        let (c, _) = save(
            dir,
            &format!("member-{n}"),
            &ca.issue(&format!("member/{n}"), Some(&hosts), false)?,
        )?;
        out.push(c);
    }
    let named = nodes
        .iter()
        .map(|n| ("node", n))
        .chain(drivers.iter().map(|d| ("driver", d)));
    for (role, n) in named {
        if !secretd_secrets::validate::is_valid_name(n) {
            bail!("invalid {role} name {n:?}");
        }
        let (c, _) = save(
            dir,
            &format!("{role}-{n}"),
            &ca.issue(&format!("{role}/{n}"), None, false)?,
        )?;
        out.push(c);
    }
    let (c, _) = save(dir, "admin", &ca.issue("admin", None, false)?)?;
    out.push(c);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    /// A file is written whole with its mode, a `.tmp` left by an
    /// interrupted run does not stop the next, and nothing is overwritten.
    #[test]
    fn files_appear_whole_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k-key.pem");
        std::fs::write(dir.path().join("k-key.pem.tmp"), b"").unwrap();
        super::write(&p, "secret", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("k-key.pem.tmp").exists());
        let again = super::write(&p, "other", 0o600).unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret");
    }
}
