//! A throwaway local registry: Debian's `docker-registry` on 127.0.0.1 and a free port.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tempfile::TempDir;

use crate::cmd::{require_program, run};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const HTPASSWD_BIN: &str = "/usr/bin/htpasswd";
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Another process may take the free port between our probe and the registry's bind.
const START_ATTEMPTS: u32 = 3;

/// How to run the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `(user, password)`: require HTTP basic auth (htpasswd, bcrypt) for every request.
    pub basic_auth: Option<(String, String)>,
}

/// One line of the registry's access log (combined log format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A running registry, killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    options: RegistryOptions,
}

impl Registry {
    /// Starts the registry and waits until `/v2/` answers.
    pub fn start(options: RegistryOptions) -> anyhow::Result<Registry> {
        require_program(REGISTRY_BIN, "docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("pvecri-registry-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("storage"))?;
        if let Some((user, password)) = &options.basic_auth {
            require_program(HTPASSWD_BIN, "apache2-utils")?;
            let line = run(Command::new(HTPASSWD_BIN).args(["-Bbn", user, password]))?;
            std::fs::write(
                dir.path().join("htpasswd"),
                line.trim_end().to_owned() + "\n",
            )?;
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match spawn_and_wait(dir.path(), port, options.basic_auth.is_some()) {
                Ok(child) => {
                    return Ok(Registry {
                        child,
                        port,
                        dir,
                        options,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The registry's filesystem storage root (`docker/registry/v2/...` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the blob with this digest (`sha256:...`).
    pub fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            bail!("not a sha256 digest: {digest}");
        };
        if hex.len() < 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("not a sha256 digest: {digest}");
        }
        Ok(self.storage_dir().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        )))
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The registry's own log (startup, errors).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Requests served so far.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        std::fs::read_to_string(self.access_log_path())
            .map(|text| parse_access_log(&text))
            .unwrap_or_default()
    }

    /// How many requests so far had a path containing `path_substring`.
    pub fn request_count(&self, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.contains(path_substring))
            .count()
    }

    /// The credentials tests should use: Basic when auth is on, else anonymous.
    pub fn auth(&self) -> RegistryAuth {
        match &self.options.basic_auth {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// An oci-client that speaks plain HTTP to this registry.
    pub fn client(&self) -> Client {
        plain_http_client(&[self.addr()])
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`.
    pub fn reference(&self, repo: &str, tag: &str) -> anyhow::Result<Reference> {
        let text = format!("{}/{repo}:{tag}", self.addr());
        text.parse()
            .with_context(|| format!("bad reference {text}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An oci-client that speaks plain HTTP to the given `host:port`s (a registry, or a
/// [`crate::proxy::FaultProxy`] in front of one) and HTTPS elsewhere.
pub fn plain_http_client(addrs: &[String]) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(addrs.to_vec()),
        ..ClientConfig::default()
    })
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot bind a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn spawn_and_wait(dir: &Path, port: u16, with_auth: bool) -> anyhow::Result<Child> {
    let config = dir.join("config.yml");
    std::fs::write(&config, render_config(dir, port, with_auth))?;
    let access_log = File::create(dir.join("access.log"))?;
    let log = File::create(dir.join("registry.log"))?;
    let mut cmd = Command::new(REGISTRY_BIN);
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(access_log)
        .stderr(log);
    // The registry overrides its config from REGISTRY_* variables; ours must win.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {REGISTRY_BIN}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            bail!(
                "docker-registry exited ({status}) on port {port}: {}",
                log.trim()
            );
        }
        if v2_answers(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "docker-registry did not answer on 127.0.0.1:{port}/v2/ within {START_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn render_config(dir: &Path, port: u16, with_auth: bool) -> String {
    let storage = dir.join("storage");
    let mut config = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n",
        storage = storage.display(),
        secret = hex::encode(rand::random::<[u8; 16]>()),
    );
    if with_auth {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: pvecri-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ));
    }
    config
}

/// `/v2/` answers 200, or 401 when auth is on: either means the registry serves.
fn v2_answers(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    let head = String::from_utf8_lossy(&head);
    head.starts_with("HTTP/1.") && (head.ends_with(" 200") || head.ends_with(" 401"))
}

/// Parses combined-log-format lines: `host - user [time] "METHOD PATH PROTO" STATUS SIZE ...`.
pub fn parse_access_log(text: &str) -> Vec<AccessLogEntry> {
    text.lines().filter_map(parse_access_line).collect()
}

fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let (_, rest) = line.split_once(" \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut request = request.split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(AccessLogEntry {
        method,
        path,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_parse() {
        let text = "127.0.0.1 - - [28/Nov/2026:03:24:02 +0000] \"GET /v2/ HTTP/1.1\" 200 2 \"\" \"curl/7.88.1\"\n\
                    127.0.0.1 - user [28/Nov/2026:03:24:02 +0000] \"HEAD /v2/foo/blobs/sha256:ab HTTP/1.1\" 404 91 \"\" \"x\"\n\
                    not a log line\n";
        let entries = parse_access_log(text);
        assert_eq!(
            entries,
            vec![
                AccessLogEntry {
                    method: "GET".into(),
                    path: "/v2/".into(),
                    status: 200
                },
                AccessLogEntry {
                    method: "HEAD".into(),
                    path: "/v2/foo/blobs/sha256:ab".into(),
                    status: 404
                },
            ]
        );
    }

    #[test]
    fn config_has_auth_only_when_asked() {
        let dir = Path::new("/tmp/x");
        assert!(!render_config(dir, 5000, false).contains("htpasswd"));
        let with = render_config(dir, 5000, true);
        assert!(with.contains("path: /tmp/x/htpasswd"), "{with}");
        assert!(with.contains("addr: 127.0.0.1:5000"), "{with}");
    }
}
