//! The filter as an OCI image that Istio's agent can pull, built without Docker.
//!
//! Istio's Wasm image fetcher accepts a Wasm *artifact* image (layer type
//! `application/vnd.module.wasm.content.layer.v1+wasm`) only with exactly two layers, and a
//! single-layer image only in the "compat" form: one `application/vnd.oci.image.layer.v1.tar+gzip`
//! layer whose tar holds a file named `plugin.wasm`. A single-layer image is what registries,
//! `crane`, `oras` and `skopeo` handle most uniformly, so that is the form built here.
//!
//! Every byte is deterministic (fixed timestamps, owners and modes; sorted JSON keys), so the
//! image digest that `WasmPlugin.spec.sha256` pins is a function of `meshtrace.wasm` alone.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The single file of the layer; Istio looks for exactly this name.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// The image index's media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The image config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The layer's media type (gzip-compressed tar).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation through which `oci:DIR:TAG` (skopeo) and `DIR:TAG` (oras) find the image.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The layer's file name as `oras pull` would write it.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Platform fields use Go's names, as the image spec asks: GOOS=wasip1, GOARCH=wasm.
pub const PLATFORM_OS: &str = "wasip1";
/// `architecture` of the platform.
pub const PLATFORM_ARCHITECTURE: &str = "wasm";

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI content digest, `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The image: every blob and JSON document of the layout, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The tag recorded in `index.json`.
    pub tag: String,
    /// The gzip-compressed tar holding `plugin.wasm`.
    pub layer: Vec<u8>,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// The image manifest JSON.
    pub manifest: Vec<u8>,
    /// The image index JSON.
    pub index: Vec<u8>,
}

/// `oci-layout`: marks a directory as an OCI image layout.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl Image {
    /// Builds the image of `wasm`, tagged `tag` in the layout's index.
    pub fn build(wasm: &[u8], tag: &str) -> anyhow::Result<Self> {
        ensure!(
            wasm.starts_with(b"\0asm"),
            "the module does not start with the Wasm magic number \\0asm"
        );
        ensure!(!tag.is_empty(), "the image tag is empty");
        let tar = layer_tar(wasm)?;
        let diff_id = digest(&tar);
        let layer = gzip(&tar)?;
        let config = to_json(&json!({
            "architecture": PLATFORM_ARCHITECTURE,
            "os": PLATFORM_OS,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))?;
        let manifest = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &config),
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": digest(&layer),
                "size": layer.len(),
                "annotations": {TITLE_ANNOTATION: PLUGIN_FILE},
            }],
        }))?;
        let mut entry = descriptor(MANIFEST_MEDIA_TYPE, &manifest);
        entry["annotations"] = json!({REF_NAME_ANNOTATION: tag});
        let index = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [entry],
        }))?;
        Ok(Self {
            tag: tag.to_string(),
            layer,
            diff_id,
            config,
            manifest,
            index,
        })
    }

    /// The image digest without its `sha256:` prefix: what `WasmPlugin.spec.sha256` must be
    /// for an `oci://` URL (Istio compares it with the digest of the manifest it pulled).
    pub fn manifest_sha256(&self) -> String {
        sha256_hex(&self.manifest)
    }

    /// The layout's files, relative paths in the order a tarball lists them.
    pub fn files(&self) -> Vec<(String, &[u8])> {
        let mut blobs: Vec<(String, &[u8])> = [&self.manifest, &self.config, &self.layer]
            .into_iter()
            .map(|b| (format!("blobs/sha256/{}", sha256_hex(b)), b.as_slice()))
            .collect();
        blobs.sort();
        let mut files = vec![
            ("oci-layout".to_string(), OCI_LAYOUT),
            ("index.json".to_string(), self.index.as_slice()),
        ];
        files.extend(blobs);
        files
    }

    /// Writes the layout to `dir`, replacing an earlier layout there (and its stale blobs).
    pub fn write_layout(&self, dir: &Path) -> anyhow::Result<()> {
        if dir.exists() {
            let is_layout = dir.join("oci-layout").is_file();
            let is_empty = std::fs::read_dir(dir)?.next().is_none();
            ensure!(
                is_layout || is_empty,
                "{} exists and is not an OCI image layout; refusing to replace it",
                dir.display()
            );
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for (rel, bytes) in self.files() {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The layout as one tar archive (`skopeo copy oci-archive:FILE:TAG ...`).
    pub fn tarball(&self) -> anyhow::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = fixed_header(tar::EntryType::Directory, 0o755, 0);
            h.set_path(d)?;
            h.set_cksum();
            tar.append(&h, std::io::empty())?;
        }
        for (rel, bytes) in self.files() {
            let mut h = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            h.set_path(&rel)?;
            h.set_cksum();
            tar.append(&h, bytes)?;
        }
        Ok(tar.into_inner()?)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

fn to_json(v: &Value) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

/// A tar header with nothing that varies between builds (no time, owner or user names).
fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The uncompressed layer: a tar with the single entry `plugin.wasm`.
pub fn layer_tar(wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = fixed_header(tar::EntryType::Regular, 0o644, wasm.len() as u64);
    h.set_path(PLUGIN_FILE)?;
    h.set_cksum();
    tar.append(&h, wasm)?;
    Ok(tar.into_inner()?)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    // mtime 0: the gzip header would otherwise carry the build time.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

/// What [`verify_layout`] found: the module the image delivers and its digests.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The tag the layout names.
    pub tag: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// The module the layer holds.
    pub wasm: Vec<u8>,
}

/// Reads an OCI layout the way a registry client and then Istio would, checking every
/// descriptor's digest and size, the media types Istio requires, the config's diff id, and
/// that the layer holds exactly `plugin.wasm`.
pub fn verify_layout(dir: &Path) -> anyhow::Result<Verified> {
    let read = |rel: &str| -> anyhow::Result<Vec<u8>> {
        std::fs::read(dir.join(rel)).with_context(|| format!("{}/{rel}", dir.display()))
    };
    let layout: Value = serde_json::from_slice(&read("oci-layout")?)?;
    ensure!(
        layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout: imageLayoutVersion is {}, expected \"1.0.0\"",
        layout["imageLayoutVersion"]
    );
    let index: Value = serde_json::from_slice(&read("index.json")?)?;
    expect_field(&index, "index.json", "schemaVersion", &json!(2))?;
    expect_field(&index, "index.json", "mediaType", &json!(INDEX_MEDIA_TYPE))?;
    let manifests = index["manifests"].as_array().map(Vec::as_slice);
    let [entry] = manifests.unwrap_or_default() else {
        bail!("index.json: manifests must list exactly one image");
    };
    let tag = entry["annotations"][REF_NAME_ANNOTATION]
        .as_str()
        .with_context(|| format!("index.json: manifests[0] has no {REF_NAME_ANNOTATION}"))?
        .to_string();
    let manifest_bytes = blob(dir, entry, "index.json manifests[0]", MANIFEST_MEDIA_TYPE)?;
    let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    expect_field(&manifest, "manifest", "schemaVersion", &json!(2))?;
    expect_field(
        &manifest,
        "manifest",
        "mediaType",
        &json!(MANIFEST_MEDIA_TYPE),
    )?;
    let config_bytes = blob(
        dir,
        &manifest["config"],
        "manifest config",
        CONFIG_MEDIA_TYPE,
    )?;
    let layers = manifest["layers"].as_array().map(Vec::as_slice);
    let [layer] = layers.unwrap_or_default() else {
        bail!("manifest: layers must hold exactly one layer (Istio rejects other single-image shapes)");
    };
    let layer_bytes = blob(dir, layer, "manifest layers[0]", LAYER_MEDIA_TYPE)?;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer_bytes.as_slice())
        .read_to_end(&mut tar)
        .context("manifest layers[0]: not gzip")?;
    let config: Value = serde_json::from_slice(&config_bytes)?;
    let diff_ids = &config["rootfs"]["diff_ids"];
    ensure!(
        *diff_ids == json!([digest(&tar)]),
        "config: rootfs.diff_ids is {diff_ids}, but the layer's tar has digest {}",
        digest(&tar)
    );
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entries = Vec::new();
    for e in archive.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body)?;
        entries.push((name, body));
    }
    let [(name, wasm)] = entries.as_slice() else {
        bail!(
            "layer: holds {} entries, expected only {PLUGIN_FILE}",
            entries.len()
        );
    };
    ensure!(
        name == PLUGIN_FILE,
        "layer: holds {name:?}, expected {PLUGIN_FILE:?}"
    );
    ensure!(
        wasm.starts_with(b"\0asm"),
        "layer: {PLUGIN_FILE} is not a Wasm module"
    );
    Ok(Verified {
        tag,
        manifest_digest: digest(&manifest_bytes),
        wasm: wasm.clone(),
    })
}

fn expect_field(doc: &Value, what: &str, field: &str, want: &Value) -> anyhow::Result<()> {
    ensure!(
        &doc[field] == want,
        "{what}: {field} is {}, expected {want}",
        doc[field]
    );
    Ok(())
}

/// Reads the blob a descriptor points at and checks its media type, size and digest.
fn blob(dir: &Path, desc: &Value, what: &str, media_type: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(
        desc["mediaType"] == media_type,
        "{what}: mediaType is {}, expected {media_type:?}",
        desc["mediaType"]
    );
    let d = desc["digest"]
        .as_str()
        .with_context(|| format!("{what}: no digest"))?;
    let hex = d
        .strip_prefix("sha256:")
        .with_context(|| format!("{what}: digest {d:?} is not sha256"))?;
    let bytes = std::fs::read(dir.join("blobs/sha256").join(hex))
        .with_context(|| format!("{what}: blob {d} is missing"))?;
    let size = desc["size"].as_u64();
    ensure!(
        size == Some(bytes.len() as u64),
        "{what}: size is {}, but blob {d} has {} bytes",
        desc["size"],
        bytes.len()
    );
    ensure!(
        digest(&bytes) == d,
        "{what}: blob {d} has digest {}",
        digest(&bytes)
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: magic number and version 1.
    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("meshtrace-oci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn layer_is_a_tar_of_plugin_wasm_with_fixed_metadata() {
        let tar = layer_tar(WASM).unwrap();
        // One 512-byte header, the body padded to 512, two zero blocks.
        assert_eq!(tar.len(), 512 * 4);
        let mut a = tar::Archive::new(tar.as_slice());
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("plugin.wasm"));
        let h = e.header();
        assert_eq!(
            (h.mode().unwrap(), h.mtime().unwrap(), h.uid().unwrap()),
            (0o644, 0, 0)
        );
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(body, WASM);
        assert!(entries.next().is_none());
    }

    #[test]
    fn manifest_config_and_index_reference_each_other_by_digest_and_size() {
        let img = Image::build(WASM, "0.1.0").unwrap();
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["config"]["digest"], digest(&img.config));
        assert_eq!(m["config"]["size"], img.config.len());
        assert_eq!(m["layers"][0]["digest"], digest(&img.layer));
        assert_eq!(m["layers"][0]["size"], img.layer.len());
        assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        let c: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            c,
            json!({"architecture": "wasm", "os": "wasip1",
                   "rootfs": {"type": "layers", "diff_ids": [digest(&layer_tar(WASM).unwrap())]}})
        );
        let i: Value = serde_json::from_slice(&img.index).unwrap();
        assert_eq!(
            i["manifests"][0],
            json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest(&img.manifest),
                   "size": img.manifest.len(),
                   "annotations": {"org.opencontainers.image.ref.name": "0.1.0"}})
        );
        assert_eq!(img.manifest_sha256(), sha256_hex(&img.manifest));
    }

    #[test]
    fn same_module_same_bytes_and_the_tag_does_not_change_the_digest() {
        let a = Image::build(WASM, "0.1.0").unwrap();
        assert_eq!(a, Image::build(WASM, "0.1.0").unwrap());
        let b = Image::build(WASM, "latest").unwrap();
        assert_eq!(a.manifest_sha256(), b.manifest_sha256());
        let other = Image::build(b"\0asm\x01\0\0\0\0", "0.1.0").unwrap();
        assert_ne!(a.manifest_sha256(), other.manifest_sha256());
    }

    #[test]
    fn rejects_bytes_that_are_not_wasm() {
        let e = Image::build(b"ELF", "0.1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the module does not start with the Wasm magic number \\0asm"
        );
    }

    #[test]
    fn written_layout_verifies_and_delivers_the_module() {
        let dir = tmp("roundtrip");
        let img = Image::build(WASM, "0.1.0").unwrap();
        img.write_layout(&dir).unwrap();
        let v = verify_layout(&dir).unwrap();
        assert_eq!(
            v,
            Verified {
                tag: "0.1.0".into(),
                manifest_digest: digest(&img.manifest),
                wasm: WASM.to_vec()
            }
        );
        // Rewriting over an existing layout drops blobs of the earlier image.
        Image::build(b"\0asm\x01\0\0\0\0", "0.1.0")
            .unwrap()
            .write_layout(&dir)
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count(),
            3
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verification_names_a_blob_whose_size_or_content_changed() {
        let dir = tmp("tamper");
        let img = Image::build(WASM, "0.1.0").unwrap();
        img.write_layout(&dir).unwrap();
        let config = dir.join("blobs/sha256").join(sha256_hex(&img.config));
        std::fs::write(&config, b"{}").unwrap();
        assert_eq!(
            verify_layout(&dir).unwrap_err().to_string(),
            format!(
                "manifest config: size is {}, but blob {} has 2 bytes",
                img.config.len(),
                digest(&img.config)
            )
        );
        let mut same_size = img.config.clone();
        same_size[0] = b' ';
        std::fs::write(&config, &same_size).unwrap();
        assert_eq!(
            verify_layout(&dir).unwrap_err().to_string(),
            format!(
                "manifest config: blob {} has digest {}",
                digest(&img.config),
                digest(&same_size)
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_to_replace_a_directory_that_is_not_a_layout() {
        let dir = tmp("notalayout");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), b"x").unwrap();
        let e = Image::build(WASM, "t")
            .unwrap()
            .write_layout(&dir)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} exists and is not an OCI image layout; refusing to replace it",
                dir.display()
            )
        );
        assert!(dir.join("keep.txt").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tarball_holds_the_layout_files_unchanged() {
        let img = Image::build(WASM, "0.1.0").unwrap();
        let tar = img.tarball().unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let mut got = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            got.push((name, body));
        }
        let mut want: Vec<(String, Vec<u8>)> =
            vec![("blobs/".into(), vec![]), ("blobs/sha256/".into(), vec![])];
        want.extend(img.files().into_iter().map(|(n, b)| (n, b.to_vec())));
        assert_eq!(got, want);
        assert_eq!(tar, img.tarball().unwrap());
    }
}
