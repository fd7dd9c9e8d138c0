//! The manifests in `istio/`, checked the way a cluster would check them, offline.
//!
//! - [`Crds`]: Istio's CustomResourceDefinitions and their OpenAPI v3 schemas.
//! - [`Manifest`]: one YAML document of a file in `istio/`.
//! - [`SchemaCheck`]: a manifest against the schema of its kind, with Kubernetes' strict
//!   field validation (unknown fields are errors, as `kubectl apply` reports them).
//! - [`istio_rules`]: the few CEL rules of those schemas that matter for plugins.
//! - [`plugin_config_json`]: the `pluginConfig` as the filter receives it from Istio.
//! - [`Pins`]: the image tag and `sha256` values `make istio` writes after a build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use jsonschema::error::ValidationErrorKind;
use serde_json::{json, Map, Value};

use crate::envoy::workspace_root;

/// Istio's CRD file: `MESHTRACE_ISTIO_CRDS`, else `../shared/istio/` beside the workspace.
pub fn crd_path() -> PathBuf {
    std::env::var_os("MESHTRACE_ISTIO_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("../shared/istio/customresourcedefinitions.gen.yaml")
        })
}

/// The manifests directory of the workspace.
pub fn manifests_dir() -> PathBuf {
    workspace_root().join("istio")
}

/// Every CRD's served versions: `(apiVersion, kind)` to its `openAPIV3Schema`.
#[derive(Debug)]
pub struct Crds {
    schemas: BTreeMap<(String, String), Value>,
}

impl Crds {
    /// Reads and parses the CRD file at `path`.
    ///
    /// # Errors
    /// When it cannot be read (naming `MESHTRACE_ISTIO_CRDS`) or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading Istio's CRDs at {} (set MESHTRACE_ISTIO_CRDS to another copy)",
                path.display()
            )
        })?;
        Self::parse(&text)
    }

    /// Parses the CRDs of a YAML stream.
    ///
    /// # Errors
    /// When the YAML is malformed or a CRD has no schema.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut schemas = BTreeMap::new();
        for doc in yaml_documents(text)? {
            if doc["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let spec = &doc["spec"];
            let group = spec["group"].as_str().context("CRD without spec.group")?;
            let kind = spec["names"]["kind"]
                .as_str()
                .context("CRD without spec.names.kind")?;
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["served"] == false {
                    continue;
                }
                let name = v["name"].as_str().context("CRD version without a name")?;
                let schema = v["schema"]["openAPIV3Schema"].clone();
                schemas.insert((format!("{group}/{name}"), kind.to_string()), schema);
            }
        }
        if schemas.is_empty() {
            bail!("no CustomResourceDefinition with a served version found");
        }
        Ok(Self { schemas })
    }

    /// The kinds defined, e.g. `WasmPlugin`.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.schemas.keys().map(|(_, k)| k.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    /// The `apiVersion`s served for `kind`.
    pub fn versions(&self, kind: &str) -> Vec<&str> {
        self.schemas
            .keys()
            .filter(|(_, k)| k == kind)
            .map(|(v, _)| v.as_str())
            .collect()
    }

    /// The OpenAPI schema of `kind` at `api_version`.
    pub fn schema(&self, api_version: &str, kind: &str) -> Option<&Value> {
        self.schemas
            .get(&(api_version.to_string(), kind.to_string()))
    }
}

/// Parses every document of a YAML stream into JSON values (empty documents skipped).
pub fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).with_context(|| format!("YAML document {}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// One document of a manifest file.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The file, relative to the workspace (`istio/wasmplugin.yaml`).
    pub file: String,
    /// The parsed document.
    pub doc: Value,
}

impl Manifest {
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }

    /// `file: Kind namespace/name`, the prefix of every message about this document.
    pub fn label(&self) -> String {
        let ns = self.doc["metadata"]["namespace"].as_str().unwrap_or("");
        format!("{}: {} {ns}/{}", self.file, self.kind(), self.name())
    }
}

/// Every document of every `*.yaml` under `dir`, files in path order.
pub fn load_manifests(dir: &Path) -> anyhow::Result<Vec<Manifest>> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    let root = workspace_root();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let file = f
            .strip_prefix(&root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        for doc in yaml_documents(&text).with_context(|| file.clone())? {
            out.push(Manifest {
                file: file.clone(),
                doc,
            });
        }
    }
    Ok(out)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.is_dir() {
            collect_yaml(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Validates manifests against their kind's schema.
pub struct SchemaCheck<'a> {
    crds: &'a Crds,
    compiled: BTreeMap<(String, String), jsonschema::Validator>,
}

impl<'a> SchemaCheck<'a> {
    /// A checker that compiles each schema once, on first use.
    pub fn new(crds: &'a Crds) -> Self {
        Self {
            crds,
            compiled: BTreeMap::new(),
        }
    }

    /// Every problem with `m`, each as `file: Kind ns/name: field: message`.
    pub fn check(&mut self, m: &Manifest) -> Vec<String> {
        let label = m.label();
        let (Some(api_version), Some(kind)) =
            (m.doc["apiVersion"].as_str(), m.doc["kind"].as_str())
        else {
            return vec![format!("{}: apiVersion and kind are required", m.file)];
        };
        if self.crds.versions(kind).is_empty() {
            return vec![format!(
                "{label}: kind {kind:?} is not one of the kinds Istio's CRDs define ({})",
                self.crds.kinds().join(", ")
            )];
        }
        let key = (api_version.to_string(), kind.to_string());
        if !self.compiled.contains_key(&key) {
            let Some(schema) = self.crds.schema(api_version, kind) else {
                return vec![format!(
                    "{label}: apiVersion: {api_version:?} is not one of {}",
                    self.crds.versions(kind).join(", ")
                )];
            };
            let mut strict = schema.clone();
            strict_fields(&mut strict);
            add_object_meta(&mut strict);
            match jsonschema::draft4::new(&strict) {
                Ok(v) => self.compiled.insert(key.clone(), v),
                Err(e) => return vec![format!("{label}: the {kind} schema does not compile: {e}")],
            };
        }
        let mut errors: Vec<String> = metadata_errors(&m.doc)
            .into_iter()
            .map(|e| format!("{label}: {e}"))
            .collect();
        // Sorted: the validator's own order follows its internals, not the document.
        let mut schema_errors: Vec<String> = self.compiled[&key]
            .iter_errors(&m.doc)
            .flat_map(|e| describe(&e))
            .map(|e| format!("{label}: {e}"))
            .collect();
        schema_errors.sort();
        errors.extend(schema_errors);
        errors.extend(
            istio_rules(&m.doc)
                .into_iter()
                .map(|e| format!("{label}: {e}")),
        );
        errors
    }
}

/// Kubernetes drops (and `kubectl apply` rejects, with strict field validation) fields a
/// structural schema does not declare; JSON Schema allows them. Closing every object that
/// lists its properties, unless it asks to keep unknown fields, gives the cluster's answer.
fn strict_fields(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let keeps_unknown = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !keeps_unknown
    {
        obj.insert("additionalProperties".into(), json!(false));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(strict_fields);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = obj.get_mut(key) {
            strict_fields(sub);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            subs.iter_mut().for_each(strict_fields);
        }
    }
}

/// CRD schemas leave out the fields every object has; the API server adds them.
fn add_object_meta(schema: &mut Value) {
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert("metadata".into(), json!({"type": "object"}));
    }
}

/// The part of ObjectMeta validation that shipped manifests can get wrong: a name that is a
/// DNS subdomain, and an explicit namespace (without one `kubectl apply` uses whatever
/// namespace the user's context has, and selectors silently match nothing).
fn metadata_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let meta = &doc["metadata"];
    match meta["name"].as_str() {
        None => errors.push("metadata.name: required field is missing".to_string()),
        Some(n) if !is_dns_subdomain(n) => errors.push(format!(
            "metadata.name: {n:?} is not a lowercase DNS subdomain (a-z, 0-9, '-', '.')"
        )),
        Some(_) => {}
    }
    match meta["namespace"].as_str() {
        None => errors.push("metadata.namespace: required in shipped manifests".to_string()),
        Some(n) if !is_dns_label(n) => errors.push(format!(
            "metadata.namespace: {n:?} is not a lowercase DNS label (a-z, 0-9, '-')"
        )),
        Some(_) => {}
    }
    errors
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `spec.match[0].mode` from a JSON pointer.
fn dotted(loc: &jsonschema::paths::Location) -> String {
    let mut out = String::new();
    for seg in loc.segments() {
        match seg {
            jsonschema::paths::LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
        }
    }
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// One schema error as `field: message`, in the words `kubectl` would use.
fn describe(e: &jsonschema::ValidationError<'_>) -> Vec<String> {
    let path = dotted(e.instance_path());
    let value = e.instance();
    match e.kind() {
        ValidationErrorKind::Enum { options } => {
            let mut names: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                .collect();
            names.sort();
            vec![format!(
                "{path}: {value} is not one of {}",
                names.join(", ")
            )]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|f| format!("{}: unknown field", join(&path, f)))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let p = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            vec![format!("{}: required field is missing", join(&path, &p))]
        }
        _ => vec![format!("{path}: {e}")],
    }
}

/// The CEL rules (`x-kubernetes-validations`) of the plugin kinds that JSON Schema cannot
/// express and a manifest here could break.
pub fn istio_rules(doc: &Value) -> Vec<String> {
    let spec = &doc["spec"];
    let mut errors = Vec::new();
    let kind = doc["kind"].as_str().unwrap_or("");
    if !matches!(kind, "WasmPlugin" | "TrafficExtension") {
        return errors;
    }
    let targets: Vec<&str> = ["selector", "targetRef", "targetRefs"]
        .into_iter()
        .filter(|k| !spec[*k].is_null())
        .collect();
    if targets.len() > 1 {
        errors.push(format!(
            "spec: only one of selector, targetRef, targetRefs may be set, found {}",
            targets.join(", ")
        ));
    }
    let url_field = if kind == "TrafficExtension" {
        if spec["wasm"].is_null() == spec["lua"].is_null() {
            errors.push("spec: exactly one of wasm or lua must be set".to_string());
        }
        "spec.wasm.url"
    } else {
        "spec.url"
    };
    if let Some(url) = plugin_field(doc, "url").and_then(Value::as_str) {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "" | "oci" | "file" | "http" | "https") {
            errors.push(format!(
                "{url_field}: {url:?} has scheme {scheme:?}, not one of file, http, https, oci"
            ));
        }
    }
    errors
}

/// The object holding the module settings: `spec` of a WasmPlugin, `spec.wasm` of a
/// TrafficExtension.
pub fn plugin_spec(doc: &Value) -> Option<(&'static str, &Value)> {
    match doc["kind"].as_str()? {
        "WasmPlugin" => Some(("spec", &doc["spec"])),
        "TrafficExtension" if doc["spec"]["wasm"].is_object() => {
            Some(("spec.wasm", &doc["spec"]["wasm"]))
        }
        _ => None,
    }
}

fn plugin_field<'v>(doc: &'v Value, field: &str) -> Option<&'v Value> {
    plugin_spec(doc)
        .map(|(_, s)| &s[field])
        .filter(|v| !v.is_null())
}

/// The `pluginConfig` of a plugin manifest, its dotted path, and the JSON Istio hands the
/// filter. Istio stores it as a protobuf Struct, whose numbers are all doubles, and prints
/// integral ones without a fraction: `ratio: 1.0` arrives as `1`, `timeout_ms: 5000` as `5000`.
pub fn plugin_config_json(doc: &Value) -> Option<(String, String)> {
    let (prefix, spec) = plugin_spec(doc)?;
    let cfg = &spec["pluginConfig"];
    if cfg.is_null() {
        return None;
    }
    let as_sent = through_struct(cfg.clone());
    Some((format!("{prefix}.pluginConfig"), as_sent.to_string()))
}

fn through_struct(v: Value) -> Value {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            // Go's JSON printer switches to exponents at 1e21; below that integral doubles
            // print as integers.
            if f.fract() == 0.0 && f.abs() < 1e21 && f.abs() <= 2f64.powi(63) {
                json!(f as i64)
            } else {
                json!(f)
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(through_struct).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, through_struct(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// The filter's verdict on a manifest's `pluginConfig`: `None` when accepted (or the document
/// is not a plugin), else `file: Kind ns/name: spec.pluginConfig.<field>: <message>`.
pub fn plugin_config_error(m: &Manifest) -> Option<String> {
    let (path, json) = plugin_config_json(&m.doc)?;
    let e = meshtrace::config::Config::from_json(json.as_bytes()).err()?;
    let field = if e.field.is_empty() || e.field == "." || e.field == "?" {
        path
    } else {
        format!("{path}.{}", e.field)
    };
    Some(format!("{}: {field}: {}", m.label(), e.message))
}

/// What `make istio` writes into the manifests for the current build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    /// Tag of the `oci://.../meshtrace:<tag>` image.
    pub tag: String,
    /// Image manifest digest (hex), the `sha256` of `oci://` URLs.
    pub image_sha256: String,
    /// sha256 of meshtrace.wasm, the `sha256` of `http(s)://` URLs.
    pub wasm_sha256: String,
}

impl Pins {
    /// Pins for a module: its own hash and its image's digest.
    pub fn for_module(wasm: &[u8], tag: &str) -> anyhow::Result<Self> {
        let image = crate::oci::Image::build(wasm, tag)?;
        Ok(Self {
            tag: tag.to_string(),
            image_sha256: image.manifest_sha256(),
            wasm_sha256: crate::oci::sha256_hex(wasm),
        })
    }

    /// `text` with every meshtrace image tag and every `sha256:` line brought up to date,
    /// comments and layout untouched. A `sha256:` line takes its value from the scheme of the
    /// nearest `url:` line above it in the same document; a live line only from a live `url:`,
    /// so a commented-out variant between them does not count.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let (mut live, mut any): (Option<String>, Option<String>) = (None, None);
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            if body.trim_end() == "---" {
                (live, any) = (None, None);
            }
            let commented = body.trim_start().starts_with('#');
            match yaml_key(body) {
                Some((lead, "url", value)) => {
                    any = value.split_once("://").map(|(s, _)| s.to_string());
                    if !commented {
                        live.clone_from(&any);
                    }
                    out.push_str(lead);
                    out.push_str("url: ");
                    out.push_str(&self.retag(value));
                }
                Some((lead, "sha256", value)) => {
                    let scheme = if commented { &any } else { &live };
                    let pin = match scheme.as_deref() {
                        Some("oci") => Some(&self.image_sha256),
                        Some("http" | "https") => Some(&self.wasm_sha256),
                        _ => None,
                    };
                    out.push_str(lead);
                    out.push_str("sha256: ");
                    out.push_str(pin.map_or(value, String::as_str));
                }
                _ => out.push_str(body),
            }
            out.push_str(ending);
        }
        out
    }

    /// `oci://host/path/meshtrace:old` becomes `...:<tag>`; other URLs stay as they are.
    fn retag(&self, url: &str) -> String {
        let Some(rest) = url.strip_prefix("oci://") else {
            return url.to_string();
        };
        let repo = rest
            .rsplit_once(':')
            .map_or(rest, |(r, t)| if t.contains('/') { rest } else { r });
        if repo.rsplit('/').next() == Some("meshtrace") && !repo.contains('@') {
            format!("oci://{repo}:{}", self.tag)
        } else {
            url.to_string()
        }
    }
}

/// `("  #   ", "url", "oci://...")` for `  #   url: oci://...`: a YAML key line, possibly
/// commented out, split into its lead, key and value.
fn yaml_key(line: &str) -> Option<(&str, &str, &str)> {
    let indent = line.len() - line.trim_start().len();
    let mut lead = indent;
    let rest = &line[indent..];
    let rest = if let Some(r) = rest.strip_prefix('#') {
        let spaces = r.len() - r.trim_start().len();
        lead += 1 + spaces;
        &r[spaces..]
    } else {
        rest
    };
    let (key, value) = rest.split_once(": ")?;
    if !matches!(key, "url" | "sha256") || value.trim().contains(' ') {
        return None;
    }
    Some((&line[..lead], key, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: extensions.istio.io
  names: {kind: WasmPlugin}
  versions:
  - name: v1alpha1
    served: true
    schema:
      openAPIV3Schema:
        properties:
          spec:
            properties:
              phase: {enum: [UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS], type: string}
              url: {minLength: 1, type: string}
              pluginConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
              match:
                items:
                  properties:
                    mode: {type: string}
                  type: object
                type: array
            required: [url]
            type: object
        required: [spec]
        type: object
"#;

    fn manifest(yaml: &str) -> Manifest {
        Manifest {
            file: "istio/wasmplugin.yaml".into(),
            doc: yaml_documents(yaml).unwrap().remove(0),
        }
    }

    fn errors(yaml: &str) -> Vec<String> {
        let crds = Crds::parse(CRD).unwrap();
        SchemaCheck::new(&crds).check(&manifest(yaml))
    }

    const HEAD: &str = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p, namespace: ns}\n";

    #[test]
    fn a_valid_manifest_has_no_errors() {
        let y = format!(
            "{HEAD}spec: {{url: oci://r/meshtrace:1, phase: STATS, pluginConfig: {{any: [1]}}}}"
        );
        assert_eq!(errors(&y), Vec::<String>::new());
    }

    #[test]
    fn an_enum_error_names_field_value_and_choices() {
        let y = format!("{HEAD}spec: {{url: x, phase: STAT}}");
        assert_eq!(
            errors(&y),
            [
                r#"istio/wasmplugin.yaml: WasmPlugin ns/p: spec.phase: "STAT" is not one of AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE"#
            ]
        );
    }

    #[test]
    fn unknown_fields_are_errors_at_every_depth_but_inside_preserved_objects() {
        let y = format!(
            "{HEAD}spec: {{url: x, failStratgy: FAIL_OPEN, match: [{{mode: CLIENT, port: 1}}], pluginConfig: {{free: 1}}}}"
        );
        assert_eq!(
            errors(&y),
            [
                "istio/wasmplugin.yaml: WasmPlugin ns/p: spec.failStratgy: unknown field",
                "istio/wasmplugin.yaml: WasmPlugin ns/p: spec.match[0].port: unknown field",
            ]
        );
    }

    #[test]
    fn missing_required_fields_and_metadata_are_named() {
        let y = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: Bad_Name}\nspec: {phase: STATS}";
        assert_eq!(
            errors(y),
            [
                r#"istio/wasmplugin.yaml: WasmPlugin /Bad_Name: metadata.name: "Bad_Name" is not a lowercase DNS subdomain (a-z, 0-9, '-', '.')"#,
                "istio/wasmplugin.yaml: WasmPlugin /Bad_Name: metadata.namespace: required in shipped manifests",
                "istio/wasmplugin.yaml: WasmPlugin /Bad_Name: spec.url: required field is missing",
            ]
        );
    }

    #[test]
    fn kinds_and_versions_outside_the_crds_are_rejected() {
        let y = "apiVersion: networking.istio.io/v1\nkind: EnvoyPatch\nmetadata: {name: p, namespace: ns}";
        assert_eq!(
            errors(y),
            [
                r#"istio/wasmplugin.yaml: EnvoyPatch ns/p: kind "EnvoyPatch" is not one of the kinds Istio's CRDs define (WasmPlugin)"#
            ]
        );
        let y = "apiVersion: extensions.istio.io/v1\nkind: WasmPlugin\nmetadata: {name: p, namespace: ns}\nspec: {url: x}";
        assert_eq!(
            errors(y),
            [
                r#"istio/wasmplugin.yaml: WasmPlugin ns/p: apiVersion: "extensions.istio.io/v1" is not one of extensions.istio.io/v1alpha1"#
            ]
        );
    }

    #[test]
    fn cel_rules_on_targets_and_url_schemes() {
        let y = format!("{HEAD}spec: {{url: 'ftp://h/m.wasm', selector: {{}}, targetRefs: []}}");
        assert_eq!(
            istio_rules(&manifest(&y).doc),
            [
                "spec: only one of selector, targetRef, targetRefs may be set, found selector, targetRefs",
                r#"spec.url: "ftp://h/m.wasm" has scheme "ftp", not one of file, http, https, oci"#,
            ]
        );
        let t = "kind: TrafficExtension\nspec: {lua: {inlineCode: x}, wasm: {url: oci://x}}";
        assert_eq!(
            istio_rules(&yaml_documents(t).unwrap()[0]),
            ["spec: exactly one of wasm or lua must be set"]
        );
    }

    #[test]
    fn plugin_config_arrives_as_istio_prints_a_struct() {
        let y = format!("{HEAD}spec: {{url: x, pluginConfig: {{ratio: 1.0, small: 0.25, ms: 5000, big: 1.0e22, s: '1.0'}}}}");
        let (path, json) = plugin_config_json(&manifest(&y).doc).unwrap();
        assert_eq!(path, "spec.pluginConfig");
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            json!({"ratio": 1, "small": 0.25, "ms": 5000, "big": 1.0e22, "s": "1.0"})
        );
        assert!(json.contains(r#""ratio":1,"#), "{json}");
        let t = "kind: TrafficExtension\nspec: {wasm: {url: x, pluginConfig: {a: 1}}}";
        assert_eq!(
            plugin_config_json(&yaml_documents(t).unwrap()[0]),
            Some(("spec.wasm.pluginConfig".into(), r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn a_rejected_plugin_config_names_the_field_under_plugin_config() {
        let y = format!(
            "{HEAD}spec: {{url: x, pluginConfig: {{collector: {{cluster: c, timeout_ms: 0}}}}}}"
        );
        let e = plugin_config_error(&manifest(&y)).unwrap();
        assert!(
            e.starts_with(
                "istio/wasmplugin.yaml: WasmPlugin ns/p: spec.pluginConfig.collector.timeout_ms: "
            ),
            "{e}"
        );
        let ok = format!("{HEAD}spec: {{url: x, pluginConfig: {{collector: {{cluster: c}}}}}}");
        assert_eq!(plugin_config_error(&manifest(&ok)), None);
    }

    fn pins() -> Pins {
        Pins {
            tag: "0.2.0".into(),
            image_sha256: "a".repeat(64),
            wasm_sha256: "b".repeat(64),
        }
    }

    #[test]
    fn pins_follow_the_nearest_url_and_keep_comments() {
        let before = "\
spec:
  # the image
  url: oci://registry.example.com/x/meshtrace:0.1.0
  sha256: 00
  #   url: https://example.com/meshtrace.wasm
  #   sha256: 11
  #   url: file:///var/meshtrace.wasm
  #   sha256: 22
  sha256: 55
  wasm:\r
    url: oci://other.example.com/plugin:1.0\r
    sha256: 33\r
---
  sha256: 44
";
        let after = "\
spec:
  # the image
  url: oci://registry.example.com/x/meshtrace:0.2.0
  sha256: AAAA
  #   url: https://example.com/meshtrace.wasm
  #   sha256: BBBB
  #   url: file:///var/meshtrace.wasm
  #   sha256: 22
  sha256: AAAA
  wasm:\r
    url: oci://other.example.com/plugin:1.0\r
    sha256: AAAA\r
---
  sha256: 44
"
        .replace("AAAA", &"a".repeat(64))
        .replace("BBBB", &"b".repeat(64));
        assert_eq!(pins().apply(before), after);
        assert_eq!(pins().apply(&after), after);
    }

    #[test]
    fn retag_touches_only_the_meshtrace_repository() {
        let p = pins();
        assert_eq!(
            p.retag("oci://h:5000/meshtrace"),
            "oci://h:5000/meshtrace:0.2.0"
        );
        assert_eq!(
            p.retag("oci://h/a/meshtrace:x"),
            "oci://h/a/meshtrace:0.2.0"
        );
        assert_eq!(
            p.retag("oci://h/a/meshtrace@sha256:ab"),
            "oci://h/a/meshtrace@sha256:ab"
        );
        assert_eq!(p.retag("oci://h/a/tracer:1"), "oci://h/a/tracer:1");
        assert_eq!(p.retag("https://h/meshtrace:1"), "https://h/meshtrace:1");
    }

    #[test]
    fn pins_for_a_module_are_its_hash_and_its_image_digest() {
        let wasm = b"\0asm\x01\0\0\0";
        let p = Pins::for_module(wasm, "0.1.0").unwrap();
        assert_eq!(p.wasm_sha256, crate::oci::sha256_hex(wasm));
        assert_eq!(
            p.image_sha256,
            crate::oci::Image::build(wasm, "0.1.0")
                .unwrap()
                .manifest_sha256()
        );
    }
}
