//! Istio cluster names: which way the request went, to which port, subset and service.
//!
//! Istio names clusters `direction|port|subset|host` (`outbound|9080|v2|reviews.default.svc.cluster.local`,
//! `inbound|8080||`), and the same key with `_.` separators in its DNS-SRV form
//! (`outbound_.9080_.v2_.reviews.default.svc.cluster.local`). An ambient waypoint's clusters
//! are `inbound-vip|port|protocol[/subset]|host` (`inbound-vip|9080|http|reviews.default.svc.cluster.local`,
//! `inbound-vip|9080|http/v2|...`): the subset slot starts with the protocol (Istio's
//! `pilot/pkg/networking/core/cluster_waypoint.go`). Anything else is a plain Envoy cluster: it
//! is still recorded by name, but nothing is inferred from it.

/// Which listener side Istio built the cluster for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterDirection {
    /// `inbound|...`: the sidecar's side of a server.
    Inbound,
    /// `inbound-vip`: inbound traffic addressed to a service VIP (ambient waypoints).
    InboundVip,
    /// `outbound|...`: a client going to a service.
    Outbound,
}

/// The parts of an Istio subset key, borrowed from the cluster name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IstioCluster<'a> {
    /// Which listener side the cluster serves.
    pub direction: ClusterDirection,
    /// The service port.
    pub port: u16,
    /// The DestinationRule subset; empty when the cluster has no subset (the whole service).
    pub subset: &'a [u8],
    /// `http` or `tcp` on waypoint (`inbound-vip`) clusters, which name the protocol before
    /// the subset; empty on sidecar clusters.
    pub protocol: &'a [u8],
    /// The service host (FQDN); empty on inbound clusters.
    pub host: &'a [u8],
}

/// A Kubernetes Service named by its cluster-local host `<name>.<namespace>.svc[.<domain>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubernetesService<'a> {
    /// The Service's name (`reviews`).
    pub name: &'a [u8],
    /// The Service's namespace (`default`).
    pub namespace: &'a [u8],
}

impl<'a> IstioCluster<'a> {
    /// The span kind a cluster implies: outbound clusters carry client traffic.
    pub fn is_outbound(&self) -> bool {
        self.direction == ClusterDirection::Outbound
    }

    /// The Kubernetes Service the cluster's host names (`reviews.default.svc.cluster.local` →
    /// `reviews` in `default`); `None` for hosts outside `svc` (ServiceEntry hosts, external
    /// names) and for inbound sidecar clusters, which have no host.
    pub fn kubernetes_service(&self) -> Option<KubernetesService<'a>> {
        let host: &'a [u8] = self.host;
        // The first two dots, a word at a time (once per span), then `svc` as a whole label.
        let dot = crate::text::find_byte(host, b'.')?;
        let (name, rest) = (&host[..dot], &host[dot + 1..]);
        let dot = crate::text::find_byte(rest, b'.')?;
        let (namespace, rest) = (&rest[..dot], &rest[dot + 1..]);
        let svc = rest.strip_prefix(b"svc")?;
        (matches!(svc.first(), None | Some(b'.')) && !name.is_empty() && !namespace.is_empty())
            .then_some(KubernetesService { name, namespace })
    }
}

/// Parses an Istio cluster name in either separator form; `None` for any other name.
pub fn parse(name: &[u8]) -> Option<IstioCluster<'_>> {
    let mut parts: [&[u8]; 4] = [&[]; 4];
    if !split4_pipe(name, &mut parts) && !split4(name, b"_.", &mut parts) {
        return None;
    }
    let direction = match parts[0] {
        b"inbound" => ClusterDirection::Inbound,
        b"inbound-vip" => ClusterDirection::InboundVip,
        b"outbound" => ClusterDirection::Outbound,
        _ => return None,
    };
    // A waypoint's subset slot is `<protocol>[/<subset>]`.
    let (protocol, subset) = match direction {
        ClusterDirection::InboundVip => match parts[2].iter().position(|&b| b == b'/') {
            Some(i) => (&parts[2][..i], &parts[2][i + 1..]),
            None => (parts[2], &[][..]),
        },
        _ => (&[][..], parts[2]),
    };
    Some(IstioCluster {
        direction,
        port: parse_port(parts[1])?,
        subset,
        protocol,
        host: parts[3],
    })
}

/// Splits `s` into four parts at the first three `sep`s; the rest is the host. A `|` key with
/// a fifth part is not Istio's; a `_.` host is left whole (only three separators count).
fn split4<'a>(s: &'a [u8], sep: &[u8], out: &mut [&'a [u8]; 4]) -> bool {
    let mut rest = s;
    for slot in out.iter_mut().take(3) {
        match find(rest, sep) {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + sep.len()..];
            }
            None => return false,
        }
    }
    // A fifth `|` part means this is not a subset key.
    if sep == b"|" && crate::text::find_byte(rest, b'|').is_some() {
        return false;
    }
    out[3] = rest;
    true
}

/// [`split4`] with `|`, the form of nearly every cluster name, in one pass: the `|` bytes of
/// each eight-byte word are found at once (an exact SWAR equality test), so a cluster name is
/// a handful of word steps instead of four searches.
fn split4_pipe<'a>(s: &'a [u8], out: &mut [&'a [u8]; 4]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut seps = [0usize; 3];
    let mut found = 0;
    let mut at = 0;
    while at < s.len() {
        let t = &s[at..];
        let w = match (t.first_chunk::<8>(), s.last_chunk::<8>()) {
            (Some(w), _) => u64::from_le_bytes(*w),
            // The tail as the name's last eight bytes, shifted down past those already
            // searched (zeros come in, and a zero byte is never `|`): no copy of a
            // run-time length, which would be a call.
            (None, Some(last)) => u64::from_le_bytes(*last) >> (8 * (8 - t.len())),
            (None, None) => {
                // A name under eight bytes, zero-padded.
                let mut b = [0u8; 8];
                b[..t.len()].copy_from_slice(t);
                u64::from_le_bytes(b)
            }
        };
        let x = w ^ (LO * u64::from(b'|'));
        // Exact per byte: the high bit is set where `x`'s byte is zero, and nowhere else.
        let mut hits = !(((x & LOW7) + LOW7) | x | LOW7);
        while hits != 0 {
            if found == 3 {
                // A fifth part: not a subset key.
                return false;
            }
            seps[found] = at + (hits.trailing_zeros() / 8) as usize;
            found += 1;
            hits &= hits - 1;
        }
        at += 8;
    }
    if found < 3 {
        return false;
    }
    let [a, b, c] = seps;
    out[0] = &s[..a];
    out[1] = &s[a + 1..b];
    out[2] = &s[b + 1..c];
    out[3] = &s[c + 1..];
    true
}

/// The first `needle` in `hay`: a byte scan for its first byte, then a check of the rest
/// (a window-by-window slice compare made cluster parsing a visible cost per span).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while let Some(i) = crate::text::find_byte(hay.get(at..)?, first) {
        let p = at + i;
        if hay[p + 1..].starts_with(rest) {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

#[inline]
fn parse_port(s: &[u8]) -> Option<u16> {
    crate::text::parse_port(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn pipe_split_is_the_general_split(
            s in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'|'),
                    proptest::strategy::Just(b'a'),
                    proptest::strategy::Just(0u8),
                    proptest::strategy::Just(0xfcu8),
                    proptest::prelude::any::<u8>(),
                ],
                0..40,
            )
        ) {
            let (mut ours, mut theirs): ([&[u8]; 4], [&[u8]; 4]) = ([&[]; 4], [&[]; 4]);
            let ok = split4(&s, b"|", &mut theirs);
            proptest::prop_assert_eq!(split4_pipe(&s, &mut ours), ok);
            if ok {
                proptest::prop_assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn pipe_form_outbound_with_subset() {
        let c = parse(b"outbound|9080|v2|reviews.default.svc.cluster.local").unwrap();
        assert_eq!(c.direction, ClusterDirection::Outbound);
        assert_eq!(c.port, 9080);
        assert_eq!(c.subset, b"v2");
        assert_eq!(c.host, b"reviews.default.svc.cluster.local");
        assert!(c.is_outbound());
    }

    #[test]
    fn pipe_form_inbound_and_no_subset() {
        let c = parse(b"inbound|8080||").unwrap();
        assert_eq!(c.direction, ClusterDirection::Inbound);
        assert_eq!(c.port, 8080);
        assert_eq!(c.subset, b"");
        assert_eq!(c.host, b"");
        assert!(!c.is_outbound());
        let c = parse(b"outbound|443||api.example.com").unwrap();
        assert_eq!(c.subset, b"");
        assert_eq!(c.host, b"api.example.com");
    }

    #[test]
    fn waypoint_clusters_name_the_protocol_before_the_subset() {
        let c = parse(b"inbound-vip|9080|http|reviews.default.svc.cluster.local").unwrap();
        assert_eq!(c.direction, ClusterDirection::InboundVip);
        assert_eq!(c.port, 9080);
        assert_eq!(c.protocol, b"http");
        assert_eq!(c.subset, b"");
        assert_eq!(c.host, b"reviews.default.svc.cluster.local");
        assert!(!c.is_outbound());
        let c = parse(b"inbound-vip|9080|http/v2|reviews.default.svc.cluster.local").unwrap();
        assert_eq!((c.protocol, c.subset), (&b"http"[..], &b"v2"[..]));
        let c = parse(b"inbound-vip|5432|tcp/primary|db.data.svc.cluster.local").unwrap();
        assert_eq!((c.protocol, c.subset), (&b"tcp"[..], &b"primary"[..]));
        // Sidecar clusters have no protocol slot: `http` there would be a subset's name.
        let c = parse(b"outbound|80|http|a.b.svc.cluster.local").unwrap();
        assert_eq!((c.protocol, c.subset), (&b""[..], &b"http"[..]));
    }

    proptest::proptest! {
        #[test]
        fn kubernetes_service_is_the_label_split(
            host in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::strategy::Just(&b"."[..]),
                    4 => proptest::strategy::Just(&b"svc"[..]),
                    2 => proptest::strategy::Just(&b"sv"[..]),
                    4 => proptest::strategy::Just(&b"reviews"[..]),
                    1 => proptest::strategy::Just(&b"x"[..]),
                ],
                0..8,
            ),
        ) {
            // The labels as a split on `.` reads them: `name.namespace.svc[.…]`.
            let host = host.concat();
            let mut labels = host.split(|&b| b == b'.');
            let want = match (labels.next(), labels.next(), labels.next()) {
                (Some(n), Some(ns), Some(b"svc")) if !n.is_empty() && !ns.is_empty() => {
                    Some((n.to_vec(), ns.to_vec()))
                }
                _ => None,
            };
            let c = IstioCluster {
                direction: ClusterDirection::Outbound,
                port: 80,
                subset: b"",
                protocol: b"",
                host: &host,
            };
            let got = c
                .kubernetes_service()
                .map(|s| (s.name.to_vec(), s.namespace.to_vec()));
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn kubernetes_services_from_the_host() {
        let svc = |name: &[u8]| {
            parse(name)
                .and_then(|c| c.kubernetes_service())
                .map(|s| (s.name.to_vec(), s.namespace.to_vec()))
        };
        let reviews = Some((b"reviews".to_vec(), b"default".to_vec()));
        assert_eq!(
            svc(b"inbound-vip|9080|http/v2|reviews.default.svc.cluster.local"),
            reviews
        );
        assert_eq!(
            svc(b"outbound|9080|v1|reviews.default.svc.cluster.local"),
            reviews
        );
        assert_eq!(svc(b"outbound_.9080_.v1_.reviews.default.svc"), reviews);
        // Not a Service of this cluster: a ServiceEntry host, a bare name, no host.
        assert_eq!(svc(b"outbound|443||api.example.com"), None);
        assert_eq!(svc(b"outbound|80||reviews"), None);
        assert_eq!(svc(b"inbound|8080||"), None);
        assert_eq!(svc(b"outbound|80||.default.svc.cluster.local"), None);
    }

    #[test]
    fn dns_srv_form() {
        let c = parse(b"outbound_.9080_.v2_.reviews.default.svc.cluster.local").unwrap();
        assert_eq!(c.direction, ClusterDirection::Outbound);
        assert_eq!(c.port, 9080);
        assert_eq!(c.subset, b"v2");
        assert_eq!(c.host, b"reviews.default.svc.cluster.local");
        let c = parse(b"outbound_.9080_._.reviews.default.svc.cluster.local").unwrap();
        assert_eq!(c.subset, b"");
        assert_eq!(c.host, b"reviews.default.svc.cluster.local");
    }

    #[test]
    fn other_names_are_not_istio() {
        for name in [
            &b"otel_collector"[..],
            b"",
            b"outbound|x|v2|h",
            b"outbound|99999|v2|h",
            b"sideways|80|v1|h",
            b"outbound|80|v1",
            b"outbound|80|v1|h|extra",
            b"BlackHoleCluster",
            b"PassthroughCluster",
        ] {
            assert_eq!(parse(name), None, "{}", String::from_utf8_lossy(name));
        }
    }
}
