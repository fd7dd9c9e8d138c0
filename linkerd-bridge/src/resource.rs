//! The resource every bridge batch carries: who this pod is, from the Kubernetes downward API.
//!
//! Environment variables give the pod's name, namespace, uid and node; the labels file gives
//! the workload's name and version. `service.version` comes from the pod's `version` label so
//! that canary and baseline pods are told apart by version.

use std::collections::BTreeMap;

use meshtrace::otlp::ResourceValue;

/// `service.name` when neither the config nor the labels name the service.
pub const DEFAULT_SERVICE_NAME: &str = "unknown_service:linkerd-bridge";

/// Downward-API environment variables and the resource keys they fill.
const ENV_KEYS: [(&str, &str); 4] = [
    ("POD_NAMESPACE", "k8s.namespace.name"),
    ("POD_NAME", "k8s.pod.name"),
    ("POD_UID", "k8s.pod.uid"),
    ("NODE_NAME", "k8s.node.name"),
];

/// Parses a downward-API labels file: one `key="value"` per line, values quoted the way Go's
/// `%q` quotes them. Lines that do not parse are skipped: a label we cannot read must not keep
/// the sidecar (and so the pod) from starting.
pub fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((k.trim().to_string(), unquote(v)))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Undoes Go's quoting for the escapes label values can contain.
fn unquote(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The bridge's resource attributes, in a stable order.
pub fn mesh_resource(
    configured_service_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    labels: &BTreeMap<String, String>,
) -> Vec<(String, ResourceValue)> {
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let service_name = configured_service_name
        .map(str::to_string)
        .or_else(|| label("app.kubernetes.io/name"))
        .or_else(|| label("app"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    let mut out = vec![("service.name".to_string(), ResourceValue::Str(service_name))];
    if let Some(v) = label("version").or_else(|| label("app.kubernetes.io/version")) {
        out.push(("service.version".into(), ResourceValue::Str(v)));
    }
    out.push(("service.mesh".into(), ResourceValue::Str("linkerd".into())));
    for (var, key) in ENV_KEYS {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            out.push((key.into(), ResourceValue::Str(v)));
        }
    }
    for (k, v) in labels {
        out.push((format!("k8s.pod.label.{k}"), ResourceValue::Str(v.clone())));
    }
    out.push((
        "telemetry.sdk.name".into(),
        ResourceValue::Str(meshtrace::SCOPE_NAME.into()),
    ));
    out.push((
        "telemetry.sdk.language".into(),
        ResourceValue::Str("rust".into()),
    ));
    out.push((
        "telemetry.sdk.version".into(),
        ResourceValue::Str(meshtrace::VERSION.into()),
    ));
    out
}

/// The attributes added to an application's relayed spans: where they ran, not who made them,
/// so the application's own `service.*` and `telemetry.sdk.*` stay its own.
pub fn relay_attributes(resource: &[(String, ResourceValue)]) -> Vec<(String, ResourceValue)> {
    resource
        .iter()
        .filter(|(k, _)| k == "service.mesh" || k.starts_with("k8s."))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file() {
        let l = parse_labels(
            "app=\"web\"\npod-template-hash=\"7d4b9\"\nversion=\"v2\"\nnote=\"a \\\"b\\\"\"\nbroken\n",
        );
        let got: Vec<_> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "app=web",
                "note=a \"b\"",
                "pod-template-hash=7d4b9",
                "version=v2"
            ]
        );
    }

    #[test]
    fn resource_from_downward_api() {
        let labels = parse_labels("app=\"web\"\nversion=\"v2\"\n");
        let env = |k: &str| match k {
            "POD_NAME" => Some("web-7d4b9-x2x".to_string()),
            "POD_NAMESPACE" => Some("shop".to_string()),
            _ => None,
        };
        let r = mesh_resource(None, &env, &labels);
        let s: Vec<String> = r
            .iter()
            .map(|(k, v)| match v {
                ResourceValue::Str(s) => format!("{k}={s}"),
                other => format!("{k}={other:?}"),
            })
            .collect();
        assert_eq!(
            s,
            [
                "service.name=web",
                "service.version=v2",
                "service.mesh=linkerd",
                "k8s.namespace.name=shop",
                "k8s.pod.name=web-7d4b9-x2x",
                "k8s.pod.label.app=web",
                "k8s.pod.label.version=v2",
                "telemetry.sdk.name=meshtrace",
                "telemetry.sdk.language=rust",
                &format!("telemetry.sdk.version={}", meshtrace::VERSION),
            ]
        );
        let relay: Vec<_> = relay_attributes(&r).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            relay,
            [
                "service.mesh",
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.pod.label.app",
                "k8s.pod.label.version"
            ]
        );
        let named = mesh_resource(Some("checkout"), &|_| None, &BTreeMap::new());
        assert_eq!(named[0].1, ResourceValue::Str("checkout".into()));
        assert_eq!(named[1].0, "service.mesh");
    }
}
