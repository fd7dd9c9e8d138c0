//! What Linkerd tells the application about a request, as span attributes.
//!
//! The Linkerd proxy sets `l5d-client-id` on inbound requests to the client's mTLS identity,
//! `<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`, and strips any value a
//! client sent itself, so inside the pod the header can be trusted.

/// The parts of a Linkerd workload identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The whole identity, as the proxy sent it.
    pub full: &'a [u8],
    /// `<sa>` and `<ns>`, present when the identity has the service-account form.
    pub service_account: Option<&'a [u8]>,
    /// The namespace, when the identity has the service-account form.
    pub namespace: Option<&'a [u8]>,
}

/// Longest identity accepted: a DNS name.
const MAX_IDENTITY: usize = 253;

/// Parses an `l5d-client-id` value; `None` when it is empty, too long or not a DNS-like name.
pub fn parse_identity(v: &[u8]) -> Option<Identity<'_>> {
    if v.is_empty() || v.len() > MAX_IDENTITY {
        return None;
    }
    let dns_like = v
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !dns_like {
        return None;
    }
    let mut labels = v.split(|&b| b == b'.');
    let sa = labels.next();
    let ns = labels.next();
    let kind = labels.next();
    let marker = labels.next();
    let control_ns = labels.next();
    let trust_domain = labels.next();
    let service_account_form = kind == Some(b"serviceaccount")
        && marker == Some(b"identity")
        && [sa, ns, control_ns, trust_domain]
            .iter()
            .all(|l| l.is_some_and(|l| !l.is_empty()));
    Some(Identity {
        full: v,
        service_account: sa.filter(|_| service_account_form),
        namespace: ns.filter(|_| service_account_form),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_identity() {
        let id = parse_identity(b"web.shop.serviceaccount.identity.linkerd.cluster.local").unwrap();
        assert_eq!(id.service_account, Some(&b"web"[..]));
        assert_eq!(id.namespace, Some(&b"shop"[..]));
        assert_eq!(
            id.full,
            b"web.shop.serviceaccount.identity.linkerd.cluster.local"
        );
    }

    #[test]
    fn other_forms() {
        let id = parse_identity(b"gateway.example.org").unwrap();
        assert_eq!((id.service_account, id.namespace), (None, None));
        assert_eq!(parse_identity(b""), None);
        assert_eq!(parse_identity(b"web shop"), None);
        assert_eq!(parse_identity(&[b'a'; 254]), None);
        let id = parse_identity(b"web.shop.serviceaccount.identity..local").unwrap();
        assert_eq!(id.service_account, None);
    }
}
