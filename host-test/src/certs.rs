//! A throwaway mesh certificate authority: one CA and leaf certificates shaped like Istio's
//! workload certificates (subject `O=<trust domain>,CN=<name>`, a SPIFFE URI SAN, `localhost`
//! as DNS SAN), written as PEM files for Envoy's `tls_certificates` and `trusted_ca`.
//!
//! Made with rcgen (pure Rust + ring), so no `openssl` binary is needed on a fresh machine.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// The trust domain every certificate names (Istio's default, `cluster.local`).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// A CA whose files live in a fresh directory, removed on drop: `ca.crt`, then
/// `<name>.crt` / `<name>.key` for every [`MeshCa::issue`].
pub struct MeshCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl MeshCa {
    /// A new CA (common name `meshtrace test CA`), its certificate written to `ca.crt` in a
    /// fresh temporary directory whose name starts with `meshtrace-<tag>-certs`.
    ///
    /// # Errors
    /// When key generation, signing or writing the file fails.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "meshtrace-{tag}-certs-{}-{}",
            std::process::id(),
            crate::envoy::free_port()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "meshtrace test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
        Ok(Self {
            dir,
            issuer: Issuer::new(ca, ca_key),
        })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues `<name>.crt` and `<name>.key`: subject `O=cluster.local,CN=<common_name>`, URI SAN
    /// `spiffe_id` (e.g. `spiffe://cluster.local/ns/demo/sa/frontend`) and DNS SAN `localhost`.
    /// No extended key usage, so the certificate serves as client and as server certificate.
    ///
    /// # Errors
    /// When `spiffe_id` is not an IA5 string, or signing or writing fails.
    pub fn issue(&self, name: &str, common_name: &str, spiffe_id: &str) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
        p.distinguished_name
            .push(DnType::OrganizationName, TRUST_DOMAIN);
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.subject_alt_names.push(SanType::URI(
            spiffe_id
                .try_into()
                .with_context(|| format!("spiffe_id: not an IA5 string: {spiffe_id:?}"))?,
        ));
        let cert = p.signed_by(&key, &self.issuer)?;
        std::fs::write(self.dir.join(format!("{name}.crt")), cert.pem())?;
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem())?;
        Ok(())
    }
}

impl Drop for MeshCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
