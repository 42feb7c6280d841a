//! Clients of the daemon's streaming server for the tests: crictl (exec, attach,
//! port-forward, over SPDY or WebSocket), a WebSocket client speaking the
//! `channel.k8s.io` protocols, and small helpers (free ports, HTTP through a forwarded port,
//! fd counts).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::k8s_tools;

/// crictl talking to the daemon at `socket`.
pub fn crictl(socket: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(k8s_tools::tool("crictl")?);
    let endpoint = format!("unix://{}", socket.display());
    cmd.arg("--runtime-endpoint")
        .arg(&endpoint)
        .arg("--image-endpoint")
        .arg(&endpoint)
        .arg("--timeout")
        .arg("30s");
    Ok(cmd)
}

/// Runs `cmd` with `input` on stdin; returns (exit code, stdout, stderr).
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> anyhow::Result<(i32, String, String)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", crate::cmd::describe(&cmd)))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `crictl port-forward` running in the background; killed (by its pid) when dropped.
pub struct PortForward {
    child: Child,
    pub local_port: u16,
}

impl PortForward {
    /// Forwards a free local port to `remote` in the pod; `websocket` picks the SPDY tunnel.
    pub fn start(
        socket: &Path,
        pod_id: &str,
        remote: u16,
        websocket: bool,
    ) -> anyhow::Result<PortForward> {
        let local_port = free_port()?;
        let mut cmd = crictl(socket)?;
        cmd.arg("port-forward");
        if websocket {
            cmd.args(["--transport", "websocket"]);
        }
        cmd.arg(pod_id).arg(format!("{local_port}:{remote}"));
        Self::spawn(cmd, local_port)
    }

    /// Runs a port-forward command (crictl's or kubectl's) that forwards `local_port`;
    /// returns once it says it listens.
    pub fn spawn(mut cmd: Command, local_port: u16) -> anyhow::Result<PortForward> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", crate::cmd::describe(&cmd)))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let pf = PortForward { child, local_port };
        // "Forwarding from 127.0.0.1:PORT -> REMOTE" once it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && line.contains("Forwarding from") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        // Its complaints, for the error if it does not start (read all along, so that a
        // chatty forwarder never blocks on a full pipe).
        let complaints = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (err_tx, err_rx) = std::sync::mpsc::channel::<()>();
        {
            let complaints = complaints.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // crictl's warning about its missing config file is not one.
                    if line.starts_with("time=") && line.contains("level=warning") {
                        continue;
                    }
                    if let Ok(mut c) = complaints.lock()
                        && c.len() < 4096
                    {
                        c.push_str(&line);
                        c.push('\n');
                    }
                }
                drop(err_tx);
            });
        }
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            // Exited (stdout closed) or hung: what it said, once stderr is read or 2 s on.
            let _ = err_rx.recv_timeout(Duration::from_secs(2));
            let said = complaints
                .lock()
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            bail!("the port-forward did not start listening: {said}");
        }
        Ok(pf)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET of `path` on 127.0.0.1:`port`; returns (status line, body).
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "no HTTP header end in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.lines().next().unwrap_or("").to_string();
    Ok((status, raw[split + 4..].to_vec()))
}

/// Open fds of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket to a streaming URL offering `protocols`; returns it with the
/// subprotocol the server chose.
pub async fn ws_connect(url: &str, protocols: &[&str]) -> anyhow::Result<(Ws, String)> {
    let ws_url = url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut req = ws_url.as_str().into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.join(", ").parse()?);
    }
    let uri: http::Uri = ws_url.parse()?;
    let host = uri.host().context("no host")?;
    let port = uri.port_u16().context("no port")?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .with_context(|| format!("WebSocket upgrade of {url}"))?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

/// Sends `data` on `channel` (binary `channel.k8s.io` framing).
pub async fn ws_send(ws: &mut Ws, channel: u8, data: &[u8]) -> anyhow::Result<()> {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    ws.send(Message::Binary(v.into())).await?;
    Ok(())
}

/// Everything the server sent per channel, until it closed the connection.
pub async fn ws_collect(ws: &mut Ws, timeout: Duration) -> anyhow::Result<Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); 8];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .with_context(|| format!("no end of the WebSocket within {timeout:?}"))?;
        match msg {
            Some(Ok(Message::Binary(b))) => {
                if let Some((&ch, data)) = b.split_first() {
                    let ch = usize::from(ch);
                    if ch >= out.len() {
                        out.resize(ch + 1, Vec::new());
                    }
                    out[ch].extend_from_slice(data);
                }
            }
            Some(Ok(Message::Close(_))) | None => return Ok(out),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("WebSocket: {e}"),
        }
    }
}
