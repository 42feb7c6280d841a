//! Exec and attach sessions (the `channel.k8s.io` remote command protocol), whatever the
//! transport: the streams the client asked for are wired to the process's pipes or pty, the
//! resize stream to the pty's size, and the outcome is written to the error stream — a JSON
//! `metav1.Status` from v4 on (`NonZeroExitCode` with an `ExitCode` cause for a failed
//! command), plain text before.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backend::{
    AttachTarget, Backend, BackendError, ExecTarget, FdIo, TermSize, set_window_size,
};
use super::mux::Outlet;
use super::spdy::{self, frame::header};
use super::ws;

/// Protocol versions over SPDY, most preferred first (`X-Stream-Protocol-Version`).
pub const SPDY_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// Subprotocols over WebSocket.
pub const WS_PROTOCOLS: &[&str] = &[
    ws::V5_CHANNEL,
    ws::V4_CHANNEL,
    ws::V4_BASE64_CHANNEL,
    ws::CHANNEL,
    ws::BASE64_CHANNEL,
];

/// How long the client may take to open its streams (the kubelet's stream creation timeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a terminal exec waits for the client's first size before starting.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);
/// After the process ended, how long the client may take to read the last output.
const OUTPUT_LINGER: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 32 * 1024;

const CH_STDIN: usize = 0;
const CH_STDOUT: u32 = 1;
const CH_STDERR: u32 = 2;
const CH_ERROR: u32 = 3;
const CH_RESIZE: usize = 4;

/// What to run: an exec or an attach.
#[derive(Debug, Clone)]
pub enum Command {
    Exec(ExecTarget),
    Attach(AttachTarget),
}

impl Command {
    fn wants(&self) -> (bool, bool, bool, bool) {
        match self {
            Command::Exec(t) => (t.stdin, t.stdout, t.stderr, t.tty),
            // The container's terminal, if any, is only known later; a client that asked for
            // one opens a resize stream.
            Command::Attach(t) => (t.stdin, t.stdout, t.stderr, false),
        }
    }
}

/// A session's streams, whatever carries them.
pub struct CommandStreams {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Outlet>,
    pub stderr: Option<Outlet>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub error: Outlet,
    /// v4 and later: a JSON status; else text, and only on failure.
    pub json_status: bool,
    pub closed: CancellationToken,
}

/// Waits for the SPDY streams a `protocol` client opens for these options, accepting each.
pub async fn spdy_streams(
    conn: &mut spdy::Connection,
    protocol: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Option<CommandStreams> {
    let resize_supported = matches!(
        protocol,
        "v5.channel.k8s.io" | "v4.channel.k8s.io" | "v3.channel.k8s.io"
    );
    let mut expected = 1 + usize::from(stdin) + usize::from(stdout) + usize::from(stderr);
    if tty && resize_supported {
        expected += 1;
    }
    let mut s_stdin = None;
    let mut s_stdout = None;
    let mut s_stderr = None;
    let mut s_resize = None;
    let mut s_error = None;
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let s = tokio::select! {
            s = conn.incoming.recv() => s?,
            _ = &mut deadline => {
                tracing::info!("timed out waiting for the client to create streams");
                return None;
            }
            _ = conn.closed.cancelled() => return None,
        };
        let _ = conn
            .writer
            .send(super::mux::WriteCmd::Reply { id: s.id })
            .await;
        let out = Outlet::new(s.id, conn.writer.clone());
        match header(&s.headers, "streamtype") {
            Some("error") => s_error = Some(out),
            Some("stdin") => s_stdin = Some(s.data),
            Some("stdout") => s_stdout = Some(out),
            Some("stderr") => s_stderr = Some(out),
            Some("resize") => s_resize = Some(s.data),
            other => {
                tracing::debug!(stream_type = ?other, "unexpected stream type; ignored");
                continue;
            }
        }
        received += 1;
    }
    Some(CommandStreams {
        stdin: s_stdin,
        stdout: s_stdout,
        stderr: s_stderr,
        resize: s_resize,
        error: s_error?,
        json_status: matches!(protocol, "v5.channel.k8s.io" | "v4.channel.k8s.io"),
        closed: conn.closed.clone(),
    })
}

/// The readable channels of a WebSocket command session: stdin and resize.
pub fn ws_readable(stdin: bool) -> [bool; 5] {
    [stdin, false, false, false, true]
}

/// The streams of a WebSocket command session; tells the client it is connected.
pub async fn ws_streams(
    conn: &mut ws::ChannelConn,
    framing: ws::Framing,
    stdout: bool,
    stderr: bool,
) -> CommandStreams {
    // The Kubernetes servers send an empty message on the first channel they write.
    let first = if stdout {
        CH_STDOUT
    } else if stderr {
        CH_STDERR
    } else {
        CH_ERROR
    };
    let _ = conn
        .writer
        .send(super::mux::WriteCmd::Data {
            id: first,
            data: Bytes::new(),
        })
        .await;
    let out = |id| Outlet::new(id, conn.writer.clone());
    CommandStreams {
        stdin: conn.inputs.get_mut(CH_STDIN).and_then(Option::take),
        stdout: stdout.then(|| out(CH_STDOUT)),
        stderr: stderr.then(|| out(CH_STDERR)),
        resize: conn.inputs.get_mut(CH_RESIZE).and_then(Option::take),
        error: out(CH_ERROR),
        json_status: framing.json_status,
        closed: conn.closed.clone(),
    }
}

/// Terminal sizes as client-go sends them: JSON objects one after another.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

#[derive(Deserialize)]
struct WireSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

impl ResizeDecoder {
    /// Feeds bytes; returns the complete sizes among them.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<WireSize>();
        let consumed = loop {
            match it.next() {
                Some(Ok(s)) => {
                    if s.width > 0 && s.height > 0 {
                        out.push(TermSize {
                            rows: s.height,
                            cols: s.width,
                        });
                    }
                }
                Some(Err(e)) if e.is_eof() => break it.byte_offset(),
                Some(Err(_)) => break self.buf.len(),
                None => break it.byte_offset(),
            }
        };
        self.buf.drain(..consumed.min(self.buf.len()));
        if self.buf.len() > 4096 {
            self.buf.clear();
        }
        out
    }
}

/// The error stream's final word.
enum Outcome {
    Success,
    ExitCode(i32),
    Error(String),
}

fn status_json(o: &Outcome, cmd: &[String]) -> serde_json::Value {
    match o {
        Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::ExitCode(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: command '{}' exited with {code}",
                cmd.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Error(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    }
}

async fn write_status(s: &CommandStreams, o: Outcome, cmd: &[String]) {
    let body = if s.json_status {
        Some(status_json(&o, cmd).to_string())
    } else {
        match &o {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: command '{}' exited with {code}",
                cmd.join(" ")
            )),
            Outcome::Error(m) => Some(format!("Internal error occurred: {m}")),
        }
    };
    if let Some(b) = body {
        s.error.send(Bytes::from(b)).await;
    }
    s.error.finish().await;
}

/// Runs the command with the session's streams until it ends or the client goes away.
pub async fn run<B: Backend>(backend: &B, cmd: Command, mut s: CommandStreams) {
    let (_, _, _, exec_tty) = cmd.wants();
    let args = match &cmd {
        Command::Exec(t) => t.cmd.clone(),
        Command::Attach(t) => vec![format!("attach {}", t.container_id)],
    };
    let mut decoder = ResizeDecoder::default();
    let mut first_size = None;
    if exec_tty && let Some(rx) = s.resize.as_mut() {
        // A shell asks for its size once it starts: have it before.
        if let Ok(Some(b)) = tokio::time::timeout(FIRST_SIZE_WAIT, rx.recv()).await {
            first_size = decoder.push(&b).into_iter().last();
        }
    }
    let started = match &cmd {
        Command::Exec(t) => {
            let mut t = t.clone();
            t.term_size = first_size;
            tokio::select! {
                r = backend.exec(t) => r,
                _ = s.closed.cancelled() => return,
            }
        }
        Command::Attach(t) => tokio::select! {
            r = backend.attach(t.clone()) => r,
            _ = s.closed.cancelled() => return,
        },
    };
    let mut io = match started {
        Ok(io) => io,
        Err(e) => {
            tracing::info!(error = %e, "stream session could not start");
            finish_outputs(&s).await;
            write_status(&s, Outcome::Error(e.message), &args).await;
            return;
        }
    };
    let (exited_tx, exited_rx) = watch::channel(false);
    let stdin_task = tokio::spawn(pump_stdin(s.stdin.take(), io.stdin.take()));
    let resize_task = tokio::spawn(pump_resize(s.resize.take(), io.terminal.take(), decoder));
    let out_task = tokio::spawn(pump_output(
        io.stdout.take(),
        s.stdout.clone(),
        exited_rx.clone(),
    ));
    let err_task = tokio::spawn(pump_output(io.stderr.take(), s.stderr.clone(), exited_rx));
    let done = tokio::select! {
        r = &mut io.done => r,
        _ = s.closed.cancelled() => {
            stdin_task.abort();
            resize_task.abort();
            out_task.abort();
            err_task.abort();
            return;
        }
    };
    let _ = exited_tx.send(true);
    let outputs = async {
        let _ = out_task.await;
        let _ = err_task.await;
    };
    tokio::select! {
        _ = outputs => {}
        _ = tokio::time::sleep(OUTPUT_LINGER) => {}
        _ = s.closed.cancelled() => return,
    }
    stdin_task.abort();
    resize_task.abort();
    let outcome = match done {
        Ok(Some(0)) | Ok(None) => Outcome::Success,
        Ok(Some(code)) if matches!(cmd, Command::Exec(_)) => Outcome::ExitCode(code),
        Ok(Some(_)) => Outcome::Success,
        Err(BackendError { message }) => Outcome::Error(message),
    };
    write_status(&s, outcome, &args).await;
}

/// Returns once the flag is true (or its sender is gone).
async fn became_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn finish_outputs(s: &CommandStreams) {
    for o in [&s.stdout, &s.stderr].into_iter().flatten() {
        o.finish().await;
    }
}

/// Client stdin to the process; the client's end of stdin closes the process's (a terminal
/// stays open: it is the process's controlling terminal).
async fn pump_stdin(rx: Option<mpsc::Receiver<Bytes>>, to: Option<FdIo>) {
    let Some(mut rx) = rx else { return };
    let Some(to) = to else {
        // Nowhere to write: take it and drop it, so the client is not held up.
        while rx.recv().await.is_some() {}
        return;
    };
    while let Some(b) = rx.recv().await {
        if let Err(e) = to.write_all(&b).await {
            tracing::debug!(error = %e, "writing stdin");
            break;
        }
    }
    drop(to);
    // Keep taking what the client sends so that its other streams are not held up.
    while rx.recv().await.is_some() {}
}

async fn pump_resize(
    rx: Option<mpsc::Receiver<Bytes>>,
    pty: Option<std::os::fd::OwnedFd>,
    mut decoder: ResizeDecoder,
) {
    let Some(mut rx) = rx else { return };
    while let Some(b) = rx.recv().await {
        for size in decoder.push(&b) {
            if let Some(p) = &pty
                && let Err(e) = set_window_size(p, size)
            {
                tracing::debug!(error = %e, "resizing the terminal");
            }
        }
    }
}

/// Process output to the client; once the process ended, what is buffered is sent and the
/// stream ends, even if a background child still holds the pipe.
async fn pump_output(from: Option<FdIo>, to: Option<Outlet>, mut exited: watch::Receiver<bool>) {
    let mut buf = vec![0u8; READ_CHUNK];
    if let Some(from) = from {
        loop {
            tokio::select! {
                biased;
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(to) = &to
                            && !to.send(Bytes::copy_from_slice(&buf[..n])).await
                        {
                            return;
                        }
                    }
                },
                _ = became_true(&mut exited) => {
                    while let Ok(Some(n)) = from.read_now(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Some(to) = &to
                            && !to.send(Bytes::copy_from_slice(&buf[..n])).await
                        {
                            return;
                        }
                    }
                    break;
                }
            }
        }
    }
    if let Some(to) = to {
        to.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_are_decoded_across_chunks() {
        let mut d = ResizeDecoder::default();
        assert_eq!(
            d.push(b"{\"Width\":80,\"Height\":24}\n{\"Width\":1"),
            vec![TermSize { rows: 24, cols: 80 }]
        );
        assert_eq!(
            d.push(b"00,\"Height\":40}\n"),
            vec![TermSize {
                rows: 40,
                cols: 100
            }]
        );
        assert!(d.push(b"{\"Width\":0,\"Height\":0}").is_empty(), "no size");
        assert!(d.push(b"garbage").is_empty());
        assert_eq!(
            d.push(b"{\"Width\":10,\"Height\":5}"),
            vec![TermSize { rows: 5, cols: 10 }],
            "garbage is dropped, later sizes still count"
        );
    }

    #[test]
    fn statuses_are_what_client_go_parses() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let v = status_json(&Outcome::ExitCode(3), &cmd);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(
            status_json(&Outcome::Success, &cmd),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let e = status_json(&Outcome::Error("container x is not running".into()), &cmd);
        assert_eq!(e["code"], 500);
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("not running"))
        );
    }
}
