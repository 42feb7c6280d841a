//! The streaming operations behind CRI Exec, Attach and PortForward.
//!
//! podinit copies as little as it can: an `exec_stream` process gets the daemon's pipe ends (or
//! a new pty whose master goes to the daemon) as its stdio, and `connect` hands the daemon the
//! connected socket. Only Attach passes through podinit, because the container's output must
//! reach its log as well as every attached client, and several clients may write its stdin.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{ExecJob, Server, Token};
use crate::api::{
    ApiError, AttachEnded, AttachRequest, AttachStarted, Empty, ExecExit, ExecStreamRequest, Reply,
    StreamStarted,
};
use crate::crilog::Stream;
use crate::spawn::{self, ExecPlan, ExecStdio, SyncMessage};
use crate::sys::{self, Exit};

/// Output an attached client has not taken yet, per stream, before it is cut off.
const ATTACH_BUFFER: usize = 4 * 1024 * 1024;
/// Stdin bytes held for a container that does not read them, before attach stops reading.
const STDIN_BUFFER: usize = 64 * 1024;
/// How long an ended attach may take to hand its client the last output.
const ATTACH_DRAIN: Duration = Duration::from_secs(10);
/// Longest a connection to a pod port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The extra state of an exec whose stdio is the caller's.
pub(super) struct StreamExec {
    pub(super) tty: bool,
    /// The pty master, until the started reply hands it over.
    pub(super) pty: Option<OwnedFd>,
    /// The started reply was sent.
    pub(super) started: bool,
}

/// Output not yet taken by an attached client.
pub(super) struct AttachOut {
    fd: OwnedFd,
    pending: VecDeque<u8>,
}

pub(super) struct Attacher {
    conn: usize,
    ctr: usize,
    stdin: Option<OwnedFd>,
    stdout: Option<AttachOut>,
    stderr: Option<AttachOut>,
    /// The container exited: hand over what is pending, then answer and close.
    ending: Option<(Instant, Option<i32>)>,
}

/// A container's stdin as attach writes it: its pipe or its pty master.
pub(super) struct CtrStdin {
    pub(super) fd: OwnedFd,
    pending: Vec<u8>,
    /// Close once `pending` is written (stdin_once).
    close: bool,
}

impl CtrStdin {
    pub(super) fn new(fd: OwnedFd) -> Self {
        let _ = sys::set_nonblocking(fd.as_fd(), true);
        Self {
            fd,
            pending: Vec::new(),
            close: false,
        }
    }
}

pub(super) struct Connecting {
    conn: usize,
    sock: OwnedFd,
    port: u16,
    v6: bool,
    deadline: Instant,
}

/// Streaming sessions podinit keeps, beside the containers and execs.
#[derive(Default)]
pub(super) struct Streams {
    attachers: Vec<Option<Attacher>>,
    connecting: Vec<Option<Connecting>>,
}

impl Streams {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let a = self
            .attachers
            .iter()
            .flatten()
            .filter_map(|a| a.ending.map(|(d, _)| d));
        let c = self.connecting.iter().flatten().map(|c| c.deadline);
        a.chain(c).min()
    }
}

fn slot<T>(v: &mut Vec<Option<T>>, item: T) -> usize {
    match v.iter().position(Option::is_none) {
        Some(i) => {
            v[i] = Some(item);
            i
        }
        None => {
            v.push(Some(item));
            v.len() - 1
        }
    }
}

/// `write(2)` without blocking; `Ok(0)` when the fd takes nothing now.
fn write_some(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: write(2) from a live slice of the given length.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(e),
        }
    }
}

fn reply_line<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let reply = match serde_json::to_value(v) {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(ApiError::internal(e.to_string())),
    };
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    line
}

impl AttachOut {
    fn new(fd: OwnedFd) -> Self {
        let _ = sys::set_nonblocking(fd.as_fd(), true);
        Self {
            fd,
            pending: VecDeque::new(),
        }
    }

    /// Writes what it can; `false` when the client is gone or too far behind.
    fn push(&mut self, data: &[u8]) -> bool {
        if self.pending.is_empty() {
            match write_some(&self.fd, data) {
                Ok(n) => self.pending.extend(&data[n..]),
                Err(_) => return false,
            }
        } else {
            self.pending.extend(data);
        }
        self.pending.len() <= ATTACH_BUFFER
    }

    /// Writes pending output; `false` when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            match write_some(&self.fd, a) {
                Ok(0) => return true,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(_) => return false,
            }
        }
        true
    }
}

impl Server {
    pub(super) fn collect_stream_polls(&self, add: &mut impl FnMut(i32, i16, Token)) {
        for (i, a) in self.streams.attachers.iter().enumerate() {
            let Some(a) = a else { continue };
            // Stdin is read only as fast as the container takes it; without a stdin any
            // more (stdin_once) it is read and dropped.
            let stdin_busy = self
                .ctr(a.ctr)
                .and_then(|c| c.stdin.as_ref())
                .is_some_and(|s| !s.pending.is_empty());
            if let Some(fd) = &a.stdin
                && !stdin_busy
                && a.ending.is_none()
            {
                add(fd.as_raw_fd(), libc::POLLIN, Token::AttachIn(i));
            }
            for (out, s) in [(&a.stdout, Stream::Stdout), (&a.stderr, Stream::Stderr)] {
                if let Some(o) = out
                    && !o.pending.is_empty()
                {
                    add(o.fd.as_raw_fd(), libc::POLLOUT, Token::AttachOut(i, s));
                }
            }
        }
        for (i, c) in self.containers.iter().enumerate() {
            if let Some(s) = c.as_ref().and_then(|c| c.stdin.as_ref())
                && !s.pending.is_empty()
            {
                add(s.fd.as_raw_fd(), libc::POLLOUT, Token::CtrStdin(i));
            }
        }
        for (i, c) in self.streams.connecting.iter().enumerate() {
            if let Some(c) = c {
                add(c.sock.as_raw_fd(), libc::POLLOUT, Token::Connecting(i));
            }
        }
    }

    // ---- exec with the caller's stdio ----

    pub(super) fn exec_stream(
        &mut self,
        conn: usize,
        req: ExecStreamRequest,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), ApiError> {
        self.refuse_when_shutting_down()?;
        if req.args.is_empty() || req.args[0].is_empty() {
            return Err(ApiError::invalid("exec: no command given"));
        }
        if let Some(cwd) = &req.cwd
            && !cwd.starts_with('/')
        {
            return Err(ApiError::invalid("exec: cwd must be absolute"));
        }
        if fds.len() != req.fd_count() {
            return Err(ApiError::invalid(format!(
                "exec_stream: {} fds sent, {} expected",
                fds.len(),
                req.fd_count()
            )));
        }
        let i = self.find(&req.id)?;
        let c = self.ctr(i).ok_or_else(|| ApiError::not_found(&req.id))?;
        let pid = match (c.running(), c.status.pid) {
            (true, Some(pid)) => pid as i32,
            _ => {
                return Err(ApiError::precondition(format!(
                    "container {} is not running",
                    req.id
                )));
            }
        };
        let stdio = if req.tty {
            ExecStdio::Terminal(req.term_size)
        } else {
            let mut it = fds.drain(..);
            let mut take = |wanted: bool| if wanted { it.next() } else { None };
            ExecStdio::Given([take(req.stdin), take(req.stdout), take(req.stderr)])
        };
        let plan = ExecPlan::new(
            &c.cfg.process,
            req.args.clone(),
            &req.env,
            req.cwd.as_deref(),
            req.user.clone(),
        );
        let spawned =
            spawn::spawn_exec(&c.cfg, &c.cgroup, pid, &plan, stdio, self.own_pidns.as_fd())
                .map_err(|e| ApiError::internal(format!("exec in {}: {e}", req.id)))?;
        tracing::debug!("exec_stream in {}: pid {}", req.id, spawned.pid);
        let job = ExecJob {
            ctr_id: req.id.clone(),
            pid: spawned.pid,
            sync: Some(spawned.sync),
            error: None,
            stdout: None,
            stderr: None,
            out: Vec::new(),
            err: Vec::new(),
            out_truncated: false,
            err_truncated: false,
            deadline: None,
            timed_out: false,
            conn: Some(conn),
            stream: Some(StreamExec {
                tty: req.tty,
                pty: None,
                started: false,
            }),
        };
        slot(&mut self.execs, job);
        Ok(())
    }

    /// Reads a streaming exec's sync messages; answers "started" once it executed.
    pub(super) fn stream_exec_sync(&mut self, i: usize) {
        loop {
            let Some(job) = self.execs.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let Some(sync) = &job.sync else { return };
            match spawn::read_sync(sync.as_fd()) {
                Ok(SyncMessage::WouldBlock) => return,
                Ok(SyncMessage::Pty(fd)) => {
                    if let Some(s) = job.stream.as_mut() {
                        s.pty = Some(fd);
                    }
                }
                Ok(SyncMessage::Error(m)) => {
                    job.error = Some(m);
                    job.sync = None;
                    return;
                }
                Ok(SyncMessage::Closed) | Err(_) => {
                    job.sync = None;
                    if job.error.is_none() {
                        self.stream_exec_started(i);
                    }
                    return;
                }
            }
        }
    }

    fn stream_exec_started(&mut self, i: usize) {
        let Some(job) = self.execs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(s) = job.stream.as_mut() else { return };
        if s.started {
            return;
        }
        s.started = true;
        let tty = s.tty;
        let fds: Vec<OwnedFd> = s.pty.take().into_iter().collect();
        if tty && fds.is_empty() {
            // The child executed without handing over its terminal: it cannot be used.
            tracing::warn!("exec in {}: no pty from the child", job.ctr_id);
        }
        let line = reply_line(&StreamStarted {
            pid: u32::try_from(job.pid).unwrap_or(0),
            tty,
        });
        if let Some(conn) = job.conn {
            self.queue(conn, vec![line], fds, false);
        }
    }

    /// A streaming exec's process was reaped: answer its exit (or why it never ran).
    pub(super) fn stream_exec_exited(&mut self, mut job: ExecJob, exit: Exit) {
        // The child's end of the sync socket is closed now: its messages are all there.
        if let Some(sync) = job.sync.take() {
            loop {
                match spawn::read_sync(sync.as_fd()) {
                    Ok(SyncMessage::Pty(fd)) => {
                        if let Some(s) = job.stream.as_mut() {
                            s.pty = Some(fd);
                        }
                    }
                    Ok(SyncMessage::Error(m)) => {
                        job.error = Some(m);
                        break;
                    }
                    _ => break,
                }
            }
        }
        let Some(conn) = job.conn else { return };
        if let Some(err) = job.error {
            self.reply(
                conn,
                Err(ApiError::new(crate::api::ErrorKind::StartFailed, err)),
            );
            return;
        }
        let mut chunks = Vec::new();
        let mut fds = Vec::new();
        if let Some(s) = job.stream.as_mut()
            && !s.started
        {
            fds.extend(s.pty.take());
            chunks.push(reply_line(&StreamStarted {
                pid: u32::try_from(job.pid).unwrap_or(0),
                tty: s.tty,
            }));
        }
        chunks.push(reply_line(&ExecExit {
            exit_code: exit.code(),
            signal: exit.signal(),
        }));
        self.queue(conn, chunks, fds, true);
    }

    // ---- attach ----

    pub(super) fn attach(
        &mut self,
        conn: usize,
        req: AttachRequest,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), ApiError> {
        if fds.len() != req.fd_count() {
            return Err(ApiError::invalid(format!(
                "attach: {} fds sent, {} expected",
                fds.len(),
                req.fd_count()
            )));
        }
        let i = self.find(&req.id)?;
        let c = self.ctr(i).ok_or_else(|| ApiError::not_found(&req.id))?;
        if !c.running() {
            return Err(ApiError::precondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let tty = c.cfg.process.terminal;
        let has_stdin = c.stdin.is_some();
        let mut it = fds.drain(..);
        let stdin = if req.stdin { it.next() } else { None };
        let stdout = if req.stdout { it.next() } else { None };
        let stderr = if req.stderr { it.next() } else { None };
        // A terminal's output is all stdout; stdin goes nowhere without a stdin to write to.
        let stderr = if tty { None } else { stderr };
        let stdin = if has_stdin { stdin } else { None };
        if let Some(fd) = &stdin {
            let _ = sys::set_nonblocking(fd.as_fd(), true);
        }
        let resize: Vec<OwnedFd> = if tty {
            c.stdout
                .as_ref()
                .and_then(|p| p.fd.try_clone().ok())
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        let a = Attacher {
            conn,
            ctr: i,
            stdin,
            stdout: stdout.map(AttachOut::new),
            stderr: stderr.map(AttachOut::new),
            ending: None,
        };
        slot(&mut self.streams.attachers, a);
        tracing::info!("attach to {} (tty {tty}, stdin {has_stdin})", req.id);
        let line = reply_line(&AttachStarted {
            tty,
            stdin: has_stdin,
        });
        self.queue(conn, vec![line], resize, false);
        Ok(())
    }

    /// Hands container output to its attached clients.
    pub(super) fn fan_out(&mut self, ctr: usize, stream: Stream, data: &[u8]) {
        for a in self.streams.attachers.iter_mut().flatten() {
            if a.ctr != ctr {
                continue;
            }
            let out = match stream {
                Stream::Stdout => &mut a.stdout,
                Stream::Stderr => &mut a.stderr,
            };
            if let Some(o) = out
                && !o.push(data)
            {
                tracing::warn!(
                    "attached client of container {ctr} is gone or too slow; its {} is cut",
                    stream.as_str()
                );
                *out = None;
            }
        }
    }

    pub(super) fn attach_out_ready(&mut self, i: usize, stream: Stream) {
        let Some(a) = self.streams.attachers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let out = match stream {
            Stream::Stdout => &mut a.stdout,
            Stream::Stderr => &mut a.stderr,
        };
        if let Some(o) = out
            && !o.flush()
        {
            *out = None;
        }
        self.maybe_finish_attacher(i);
    }

    /// Client stdin for the container.
    pub(super) fn attach_in_ready(&mut self, i: usize) {
        let Some(a) = self.streams.attachers.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(fd) = &a.stdin else { return };
        let ctr = a.ctr;
        let mut buf = [0u8; 16 * 1024];
        // SAFETY: read(2) into a live stack buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let eof = if n > 0 {
            self.write_ctr_stdin(ctr, &buf[..n as usize]);
            false
        } else if n == 0 {
            true
        } else {
            !matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EINTR)
            )
        };
        if eof {
            a_stdin_closed(self, i, ctr);
        }
    }

    fn write_ctr_stdin(&mut self, ctr: usize, data: &[u8]) {
        let Some(c) = self.ctr_mut(ctr) else { return };
        let Some(s) = c.stdin.as_mut() else { return };
        if s.pending.is_empty() {
            match write_some(&s.fd, data) {
                Ok(n) => s.pending.extend_from_slice(&data[n..]),
                Err(e) => {
                    tracing::debug!("container {}: stdin: {e}", c.status.id);
                    c.stdin = None;
                    return;
                }
            }
        } else {
            s.pending.extend_from_slice(data);
        }
        if s.pending.len() > STDIN_BUFFER {
            // Attach stops reading until the container takes some (see collect_stream_polls).
            tracing::debug!("container {}: stdin backlog", c.status.id);
        }
    }

    pub(super) fn ctr_stdin_ready(&mut self, ctr: usize) {
        let Some(c) = self.ctr_mut(ctr) else { return };
        let Some(s) = c.stdin.as_mut() else { return };
        while !s.pending.is_empty() {
            match write_some(&s.fd, &s.pending) {
                Ok(0) => return,
                Ok(n) => {
                    s.pending.drain(..n);
                }
                Err(_) => {
                    c.stdin = None;
                    return;
                }
            }
        }
        if s.close {
            c.stdin = None;
        }
    }

    /// The container exited: its attached clients get the rest of the output and its end.
    pub(super) fn end_attachers(&mut self, ctr: usize, exit_code: Option<i32>) {
        let deadline = Instant::now() + ATTACH_DRAIN;
        let mut touched = Vec::new();
        for (i, a) in self.streams.attachers.iter_mut().enumerate() {
            if let Some(a) = a
                && a.ctr == ctr
                && a.ending.is_none()
            {
                a.ending = Some((deadline, exit_code));
                a.stdin = None;
                touched.push(i);
            }
        }
        for i in touched {
            self.maybe_finish_attacher(i);
        }
    }

    fn maybe_finish_attacher(&mut self, i: usize) {
        let Some(a) = self.streams.attachers.get(i).and_then(Option::as_ref) else {
            return;
        };
        let Some((deadline, code)) = a.ending else {
            return;
        };
        let drained = [&a.stdout, &a.stderr]
            .iter()
            .all(|o| o.as_ref().is_none_or(|o| o.pending.is_empty()));
        if drained || deadline <= Instant::now() {
            let conn = a.conn;
            self.streams.attachers[i] = None;
            let line = reply_line(&AttachEnded { exit_code: code });
            self.queue(conn, vec![line], Vec::new(), true);
        }
    }

    /// The client of connection `conn` went away: drop its attach or pending connect.
    pub(super) fn drop_stream_conn(&mut self, conn: usize) {
        let gone: Vec<usize> = self
            .streams
            .attachers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.conn == conn).map(|_| i))
            .collect();
        for i in gone {
            let ctr = self.streams.attachers[i].as_ref().map(|a| a.ctr);
            let had_stdin = self.streams.attachers[i]
                .as_ref()
                .is_some_and(|a| a.stdin.is_some());
            self.streams.attachers[i] = None;
            if let Some(ctr) = ctr
                && had_stdin
            {
                self.stdin_session_ended(ctr);
            }
        }
        for c in self.streams.connecting.iter_mut() {
            if c.as_ref().is_some_and(|c| c.conn == conn) {
                *c = None;
            }
        }
    }

    /// An attach that wrote stdin ended: with `stdin_once` the container's stdin closes.
    fn stdin_session_ended(&mut self, ctr: usize) {
        let Some(c) = self.ctr_mut(ctr) else { return };
        if !c.cfg.stdin_once || c.cfg.process.terminal {
            return;
        }
        if let Some(s) = c.stdin.as_mut() {
            tracing::info!("container {}: stdin closed (stdin_once)", c.status.id);
            if s.pending.is_empty() {
                c.stdin = None;
            } else {
                s.close = true;
            }
        }
    }

    // ---- connect ----

    pub(super) fn connect(&mut self, conn: usize, port: u16) -> Result<(), ApiError> {
        if port == 0 {
            return Err(ApiError::invalid("port 0 cannot be forwarded"));
        }
        self.start_connect(conn, port, false)
    }

    fn start_connect(&mut self, conn: usize, port: u16, v6: bool) -> Result<(), ApiError> {
        match sys::tcp_connect_loopback(port, v6) {
            Ok((sock, true)) => {
                self.queue(conn, vec![reply_line(&Empty {})], vec![sock], true);
                Ok(())
            }
            Ok((sock, false)) => {
                let c = Connecting {
                    conn,
                    sock,
                    port,
                    v6,
                    deadline: Instant::now() + CONNECT_TIMEOUT,
                };
                slot(&mut self.streams.connecting, c);
                Ok(())
            }
            Err(e) if !v6 && e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                self.start_connect(conn, port, true)
            }
            Err(e) => Err(connect_error(port, e)),
        }
    }

    pub(super) fn connect_ready(&mut self, i: usize) {
        let Some(c) = self.streams.connecting.get_mut(i).and_then(Option::take) else {
            return;
        };
        match sys::socket_error(c.sock.as_fd()) {
            Ok(()) => self.queue(c.conn, vec![reply_line(&Empty {})], vec![c.sock], true),
            Err(e) if !c.v6 && e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                if let Err(e) = self.start_connect(c.conn, c.port, true) {
                    self.reply(c.conn, Err(e));
                }
            }
            Err(e) => self.reply(c.conn, Err(connect_error(c.port, e))),
        }
    }

    pub(super) fn stream_timers(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .streams
            .connecting
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| c.deadline <= now).map(|_| i))
            .collect();
        for i in late {
            if let Some(c) = self.streams.connecting[i].take() {
                let e = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                self.reply(c.conn, Err(connect_error(c.port, e)));
            }
        }
        let ending: Vec<usize> = self
            .streams
            .attachers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().filter(|a| a.ending.is_some()).map(|_| i))
            .collect();
        for i in ending {
            self.maybe_finish_attacher(i);
        }
    }
}

/// Attach's stdin ended (EOF or error): stop reading it, maybe close the container's.
fn a_stdin_closed(server: &mut Server, i: usize, ctr: usize) {
    if let Some(a) = server.streams.attachers.get_mut(i).and_then(Option::as_mut) {
        a.stdin = None;
    }
    server.stdin_session_ended(ctr);
}

fn connect_error(port: u16, e: io::Error) -> ApiError {
    let kind = if e.raw_os_error() == Some(libc::ECONNREFUSED) {
        crate::api::ErrorKind::FailedPrecondition
    } else {
        crate::api::ErrorKind::Internal
    };
    ApiError::new(kind, format!("connecting to port {port} in the pod: {e}"))
}
