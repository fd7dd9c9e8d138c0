//! Running real Envoy with the compiled filter: find the binary, render a config from the
//! templates in `filter/envoy/`, start it on free ports, and kill it when the test ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Envoy binary: `MESHTRACE_ENVOY`, else `.tools/envoy` as `make envoy` installs it.
///
/// # Errors
/// When there is none, naming the path looked at and the command that installs Envoy: a test
/// that needs Envoy fails rather than passing without running.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let candidate = std::env::var_os("MESHTRACE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/envoy/envoy/_bin/envoy"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "Envoy not found at {}: run `make envoy` (or set MESHTRACE_ENVOY to an Envoy {} binary)",
        candidate.display(),
        ENVOY_VERSION
    )
}

/// The Envoy release the tests and `make envoy` use.
pub const ENVOY_VERSION: &str = "1.40";

/// The compiled filter: `MESHTRACE_WASM`, else `dist/meshtrace.wasm`.
pub fn wasm_path() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("MESHTRACE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist/meshtrace.wasm"));
    if !p.is_file() {
        bail!("{} is missing: run `make build-wasm`", p.display());
    }
    Ok(p)
}

/// A free TCP port on loopback.
///
/// The port is released before Envoy binds it, so two tests running at once could be handed
/// the same one; Envoy binds listeners with `SO_REUSEPORT`, so both Envoys would then share it
/// and each take the other's requests. A port is therefore never handed out twice in a process.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port != 0 && !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    0
}

/// Values substituted into a config template (`{{NAME}}`).
#[derive(Clone, Debug)]
pub struct EnvoyVars {
    /// `{{LISTEN_PORT}}`: where Envoy takes requests.
    pub listen_port: u16,
    /// `{{ADMIN_PORT}}`: Envoy's admin (`/stats`, `/memory`).
    pub admin_port: u16,
    /// `{{UPSTREAM_PORT}}`: the upstream Envoy routes to.
    pub upstream_port: u16,
    /// `{{COLLECTOR_PORT}}`: the OTLP collector.
    pub collector_port: u16,
    /// `{{WASM}}`: the filter.
    pub wasm: PathBuf,
    /// The plugin configuration JSON.
    pub plugin_config: String,
    /// `INBOUND` or `OUTBOUND` (the listener's `traffic_direction`).
    pub direction: &'static str,
    /// Envoy worker threads (`--concurrency`).
    pub concurrency: u32,
    /// The collector cluster speaks HTTP/2 (needed for OTLP/gRPC).
    pub collector_http2: bool,
    /// The bootstrap singleton's plugin configuration (`singleton.yaml`).
    pub exporter_config: String,
    /// Further `{{NAME}}` → value substitutions for templates with their own placeholders
    /// (applied before the standard ones, so a value may itself use them).
    pub extra: Vec<(String, String)>,
    /// Environment variables Envoy is started with, besides the test's own (e.g. the AWS
    /// credentials the aws_lambda filter signs with).
    pub env: Vec<(String, String)>,
}

impl EnvoyVars {
    /// Variables for one Envoy with free listen and admin ports.
    pub fn new(
        wasm: PathBuf,
        upstream_port: u16,
        collector_port: u16,
        plugin_config: &str,
    ) -> Self {
        Self {
            listen_port: free_port(),
            admin_port: free_port(),
            upstream_port,
            collector_port,
            wasm,
            plugin_config: plugin_config.to_string(),
            direction: "INBOUND",
            concurrency: 1,
            collector_http2: false,
            exporter_config: String::new(),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds a `{{name}}` substitution.
    pub fn set(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.extra
            .push((format!("{{{{{name}}}}}"), value.to_string()));
        self
    }

    /// Renders a template from `filter/envoy/`.
    pub fn render(&self, template: &str) -> anyhow::Result<String> {
        let path = workspace_root().join("filter/envoy").join(template);
        let mut text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (k, v) in &self.extra {
            text = text.replace(k, v);
        }
        // The plugin config sits in a single-quoted YAML scalar.
        let cfg = self.plugin_config.replace('\'', "''");
        let exporter_cfg = self.exporter_config.replace('\'', "''");
        let http2 = if self.collector_http2 {
            "typed_extension_protocol_options: { envoy.extensions.upstreams.http.v3.HttpProtocolOptions: { \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: { http2_protocol_options: {} } } }"
        } else {
            "# HTTP/1.1 (OTLP/gRPC needs http2_protocol_options here)"
        };
        Ok(text
            .replace("{{COLLECTOR_HTTP2}}", http2)
            .replace("{{EXPORTER_CONFIG}}", &exporter_cfg)
            .replace("{{LISTEN_PORT}}", &self.listen_port.to_string())
            .replace("{{ADMIN_PORT}}", &self.admin_port.to_string())
            .replace("{{UPSTREAM_PORT}}", &self.upstream_port.to_string())
            .replace("{{COLLECTOR_PORT}}", &self.collector_port.to_string())
            .replace("{{WASM}}", &self.wasm.display().to_string())
            .replace("{{DIRECTION}}", self.direction)
            .replace("{{PLUGIN_CONFIG}}", &cfg))
    }
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Option<Child>,
    /// The variables the config was built with.
    pub vars: EnvoyVars,
    dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A scratch directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(Self(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Envoy {
    /// Starts Envoy with `template` rendered from `vars`, waiting until the admin says LIVE.
    pub fn start(binary: &Path, template: &str, vars: EnvoyVars) -> anyhow::Result<Self> {
        let dir = tempdir::Dir::new("meshtrace-envoy")?;
        let cfg_path = dir.path().join("envoy.yaml");
        std::fs::write(&cfg_path, vars.render(template)?)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let child = Command::new(binary)
            .envs(vars.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(&cfg_path)
            .arg("--concurrency")
            .arg(vars.concurrency.to_string())
            .args(["--disable-hot-restart", "-l", "info"])
            // Envoy writes files (access logs, `--log-path`) every 10 s by default, as long as
            // the tests wait for a line: flush them promptly so a wait never races the timer.
            .args(["--file-flush-interval-msec", "100"])
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut envoy = Self {
            child: Some(child),
            vars,
            dir,
        };
        envoy.wait_ready(Duration::from_secs(30))?;
        Ok(envoy)
    }

    /// Starts Envoy expecting it to refuse the config; returns its exit status and log.
    pub fn start_expect_failure(
        binary: &Path,
        template: &str,
        vars: EnvoyVars,
    ) -> anyhow::Result<(i32, String)> {
        let dir = tempdir::Dir::new("meshtrace-envoy")?;
        let cfg_path = dir.path().join("envoy.yaml");
        std::fs::write(&cfg_path, vars.render(template)?)?;
        let mut child = Command::new(binary)
            .envs(vars.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let mut log = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut log);
                }
                return Ok((status.code().unwrap_or(-1), log));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Envoy did not exit on a config it should refuse");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("Envoy exited during startup ({status}):\n{}", self.log());
                }
            }
            if let Ok(r) = http_request(self.vars.admin_port, "GET", "/ready", &[], b"") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("Envoy not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Sends a request to the listener.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<HttpResponse> {
        http_request(self.vars.listen_port, method, path, headers, b"")
    }

    /// The admin `/stats` counters whose names contain `filter`, as `(name, value)`.
    pub fn stats(&self, filter: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let r = http_request(
            self.vars.admin_port,
            "GET",
            &format!("/stats?filter={filter}"),
            &[],
            b"",
        )?;
        Ok(r.body
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter whose name ends with `suffix` (0 when absent).
    pub fn stat(&self, suffix: &str) -> u64 {
        self.stats(suffix)
            .unwrap_or_default()
            .into_iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .unwrap_or(0)
    }

    /// Polls `/stats` until the counter ending in `suffix` reaches `want` or `timeout` passes.
    pub fn wait_stat(&self, suffix: &str, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stat(suffix);
            if v >= want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

/// A minimal blocking HTTP/1.1 client (one request per connection) for tests and the demo.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Envoy with the filter between a recording upstream and an OTLP sink: the whole
/// end-to-end setup one test or the demo needs.
pub struct Stack {
    /// The OTLP/HTTP collector.
    pub sink: crate::sink::OtlpSink,
    /// The upstream Envoy routes to.
    pub upstream: crate::sink::Upstream,
    /// The Envoy running the filter.
    pub envoy: Envoy,
}

impl Stack {
    /// Starts everything with `plugin_config` on the `template` config.
    ///
    /// # Errors
    /// When Envoy or the filter is missing (naming the `make` target that builds it), or a
    /// part fails to start.
    pub fn start(
        template: &str,
        plugin_config: &str,
        direction: &'static str,
    ) -> anyhow::Result<Self> {
        let binary = envoy_binary()?;
        let sink = crate::sink::OtlpSink::start(0)?;
        let upstream = crate::sink::Upstream::start()?;
        let mut vars = EnvoyVars::new(
            wasm_path()?,
            upstream.addr.port(),
            sink.addr.port(),
            plugin_config,
        );
        vars.direction = direction;
        let envoy = Envoy::start(&binary, template, vars)?;
        Ok(Self {
            sink,
            upstream,
            envoy,
        })
    }
}
