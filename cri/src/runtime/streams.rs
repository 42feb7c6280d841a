//! Exec, Attach and PortForward for the streaming server: checks for the RPCs, and the
//! podinit sessions that hand the server a process's stdio fds or a socket into the pod.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use podinit::api::{AttachEnded, AttachRequest, ContainerState, ExecExit, ExecStreamRequest};
use podinit::client::{Client, StreamSession};
use tokio::io::AsyncReadExt;

use super::Runtime;
use super::error::{Result, RuntimeError};
use super::records::{ContainerRecord, PodRecord, PodState};
use crate::streaming::backend::{
    AttachTarget, Backend, BackendError, Done, ExecTarget, FdIo, ProcessIo,
};

/// Limit on podinit setting a stream up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest end line podinit sends.
const MAX_END_LINE: usize = 64 * 1024;

fn be(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(e.to_string())
}

impl Runtime {
    /// The container an Exec or Attach names: it must exist and run (as containerd checks).
    pub async fn streamable_container(&self, query: &str) -> Result<ContainerRecord> {
        let record = self.find_container(query)?;
        let st = self.observed_status(&record).await;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::precondition(format!(
                "container {} is not running (state {:?})",
                record.id, st.state
            )));
        }
        Ok(record)
    }

    /// The pod a PortForward names: it must exist and be ready.
    pub async fn forwardable_pod(&self, query: &str) -> Result<PodRecord> {
        let pod = self.find_pod(query)?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::precondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        Ok(pod)
    }

    fn stream_client(&self, pod_id: &str) -> Client {
        Client::for_pod_dir(&self.pod_dir(pod_id)).with_timeout(SETUP_TIMEOUT)
    }

    pub async fn stream_exec(&self, t: ExecTarget) -> std::result::Result<ProcessIo, BackendError> {
        let record = self
            .streamable_container(&t.container_id)
            .await
            .map_err(be)?;
        let mut ours = Ours::default();
        let mut theirs = Vec::new();
        if !t.tty {
            ours.pipes(&mut theirs, t.stdin, t.stdout, t.stderr)
                .map_err(be)?;
        }
        let req = ExecStreamRequest {
            id: record.id.clone(),
            args: t.cmd.clone(),
            tty: t.tty,
            term_size: t.term_size,
            stdin: t.stdin && !t.tty,
            stdout: t.stdout && !t.tty,
            stderr: t.stderr && !t.tty,
            ..Default::default()
        };
        let client = self.stream_client(&record.pod_id);
        let session = tokio::task::spawn_blocking(move || {
            let fds: Vec<BorrowedFd<'_>> = theirs.iter().map(|f: &OwnedFd| f.as_fd()).collect();
            client.exec_stream(&req, &fds)
        })
        .await
        .map_err(be)?
        .map_err(|e| BackendError::new(format!("exec in container {}: {e}", record.id)))?;
        let StreamSession {
            started,
            mut fds,
            conn,
            rest,
        } = session;
        let mut io = ours.into_io().map_err(be)?;
        if started.tty {
            let master = fds
                .pop()
                .ok_or_else(|| BackendError::new("podinit sent no terminal"))?;
            if t.stdin {
                io.stdin = Some(FdIo::new(master.try_clone().map_err(be)?).map_err(be)?);
            }
            if t.stdout {
                io.stdout = Some(FdIo::new(master.try_clone().map_err(be)?).map_err(be)?);
            }
            io.terminal = Some(master);
        }
        io.done = Box::pin(async move {
            let end: ExecExit = read_end(conn, rest).await?;
            Ok(Some(end.exit_code))
        });
        Ok(io)
    }

    pub async fn stream_attach(
        &self,
        t: AttachTarget,
    ) -> std::result::Result<ProcessIo, BackendError> {
        let record = self
            .streamable_container(&t.container_id)
            .await
            .map_err(be)?;
        let mut ours = Ours::default();
        let mut theirs = Vec::new();
        ours.pipes(&mut theirs, t.stdin, t.stdout, t.stderr)
            .map_err(be)?;
        let req = AttachRequest {
            id: record.id.clone(),
            stdin: t.stdin,
            stdout: t.stdout,
            stderr: t.stderr,
        };
        let client = self.stream_client(&record.pod_id);
        let session = tokio::task::spawn_blocking(move || {
            let fds: Vec<BorrowedFd<'_>> = theirs.iter().map(|f: &OwnedFd| f.as_fd()).collect();
            client.attach(&req, &fds)
        })
        .await
        .map_err(be)?
        .map_err(|e| BackendError::new(format!("attach to container {}: {e}", record.id)))?;
        let mut io = ours.into_io().map_err(be)?;
        if !session.started.stdin {
            // The container has no stdin: what the client types goes nowhere.
            io.stdin = None;
        }
        io.terminal = session.fds.into_iter().next();
        let (conn, rest) = (session.conn, session.rest);
        io.done = Box::pin(async move {
            let end: AttachEnded = read_end(conn, rest).await?;
            Ok(end.exit_code)
        });
        Ok(io)
    }

    pub async fn stream_connect(
        &self,
        pod_id: &str,
        port: u16,
    ) -> std::result::Result<tokio::net::TcpStream, BackendError> {
        let pod = self.forwardable_pod(pod_id).await.map_err(be)?;
        let client = self.stream_client(&pod.id);
        let fd = tokio::task::spawn_blocking(move || client.connect_port(port))
            .await
            .map_err(be)?
            .map_err(be)?;
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true).map_err(be)?;
        tokio::net::TcpStream::from_std(std).map_err(be)
    }
}

/// The daemon's ends of a session's pipes.
#[derive(Default)]
struct Ours {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Ours {
    /// Makes the pipes asked for; the process's ends go to `theirs` in stdin, stdout,
    /// stderr order.
    fn pipes(
        &mut self,
        theirs: &mut Vec<OwnedFd>,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> std::io::Result<()> {
        if stdin {
            let (r, w) = podinit::sys::pipe()?;
            theirs.push(r);
            self.stdin = Some(w);
        }
        for (wanted, slot) in [(stdout, &mut self.stdout), (stderr, &mut self.stderr)] {
            if wanted {
                let (r, w) = podinit::sys::pipe()?;
                theirs.push(w);
                *slot = Some(r);
            }
        }
        Ok(())
    }

    fn into_io(self) -> std::io::Result<ProcessIo> {
        let wrap = |f: Option<OwnedFd>| f.map(FdIo::new).transpose();
        let done: Done = Box::pin(async { Ok(None) });
        Ok(ProcessIo {
            stdin: wrap(self.stdin)?,
            stdout: wrap(self.stdout)?,
            stderr: wrap(self.stderr)?,
            terminal: None,
            done,
        })
    }
}

/// Reads the line podinit sends when a stream ends.
async fn read_end<T: serde::de::DeserializeOwned>(
    conn: std::os::unix::net::UnixStream,
    mut buf: Vec<u8>,
) -> std::result::Result<T, BackendError> {
    conn.set_nonblocking(true).map_err(be)?;
    let mut conn = tokio::net::UnixStream::from_std(conn).map_err(be)?;
    while !buf.contains(&b'\n') {
        if buf.len() > MAX_END_LINE {
            return Err(BackendError::new("podinit sent an overlong line"));
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.map_err(be)?;
        if n == 0 {
            return Err(BackendError::new(
                "podinit went away before the end of the stream (the pod stopped?)",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let nl = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    podinit::client::decode_reply_line(&buf[..nl]).map_err(be)
}

impl Backend for crate::daemon::Daemon {
    async fn exec(&self, t: ExecTarget) -> std::result::Result<ProcessIo, BackendError> {
        self.runtime.stream_exec(t).await
    }

    async fn attach(&self, t: AttachTarget) -> std::result::Result<ProcessIo, BackendError> {
        self.runtime.stream_attach(t).await
    }

    async fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
    ) -> std::result::Result<tokio::net::TcpStream, BackendError> {
        self.runtime.stream_connect(pod_id, port).await
    }
}
