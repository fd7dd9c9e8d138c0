//! The resource every bridge batch carries: who this pod is, from the Kubernetes downward API.
//!
//! Environment variables give the pod's name, namespace, uid and node; the labels file gives
//! the workload's name and version. `service.version` comes from the pod's `version` label so
//! that canary and baseline pods are told apart by version.

use std::collections::BTreeMap;

use meshtrace::config::Config;
use meshtrace::export::otlp::ResourceValue;
use meshtrace::resource::NodeInfo;

/// Downward-API environment variables the core's node facts have no field for, and the
/// resource keys they fill.
const ENV_KEYS: [(&str, &str); 2] = [("POD_UID", "k8s.pod.uid"), ("NODE_NAME", "k8s.node.name")];

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

/// Hands the pod's facts to the core's one resource mechanism: pod name, namespace and labels
/// become the node (from which the core derives `service.*` and `k8s.*` exactly as for an
/// Envoy node), and what a node has no field for (`service.mesh = linkerd`, the pod uid, the
/// node name, `k8s.pod.label.*`) is added to the config's `resource` map. Keys the config
/// already sets are left alone: the operator's word wins, as it does in the filter.
pub fn pod_node(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    labels: &BTreeMap<String, String>,
) -> NodeInfo {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut extra: Vec<(String, String)> = vec![("service.mesh".into(), "linkerd".into())];
    for (name, key) in ENV_KEYS {
        if let Some(v) = var(name) {
            extra.push((key.into(), v));
        }
    }
    for (k, v) in labels {
        extra.push((format!("k8s.pod.label.{k}"), v.clone()));
    }
    for (k, v) in extra {
        config.resource.entry(k).or_insert(v);
    }
    NodeInfo {
        pod_name: var("POD_NAME"),
        namespace: var("POD_NAMESPACE"),
        labels: labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..NodeInfo::default()
    }
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
            "NODE_NAME" => Some("node-1".to_string()),
            _ => None,
        };
        let mut config = Config::from_json(br#"{"collector":{"cluster":"c"}}"#).unwrap();
        let node = pod_node(&mut config, &env, &labels);
        let r = node.resource(config.service_name.as_deref(), &config.resource);
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
                "service.namespace=shop",
                "k8s.namespace.name=shop",
                "k8s.pod.name=web-7d4b9-x2x",
                "k8s.node.name=node-1",
                "k8s.pod.label.app=web",
                "k8s.pod.label.version=v2",
                "service.mesh=linkerd",
                "telemetry.sdk.name=meshtrace",
                "telemetry.sdk.language=rust",
                &format!("telemetry.sdk.version={}", meshtrace::VERSION),
            ]
        );
        let relay: Vec<_> = relay_attributes(&r).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            relay,
            [
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.node.name",
                "k8s.pod.label.app",
                "k8s.pod.label.version",
                "service.mesh",
            ]
        );
        // The config's own `service_name` and `resource` win over the pod's facts.
        let mut config = Config::from_json(
            br#"{"service_name":"checkout","collector":{"cluster":"c"},"resource":{"service.mesh":"both"}}"#,
        )
        .unwrap();
        let node = pod_node(&mut config, &env, &labels);
        let r = node.resource(config.service_name.as_deref(), &config.resource);
        assert_eq!(r[0].1, ResourceValue::Str("checkout".into()));
        assert!(r.contains(&("service.mesh".into(), ResourceValue::Str("both".into()))));
    }
}
