//! Synchronous client of the podinit API (the daemon calls it from `spawn_blocking`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{
    ApiError, AttachRequest, AttachStarted, ContainerStatus, CreateReply, Empty, ErrorKind,
    ExecReplyHeader, ExecRequest, ExecResult, ExecStreamRequest, Info, Reply, Request, SOCKET_NAME,
    StartReply, StreamStarted,
};
use crate::sys;

/// Default limit on connecting, sending and waiting for an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time granted on top of an operation's own timeout (exec, wait).
const SLACK: Duration = Duration::from_secs(10);
/// Largest reply line accepted (a `list` of many containers stays far below).
const MAX_REPLY_LINE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to podinit at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to podinit: {0}")]
    Io(#[from] io::Error),
    #[error("podinit sent an unreadable reply: {0}")]
    Protocol(String),
    #[error("podinit: {0}")]
    Api(#[from] ApiError),
}

impl ClientError {
    /// The API error kind, when podinit answered with an error.
    pub fn api_kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) => Some(e.kind),
            _ => None,
        }
    }

    /// podinit is not there (no socket, nobody listening): read `status.json` instead.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ),
            _ => false,
        }
    }
}

/// A streaming operation podinit has set up: its first reply, the fds that came with it, and
/// the connection on which the second reply (the end) will come. Dropping `conn` before then
/// ends the stream (an exec's process group is killed, an attach detaches).
#[derive(Debug)]
pub struct StreamSession<T> {
    pub started: T,
    pub fds: Vec<OwnedFd>,
    pub conn: UnixStream,
    /// Bytes read past the first reply (the start of the second).
    pub rest: Vec<u8>,
}

/// A client for one pod's podinit. Cheap to clone; every call opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the podinit serving `pod_dir` (its socket is `<pod_dir>/podinit.sock`).
    pub fn for_pod_dir(pod_dir: &Path) -> Self {
        Self::new(pod_dir.join(SOCKET_NAME))
    }

    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Limit on connecting, sending and waiting for an answer (exec and wait add their own).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn info(&self) -> Result<Info, ClientError> {
        self.call(&Request::Info, &[], self.timeout)
    }

    /// Creates the container from `ctrs/<id>/config.json`; `log` receives its CRI log lines.
    pub fn create(
        &self,
        id: &str,
        log: Option<BorrowedFd<'_>>,
    ) -> Result<CreateReply, ClientError> {
        self.create_with_mounts(id, log, &[])
    }

    /// [`Client::create`] with the mount trees the spec's [`PASSED_MOUNTS_ANNOTATION`] names.
    ///
    /// [`PASSED_MOUNTS_ANNOTATION`]: crate::api::PASSED_MOUNTS_ANNOTATION
    pub fn create_with_mounts(
        &self,
        id: &str,
        log: Option<BorrowedFd<'_>>,
        mounts: &[BorrowedFd<'_>],
    ) -> Result<CreateReply, ClientError> {
        let fds: Vec<BorrowedFd<'_>> = log.into_iter().chain(mounts.iter().copied()).collect();
        let req = Request::Create {
            id: id.into(),
            mounts: mounts.len(),
        };
        self.call(&req, &fds, self.timeout)
    }

    /// Starts the container; returns the main process's PID in the pod's PID namespace.
    pub fn start(&self, id: &str) -> Result<u32, ClientError> {
        let r: StartReply = self.call(&Request::Start { id: id.into() }, &[], self.timeout)?;
        Ok(r.pid)
    }

    pub fn kill(&self, id: &str, signal: i32) -> Result<(), ClientError> {
        let _: Empty = self.call(
            &Request::Kill {
                id: id.into(),
                signal,
            },
            &[],
            self.timeout,
        )?;
        Ok(())
    }

    pub fn state(&self, id: &str) -> Result<ContainerStatus, ClientError> {
        self.call(&Request::State { id: id.into() }, &[], self.timeout)
    }

    pub fn list(&self) -> Result<Vec<ContainerStatus>, ClientError> {
        self.call(&Request::List, &[], self.timeout)
    }

    /// Waits up to `timeout` for the container to exit; returns its status either way.
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, ClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.call(
            &Request::Wait {
                id: id.into(),
                timeout_ms,
            },
            &[],
            timeout.saturating_add(SLACK),
        )
    }

    /// Runs a command in the container and collects its output (see [`ExecRequest`]).
    pub fn exec(&self, req: &ExecRequest) -> Result<ExecResult, ClientError> {
        let limit = if req.timeout_ms == 0 {
            // No exec timeout: the caller's own deadline is what bounds us.
            None
        } else {
            Some(Duration::from_millis(req.timeout_ms).saturating_add(SLACK))
        };
        let mut conn = self.connect()?;
        conn.set_read_timeout(limit)?;
        send_request(&conn, &Request::Exec(req.clone()), &[])?;
        let (header, rest): (ExecReplyHeader, Vec<u8>) = read_reply(&mut conn)?;
        let stdout_len = to_len(header.stdout_len)?;
        let stderr_len = to_len(header.stderr_len)?;
        let mut payload = rest;
        let want = stdout_len
            .checked_add(stderr_len)
            .ok_or_else(|| ClientError::Protocol("output lengths overflow".into()))?;
        if payload.len() > want {
            return Err(ClientError::Protocol("more output than announced".into()));
        }
        let have = payload.len();
        payload.resize(want, 0);
        conn.read_exact(&mut payload[have..])?;
        let stderr = payload.split_off(stdout_len);
        Ok(ExecResult {
            exit_code: header.exit_code,
            signal: header.signal,
            timed_out: header.timed_out,
            stdout: payload,
            stderr,
            stdout_truncated: header.stdout_truncated,
            stderr_truncated: header.stderr_truncated,
        })
    }

    /// Runs a command with the given stdio fds (see [`Request::ExecStream`]); returns once it
    /// runs, with the pty master in `fds` when `req.tty`.
    pub fn exec_stream(
        &self,
        req: &ExecStreamRequest,
        fds: &[BorrowedFd<'_>],
    ) -> Result<StreamSession<StreamStarted>, ClientError> {
        self.open_stream(&Request::ExecStream(req.clone()), fds)
    }

    /// Attaches the given fds to a container's stdio (see [`Request::Attach`]).
    pub fn attach(
        &self,
        req: &AttachRequest,
        fds: &[BorrowedFd<'_>],
    ) -> Result<StreamSession<AttachStarted>, ClientError> {
        self.open_stream(&Request::Attach(req.clone()), fds)
    }

    /// A TCP connection to `port` on the pod's loopback.
    pub fn connect_port(&self, port: u16) -> Result<OwnedFd, ClientError> {
        let s: StreamSession<Empty> = self.open_stream(&Request::Connect { port }, &[])?;
        s.fds
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("connect answered without a socket".into()))
    }

    fn open_stream<T: DeserializeOwned>(
        &self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<StreamSession<T>, ClientError> {
        let conn = self.connect()?;
        conn.set_read_timeout(Some(self.timeout))?;
        send_request(&conn, req, fds)?;
        let (started, rest, fds) = read_reply_with_fds(&conn)?;
        conn.set_read_timeout(None)?;
        Ok(StreamSession {
            started,
            fds,
            conn,
            rest,
        })
    }

    /// Switches the container's log to `log` (ReopenContainerLog).
    pub fn reopen_log(&self, id: &str, log: BorrowedFd<'_>) -> Result<(), ClientError> {
        let _: Empty = self.call(&Request::ReopenLog { id: id.into() }, &[log], self.timeout)?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<(), ClientError> {
        let _: Empty = self.call(&Request::Delete { id: id.into() }, &[], self.timeout)?;
        Ok(())
    }

    /// Sends any request and decodes the `ok` payload as `T`.
    pub fn call<T: DeserializeOwned>(
        &self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut conn = self.connect()?;
        conn.set_read_timeout(Some(timeout))?;
        send_request(&conn, req, fds)?;
        let (value, rest) = read_reply(&mut conn)?;
        if !rest.is_empty() {
            return Err(ClientError::Protocol(
                "unexpected bytes after the reply".into(),
            ));
        }
        Ok(value)
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let err = |source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        };
        let conn = connect_unix(&self.socket).map_err(err)?;
        conn.set_write_timeout(Some(self.timeout)).map_err(err)?;
        Ok(conn)
    }
}

/// Decodes one reply line (without its newline) of a streaming session.
pub fn decode_reply_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, ClientError> {
    let reply: Reply =
        serde_json::from_slice(line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match reply {
        Reply::Ok(v) => serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string())),
        Reply::Error(e) => Err(ClientError::Api(e)),
    }
}

/// Like [`read_reply`], keeping the fds that come with the reply.
fn read_reply_with_fds<T: DeserializeOwned>(
    conn: &UnixStream,
) -> Result<(T, Vec<u8>, Vec<OwnedFd>), ClientError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 8192];
    let mut fds = Vec::new();
    let nl = loop {
        let n = match sys::recv_with_fds(conn.as_fd(), &mut chunk, &mut fds, false) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(ClientError::Protocol(
                "podinit closed the connection without a reply".into(),
            ));
        }
        let start = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            break start + pos;
        }
        if buf.len() > MAX_REPLY_LINE {
            return Err(ClientError::Protocol("reply line too long".into()));
        }
    };
    let rest = buf.split_off(nl + 1);
    let value = decode_reply_line(&buf[..nl])?;
    Ok((value, rest, fds))
}

fn to_len(n: u64) -> Result<usize, ClientError> {
    usize::try_from(n).map_err(|_| ClientError::Protocol("output length out of range".into()))
}

/// Connects to a Unix socket; paths longer than `sun_path` go through `/proc/self/fd/<dir>`.
fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    const SUN_PATH_MAX: usize = 107;
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return UnixStream::connect(path);
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return UnixStream::connect(path),
    };
    let dirfd = sys::open(dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let short = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&dirfd).to_string())
        .join(name);
    UnixStream::connect(short)
}

fn send_request(
    conn: &UnixStream,
    req: &Request,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ClientError> {
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // The fds ride on the first bytes; whatever the first send leaves is written plainly.
    let n = sys::send_with_fds(conn.as_fd(), &line, fds)?;
    let mut w = conn;
    w.write_all(&line[n..])?;
    Ok(())
}

/// Reads the reply line and decodes it; returns bytes read past the line (exec output).
fn read_reply<T: DeserializeOwned>(conn: &mut UnixStream) -> Result<(T, Vec<u8>), ClientError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 8192];
    let nl = loop {
        let n = match conn.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(ClientError::Protocol(
                "podinit closed the connection without a reply".into(),
            ));
        }
        let start = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            break start + pos;
        }
        if buf.len() > MAX_REPLY_LINE {
            return Err(ClientError::Protocol("reply line too long".into()));
        }
    };
    let rest = buf.split_off(nl + 1);
    let reply: Reply =
        serde_json::from_slice(&buf[..nl]).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match reply {
        Reply::Ok(v) => {
            let t = serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok((t, rest))
        }
        Reply::Error(e) => Err(ClientError::Api(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-shot fake podinit: answers one connection with `reply` and returns what it read.
    fn fake(reply: Vec<u8>) -> (tempfile::TempDir, std::thread::JoinHandle<(Vec<u8>, usize)>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join(SOCKET_NAME)).expect("bind");
        let h = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut fds = Vec::new();
            let n = sys::recv_with_fds(conn.as_fd(), &mut buf, &mut fds, false).expect("recv");
            buf.truncate(n);
            (&conn).write_all(&reply).expect("write");
            (buf, fds.len())
        });
        (dir, h)
    }

    #[test]
    fn start_decodes_pid_and_sends_request_line() {
        let (dir, h) = fake(b"{\"ok\":{\"pid\":77}}\n".to_vec());
        let c = Client::for_pod_dir(dir.path());
        assert_eq!(c.start("c1").expect("start"), 77);
        let (sent, nfds) = h.join().expect("join");
        assert_eq!(sent, b"{\"op\":\"start\",\"id\":\"c1\"}\n");
        assert_eq!(nfds, 0);
    }

    #[test]
    fn create_passes_the_log_fd() {
        let (dir, h) = fake(
            b"{\"ok\":{\"status\":{\"id\":\"c1\",\"state\":\"created\",\"created_ns\":1}}}\n"
                .to_vec(),
        );
        let c = Client::for_pod_dir(dir.path());
        let (_r, w) = sys::pipe().expect("pipe");
        let reply = c.create("c1", Some(w.as_fd())).expect("create");
        assert_eq!(reply.status.id, "c1");
        assert!(reply.warnings.is_empty());
        let (_, nfds) = h.join().expect("join");
        assert_eq!(nfds, 1);
    }

    #[test]
    fn api_errors_keep_their_kind() {
        let (dir, _h) =
            fake(b"{\"error\":{\"kind\":\"NotFound\",\"message\":\"nope\"}}\n".to_vec());
        let err = Client::for_pod_dir(dir.path())
            .state("x")
            .expect_err("error");
        assert_eq!(err.api_kind(), Some(ErrorKind::NotFound));
    }

    #[test]
    fn exec_reads_raw_output_after_the_line() {
        let mut reply = br#"{"ok":{"exit_code":2,"timed_out":false,"stdout_len":3,"stderr_len":2,"stdout_truncated":false,"stderr_truncated":true}}"#.to_vec();
        reply.push(b'\n');
        reply.extend_from_slice(b"a\nb\x00\xff");
        let (dir, _h) = fake(reply);
        let r = Client::for_pod_dir(dir.path())
            .exec(&ExecRequest {
                id: "c".into(),
                args: vec!["x".into()],
                ..Default::default()
            })
            .expect("exec");
        assert_eq!(r.exit_code, 2);
        assert_eq!(r.stdout, b"a\nb");
        assert_eq!(r.stderr, b"\x00\xff");
        assert!(r.stderr_truncated && !r.stdout_truncated);
    }

    #[test]
    fn no_socket_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Client::for_pod_dir(dir.path())
            .info()
            .expect_err("no socket");
        assert!(err.is_unavailable());
    }

    #[test]
    fn closed_without_reply_is_a_protocol_error() {
        let (dir, _h) = fake(Vec::new());
        let err = Client::for_pod_dir(dir.path()).list().expect_err("empty");
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    }

    #[test]
    fn long_socket_paths_connect_through_proc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        // Bind through /proc/self/fd as well: the long path does not fit in sun_path.
        let dirfd = sys::open(&deep, libc::O_PATH | libc::O_DIRECTORY, 0).expect("open dir");
        let short = Path::new("/proc/self/fd")
            .join(std::os::fd::AsRawFd::as_raw_fd(&dirfd).to_string())
            .join(SOCKET_NAME);
        let listener = UnixListener::bind(short).expect("bind");
        let sock = deep.join(SOCKET_NAME);
        assert!(sock.as_os_str().len() > 108);
        let h = std::thread::spawn(move || listener.accept().map(|_| ()));
        connect_unix(&sock).expect("connect");
        h.join().expect("join").expect("accept");
    }
}
