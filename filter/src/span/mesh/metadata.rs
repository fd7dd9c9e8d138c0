//! Route metadata: which Istio VirtualService routed the request.
//!
//! Istio stamps each route it generates with `filter_metadata.istio.config`, the API path of the
//! config object behind it (`/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`).
//! A canary split is a VirtualService, so naming it on the span says which experiment sent the
//! request where it went.

use crate::protobuf::{struct_entries, value_str};
use crate::span::SpanRecord;

/// A config object named by an Istio API path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigRef<'a> {
    /// e.g. `virtual-service`, `destination-rule`.
    pub kind: &'a [u8],
    /// The namespace of the resource.
    pub namespace: &'a [u8],
    /// The resource's name.
    pub name: &'a [u8],
}

/// `filter_metadata.istio.config` from a serialized `envoy.config.core.v3.Metadata`.
pub fn istio_config(metadata: &[u8]) -> Option<&[u8]> {
    // `filter_metadata` (field 1) is a map, so its entries have a Struct's entry shape.
    let (_, istio) = struct_entries(metadata).find(|(k, _)| *k == b"istio")?;
    let (_, config) = struct_entries(istio).find(|(k, _)| *k == b"config")?;
    value_str(config)
}

/// Parses `/apis/<group>/<version>/namespaces/<ns>/<kind>/<name>`.
pub fn parse_config_path(path: &[u8]) -> Option<ConfigRef<'_>> {
    let mut parts = path.strip_prefix(b"/apis/")?.split(|&b| b == b'/');
    let (_group, _version) = (parts.next()?, parts.next()?);
    if parts.next()? != b"namespaces" {
        return None;
    }
    let (namespace, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [namespace, kind, name].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(ConfigRef {
        kind,
        namespace,
        name,
    })
}

/// Records `mesh.virtual_service.name` and `.namespace` from route metadata.
pub fn record(route_metadata: &[u8], rec: &mut SpanRecord) {
    let Some(vs) = istio_config(route_metadata)
        .and_then(parse_config_path)
        .filter(|c| c.kind == b"virtual-service")
    else {
        return;
    };
    rec.str("mesh.virtual_service.name", vs.name);
    rec.str("mesh.virtual_service.namespace", vs.namespace);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;
    use crate::test_support::protobuf::{map_entries, string_value, struct_value};

    /// A `Metadata` with `filter_metadata` entries of the given structs.
    fn metadata(filters: &[(&str, Vec<u8>)]) -> Vec<u8> {
        map_entries(filters)
    }

    fn istio(config: &str) -> Vec<u8> {
        metadata(&[
            (
                "envoy.lb",
                struct_value(&[("canary", string_value("true"))]),
            ),
            ("istio", struct_value(&[("config", string_value(config))])),
        ])
    }

    #[test]
    fn virtual_service_from_route_metadata() {
        let m =
            istio("/apis/networking.istio.io/v1alpha3/namespaces/bookinfo/virtual-service/reviews");
        let mut rec = SpanRecord::default();
        record(&m, &mut rec);
        let s = |k| match rec.get(k) {
            Some(Value::Str(r)) => rec.text(r).to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(s("mesh.virtual_service.name"), b"reviews");
        assert_eq!(s("mesh.virtual_service.namespace"), b"bookinfo");
    }

    #[test]
    fn other_objects_and_garbage_record_nothing() {
        for m in [
            istio("/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"),
            istio("/apis/networking.istio.io/v1/namespaces//virtual-service/reviews"),
            istio("/apis/networking.istio.io/v1/namespaces/a/virtual-service/b/c"),
            istio("reviews"),
            metadata(&[("envoy.lb", struct_value(&[("config", string_value("x"))]))]),
            vec![],
            vec![0x0a, 0xff],
        ] {
            let mut rec = SpanRecord::default();
            record(&m, &mut rec);
            assert!(rec.attrs.is_empty());
        }
    }

    #[test]
    fn config_paths() {
        assert_eq!(
            parse_config_path(b"/apis/networking.istio.io/v1/namespaces/ns/virtual-service/vs"),
            Some(ConfigRef {
                kind: b"virtual-service",
                namespace: b"ns",
                name: b"vs"
            })
        );
        assert_eq!(parse_config_path(b"/apis/x/v1/ns/a/b/c"), None);
        assert_eq!(parse_config_path(b"/apis/x"), None);
        assert_eq!(parse_config_path(b""), None);
    }
}
