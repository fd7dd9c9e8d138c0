//! `make oci` and `make istio`: the filter's OCI image, and the manifests pinned to it.
//!
//! ```text
//! meshtrace-oci build --wasm dist/meshtrace.wasm --layout dist/oci --tar dist/meshtrace-oci.tar [--tag T]
//! meshtrace-oci pin   --wasm dist/meshtrace.wasm --manifests istio [--tag T]
//! ```
//! The tag defaults to the crate version, which is the workspace version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use meshtrace_host_test::istio::Pins;
use meshtrace_host_test::oci::{sha256_hex, verify_layout, Image};

const USAGE: &str = "usage: meshtrace-oci build --wasm FILE --layout DIR --tar FILE [--tag T]
       meshtrace-oci pin --wasm FILE --manifests DIR [--tag T]";

fn main() {
    if let Err(e) = run() {
        eprintln!("meshtrace-oci: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().context(USAGE)?;
    let flags = parse_flags(args)?;
    let flag = |name: &str| -> anyhow::Result<PathBuf> {
        flags
            .get(name)
            .map(PathBuf::from)
            .with_context(|| format!("--{name} is required\n{USAGE}"))
    };
    let tag = flags
        .get("tag")
        .cloned()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    let wasm_path = flag("wasm")?;
    let wasm =
        std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    match command.as_str() {
        "build" => build(&wasm, &tag, &flag("layout")?, &flag("tar")?),
        "pin" => pin(&wasm, &tag, &flag("manifests")?),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

fn parse_flags(args: impl Iterator<Item = String>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut flags = BTreeMap::new();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let Some(name) = a.strip_prefix("--") else {
            bail!("unexpected argument {a:?}\n{USAGE}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_string(), value);
    }
    Ok(flags)
}

fn build(wasm: &[u8], tag: &str, layout: &Path, tar: &Path) -> anyhow::Result<()> {
    let image = Image::build(wasm, tag)?;
    image.write_layout(layout)?;
    // Read back what was written, as a registry client would, before anyone pushes it.
    let verified = verify_layout(layout)?;
    if verified.wasm != wasm {
        bail!(
            "{} does not deliver the module it was built from",
            layout.display()
        );
    }
    std::fs::write(tar, image.tarball()?).with_context(|| format!("writing {}", tar.display()))?;
    println!(
        "built {} and {} (tag {tag})\n  image digest  sha256:{}\n  wasm sha256   {}",
        layout.display(),
        tar.display(),
        image.manifest_sha256(),
        sha256_hex(wasm)
    );
    Ok(())
}

fn pin(wasm: &[u8], tag: &str, dir: &Path) -> anyhow::Result<()> {
    let pins = Pins::for_module(wasm, tag)?;
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let pinned = pins.apply(&text);
        if pinned != text {
            std::fs::write(&f, pinned)?;
            println!("pinned {}", f.display());
        }
    }
    println!(
        "manifests pin oci tag {tag}, image sha256 {}, wasm sha256 {}",
        pins.image_sha256, pins.wasm_sha256
    );
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}
