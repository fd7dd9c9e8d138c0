//! The peer's mTLS identity, from what Envoy exposes about the TLS session.
//!
//! Only names are recorded: the URI SAN (parsed as a SPIFFE id), the subject and the protocol
//! version. Certificates, digests and keys never reach a span.

use serde::Deserialize;

use crate::span::SpanRecord;

/// When the glue reads the peer's TLS identity (`identity` in the configuration). Each read is
/// one to four host calls, so by default only server spans, where the peer is the caller, pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// Server spans only: the downstream connection's mTLS peer.
    #[default]
    Inbound,
    /// Server spans, and client spans from the upstream connection's TLS session.
    Always,
    /// Never.
    Off,
}

/// An Istio-style SPIFFE id `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    /// The trust domain (`cluster.local`).
    pub trust_domain: &'a [u8],
    /// `None` when the path is not Istio's `ns/<ns>/sa/<sa>` form.
    pub namespace: Option<&'a [u8]>,
    /// The service account, in Istio's form.
    pub service_account: Option<&'a [u8]>,
}

/// Parses a SPIFFE id; `None` for any other URI or an empty trust domain.
pub fn parse_spiffe(uri: &[u8]) -> Option<SpiffeId<'_>> {
    let rest = uri.strip_prefix(b"spiffe://")?;
    let (trust_domain, path) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if trust_domain.is_empty() {
        return None;
    }
    let mut it = path.split(|&b| b == b'/');
    let (namespace, service_account) = match (it.next(), it.next(), it.next(), it.next(), it.next())
    {
        (Some(b"ns"), Some(ns), Some(b"sa"), Some(sa), None)
            if !ns.is_empty() && !sa.is_empty() =>
        {
            (Some(ns), Some(sa))
        }
        _ => (None, None),
    };
    Some(SpiffeId {
        trust_domain,
        namespace,
        service_account,
    })
}

/// Which side of the TLS session the peer is, which decides the subject attribute's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is the client (a server span reading `connection.*`).
    Client,
    /// The peer is the server (a client span reading `upstream.*`).
    Server,
}

/// What the host reported about the TLS session with the peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsFacts<'a> {
    /// `connection.mtls`: TLS with a peer certificate. `None` when not read (upstream side).
    pub mtls: Option<bool>,
    /// e.g. `TLSv1.3`.
    pub version: Option<&'a [u8]>,
    /// The peer certificate's URI SAN (a SPIFFE id in a mesh).
    pub peer_uri_san: Option<&'a [u8]>,
    /// The peer certificate's subject.
    pub peer_subject: Option<&'a [u8]>,
}

impl TlsFacts<'_> {
    /// Writes the identity attributes.
    pub fn record(&self, role: PeerRole, rec: &mut SpanRecord) {
        if let Some(m) = self.mtls {
            rec.bool("connection.mtls", m);
        }
        if let Some(v) = self.version.and_then(tls_version) {
            rec.str("tls.protocol.name", b"tls");
            rec.str("tls.protocol.version", v);
        }
        if let Some(san) = self.peer_uri_san {
            if let Some(id) = parse_spiffe(san) {
                rec.str("mesh.peer.spiffe_id", san);
                if let (Some(ns), Some(sa)) = (id.namespace, id.service_account) {
                    rec.str("mesh.peer.namespace", ns);
                    rec.str("mesh.peer.service_account", sa);
                }
            }
        }
        if let Some(subject) = self.peer_subject.filter(|s| !s.is_empty()) {
            let key = match role {
                PeerRole::Client => "tls.client.subject",
                PeerRole::Server => "tls.server.subject",
            };
            rec.str(key, subject);
        }
    }
}

/// `TLSv1.3` → `1.3`, as `tls.protocol.version` wants; other spellings are not TLS versions.
fn tls_version(v: &[u8]) -> Option<&[u8]> {
    v.strip_prefix(b"TLSv").filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    use crate::test_support::str_attr as s;

    #[test]
    fn istio_spiffe_ids() {
        let id = parse_spiffe(b"spiffe://cluster.local/ns/bookinfo/sa/reviews").unwrap();
        assert_eq!(id.trust_domain, b"cluster.local");
        assert_eq!(id.namespace, Some(&b"bookinfo"[..]));
        assert_eq!(id.service_account, Some(&b"reviews"[..]));
    }

    #[test]
    fn other_spiffe_paths_keep_only_the_trust_domain() {
        for uri in [
            &b"spiffe://example.org/workload/a"[..],
            b"spiffe://example.org",
            b"spiffe://example.org/ns//sa/x",
            b"spiffe://example.org/ns/a/sa/b/extra",
        ] {
            let id = parse_spiffe(uri).unwrap();
            assert_eq!(id.trust_domain, b"example.org");
            assert_eq!(id.namespace, None);
        }
        assert_eq!(parse_spiffe(b"spiffe:///ns/a/sa/b"), None);
        assert_eq!(parse_spiffe(b"https://example.org/ns/a/sa/b"), None);
        assert_eq!(parse_spiffe(b""), None);
    }

    #[test]
    fn records_inbound_mtls_identity() {
        let mut rec = SpanRecord::default();
        TlsFacts {
            mtls: Some(true),
            version: Some(b"TLSv1.3"),
            peer_uri_san: Some(b"spiffe://cluster.local/ns/default/sa/productpage"),
            peer_subject: Some(b"O=cluster.local"),
        }
        .record(PeerRole::Client, &mut rec);
        assert_eq!(rec.get("connection.mtls"), Some(&Value::Bool(true)));
        assert_eq!(s(&rec, "tls.protocol.name").as_deref(), Some("tls"));
        assert_eq!(s(&rec, "tls.protocol.version").as_deref(), Some("1.3"));
        assert_eq!(
            s(&rec, "mesh.peer.spiffe_id").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/productpage")
        );
        assert_eq!(s(&rec, "mesh.peer.namespace").as_deref(), Some("default"));
        assert_eq!(
            s(&rec, "mesh.peer.service_account").as_deref(),
            Some("productpage")
        );
        assert_eq!(
            s(&rec, "tls.client.subject").as_deref(),
            Some("O=cluster.local")
        );
    }

    #[test]
    fn plaintext_and_non_spiffe_peers() {
        let mut rec = SpanRecord::default();
        TlsFacts {
            mtls: Some(false),
            ..Default::default()
        }
        .record(PeerRole::Client, &mut rec);
        assert_eq!(rec.get("connection.mtls"), Some(&Value::Bool(false)));
        assert_eq!(rec.attrs.len(), 1);
        let mut rec = SpanRecord::default();
        TlsFacts {
            mtls: None,
            version: Some(b"TLSv1.2"),
            peer_uri_san: Some(b"https://not-spiffe"),
            peer_subject: Some(b"CN=api"),
        }
        .record(PeerRole::Server, &mut rec);
        assert_eq!(rec.get("connection.mtls"), None);
        assert_eq!(rec.get("mesh.peer.spiffe_id"), None);
        assert_eq!(s(&rec, "tls.server.subject").as_deref(), Some("CN=api"));
        assert_eq!(s(&rec, "tls.protocol.version").as_deref(), Some("1.2"));
    }
}
