//! podinit's event loop: one thread, `poll(2)` over the API socket, a signalfd (children and
//! shutdown signals), the API connections, the containers' output and the execs' output.
//! Nothing blocks the loop except short file writes (logs, status files) and the fork itself.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::api::{
    self, ApiError, CTRS_DIR, ContainerState, ContainerStatus, CreateReply, Empty, ErrorKind,
    ExecReplyHeader, ExecRequest, Info, Reply, Request, SOCKET_NAME, StartReply,
};
use crate::cgroup::{CgroupRoot, ContainerCgroup, Mode};
use crate::crilog::{LineSplitter, Stream};
use crate::lost_signal;
use crate::spawn::{self, ExecPlan, SyncMessage};
use crate::spec::{self, ContainerConfig, PodContext, SpecError};
use crate::status;
use crate::sys::{self, Exit};
use crate::timefmt::now_ns;

mod streams;
use streams::{CtrStdin, StreamExec, Streams};

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to read its reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a container's setup may take before Start gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After the grace period and SIGKILL, how long to wait for the last reaps.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Longest Delete or shutdown waits for a cgroup's last processes to die.
const CGROUP_DRAIN: Duration = Duration::from_secs(2);
const MAX_CONNS: usize = 256;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Options {
    pub pod_dir: PathBuf,
    /// Time containers get between their stop signal and SIGKILL when the pod shuts down.
    pub grace: Duration,
    /// The pod shares the host's IPC namespace: `/dev/shm` is the host's (the pod host binds
    /// it) and podinit must not cover it with a tmpfs of its own.
    pub host_ipc: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Output of a container or exec being read.
struct OutPipe {
    fd: OwnedFd,
    splitter: LineSplitter,
}

struct StartJob {
    sync: OwnedFd,
    conn: Option<usize>,
    deadline: Instant,
}

struct Container {
    cfg: ContainerConfig,
    status: ContainerStatus,
    cgroup: ContainerCgroup,
    /// Mount trees passed with Create, attached in the container's namespace at start.
    passed_mounts: Vec<OwnedFd>,
    log: Option<OwnedFd>,
    stdout: Option<OutPipe>,
    stderr: Option<OutPipe>,
    start: Option<StartJob>,
    /// Connections waiting for the exit, with their deadlines.
    waiters: Vec<(usize, Instant)>,
    stop_sent: bool,
    /// A stop signal the kernel dropped, sent again once the process catches it.
    pending_signal: Option<lost_signal::Pending>,
    /// Where attach writes the container's stdin (CRI `stdin`).
    stdin: Option<CtrStdin>,
}

impl Container {
    fn running(&self) -> bool {
        self.status.state == ContainerState::Running
    }
}

struct ExecJob {
    ctr_id: String,
    pid: i32,
    sync: Option<OwnedFd>,
    error: Option<String>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    out: Vec<u8>,
    err: Vec<u8>,
    out_truncated: bool,
    err_truncated: bool,
    deadline: Option<Instant>,
    timed_out: bool,
    conn: Option<usize>,
    /// Set for `exec_stream`: the process has the caller's stdio.
    stream: Option<StreamExec>,
}

enum ConnState {
    Reading {
        deadline: Instant,
    },
    /// Waiting for a start, exec or wait to finish.
    Pending,
    Writing {
        deadline: Instant,
    },
}

struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    fds: Vec<OwnedFd>,
    state: ConnState,
    out: VecDeque<Vec<u8>>,
    out_pos: usize,
    /// Sent with the next bytes written.
    out_fds: Vec<OwnedFd>,
    /// Close once `out` is written; otherwise the connection waits again (streams).
    close_when_flushed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Term,
    Kill,
}

struct Shutdown {
    phase: Phase,
    deadline: Instant,
}

/// What handling a request produced.
enum Outcome {
    Reply(Result<serde_json::Value, ApiError>),
    Pending,
    /// The handler queued its reply on the connection itself.
    Written,
}

fn ok<T: serde::Serialize>(v: T) -> Outcome {
    Outcome::Reply(serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string())))
}

#[derive(Clone, Copy)]
enum Token {
    Listener,
    Signal,
    Conn(usize),
    CtrOut(usize, Stream),
    CtrSync(usize),
    ExecOut(usize, Stream),
    ExecSync(usize),
    AttachIn(usize),
    AttachOut(usize, Stream),
    CtrStdin(usize),
    Connecting(usize),
}

pub struct Server {
    pod_dir: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
    sigfd: SignalFd,
    own_pidns: OwnedFd,
    cgroups: Result<CgroupRoot, String>,
    pod: PodContext,
    pod_shm: Option<PathBuf>,
    grace: Duration,
    containers: Vec<Option<Container>>,
    conns: Vec<Option<Conn>>,
    execs: Vec<Option<ExecJob>>,
    shutdown: Option<Shutdown>,
    streams: Streams,
    scratch: Vec<u8>,
    lines: Vec<u8>,
}

/// Sends `signal` to a container's process, and watches for it to have been dropped (see
/// `lost_signal`).
fn send_watched(c: &mut Container, pid: i32, signal: i32) -> io::Result<()> {
    let dropped = !lost_signal::never_dropped(signal)
        && lost_signal::disposition(pid, signal).is_ok_and(|d| d.drops());
    sys::kill(pid, signal)?;
    if dropped {
        tracing::debug!(container = %c.cfg.id, signal, "signal dropped until the process catches it");
        c.pending_signal = Some(lost_signal::Pending::new(signal, Instant::now()));
    }
    Ok(())
}

fn resend_if_caught(c: &mut Container, now: Instant) {
    let Some(mut pending) = c.pending_signal.take() else {
        return;
    };
    if pending.next > now {
        c.pending_signal = Some(pending);
        return;
    }
    let pid = match (c.running(), c.status.pid) {
        (true, Some(pid)) => pid as i32,
        _ => return,
    };
    let disposition = lost_signal::disposition(pid, pending.signal).ok();
    match pending.step(now, disposition) {
        lost_signal::Step::Resend => {
            tracing::info!(container = %c.cfg.id, signal = pending.signal, "sending the signal the process dropped again, now that it catches it");
            let _ = sys::kill(pid, pending.signal);
        }
        lost_signal::Step::Drop => {}
        lost_signal::Step::Wait => c.pending_signal = Some(pending),
    }
}

impl Server {
    /// Sets podinit up (signals, cgroups, pod shm, socket) without serving yet.
    pub fn new(opts: Options) -> Result<Self, ServerError> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGPWR,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGPIPE,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| io_ctx("blocking signals")(e.into()))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_ctx("signalfd")(e.into()))?;
        if std::process::id() != 1
            && let Err(e) = sys::set_child_subreaper()
        {
            tracing::warn!("cannot become a child subreaper: {e}");
        }
        let own_pidns = sys::open(Path::new("/proc/self/ns/pid"), libc::O_RDONLY, 0)
            .map_err(io_ctx("opening /proc/self/ns/pid"))?;

        let ctrs = opts.pod_dir.join(CTRS_DIR);
        std::fs::create_dir_all(&ctrs).map_err(io_ctx(format!("creating {}", ctrs.display())))?;

        let cgroups = CgroupRoot::setup().map_err(|e| e.to_string());
        match &cgroups {
            Ok(c) => tracing::info!("cgroup {:?}, controllers {:?}", c.mode(), c.controllers()),
            Err(e) => tracing::warn!("cgroups unavailable, containers cannot start: {e}"),
        }
        let pod = PodContext {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            net_ns: spec::ns_id(Path::new("/proc/self/ns/net")),
            ipc_ns: spec::ns_id(Path::new("/proc/self/ns/ipc")),
            uts_ns: spec::ns_id(Path::new("/proc/self/ns/uts")),
        };
        let pod_shm = setup_pod_shm(opts.host_ipc);
        close_stale_statuses(&opts.pod_dir);

        let socket = opts.pod_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_ctx(format!("removing {}", socket.display()))(e)),
        }
        let listener =
            UnixListener::bind(&socket).map_err(io_ctx(format!("binding {}", socket.display())))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_ctx("chmod socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_ctx("nonblocking listener"))?;
        tracing::info!("podinit serving {}", socket.display());
        Ok(Self {
            pod_dir: opts.pod_dir,
            socket,
            listener,
            sigfd,
            own_pidns,
            cgroups,
            pod,
            pod_shm,
            grace: opts.grace,
            containers: Vec::new(),
            conns: Vec::new(),
            execs: Vec::new(),
            shutdown: None,
            streams: Streams::default(),
            scratch: vec![0u8; READ_CHUNK],
            lines: Vec::with_capacity(READ_CHUNK),
        })
    }

    /// Serves until a shutdown signal has stopped every container; returns then.
    pub fn run(mut self) -> Result<(), ServerError> {
        let mut pollfds: Vec<libc::pollfd> = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        loop {
            if self.shutdown_done() {
                self.finish_shutdown();
                return Ok(());
            }
            pollfds.clear();
            tokens.clear();
            self.collect_polls(&mut pollfds, &mut tokens);
            let timeout = self.next_timeout();
            // SAFETY: pollfds is a live array of `len` pollfd structs.
            let n =
                unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_ctx("poll")(e));
            }
            for (pfd, tok) in pollfds.iter().zip(tokens.iter()) {
                if pfd.revents != 0 {
                    self.dispatch(*tok, pfd.revents);
                }
            }
            self.handle_timers();
        }
    }

    fn collect_polls(&self, pfds: &mut Vec<libc::pollfd>, toks: &mut Vec<Token>) {
        let mut add = |fd: RawFd, events: i16, tok: Token| {
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            toks.push(tok);
        };
        add(self.listener.as_raw_fd(), libc::POLLIN, Token::Listener);
        add(self.sigfd.as_fd().as_raw_fd(), libc::POLLIN, Token::Signal);
        for (i, c) in self.conns.iter().enumerate() {
            if let Some(c) = c {
                let ev = match c.state {
                    ConnState::Reading { .. } | ConnState::Pending => {
                        libc::POLLIN | libc::POLLRDHUP
                    }
                    ConnState::Writing { .. } => libc::POLLOUT,
                };
                add(c.stream.as_raw_fd(), ev, Token::Conn(i));
            }
        }
        for (i, c) in self.containers.iter().enumerate() {
            let Some(c) = c else { continue };
            if let Some(p) = &c.stdout {
                add(
                    p.fd.as_raw_fd(),
                    libc::POLLIN,
                    Token::CtrOut(i, Stream::Stdout),
                );
            }
            if let Some(p) = &c.stderr {
                add(
                    p.fd.as_raw_fd(),
                    libc::POLLIN,
                    Token::CtrOut(i, Stream::Stderr),
                );
            }
            if let Some(s) = &c.start {
                add(s.sync.as_raw_fd(), libc::POLLIN, Token::CtrSync(i));
            }
        }
        for (i, e) in self.execs.iter().enumerate() {
            let Some(e) = e else { continue };
            if let Some(fd) = &e.stdout {
                add(
                    fd.as_raw_fd(),
                    libc::POLLIN,
                    Token::ExecOut(i, Stream::Stdout),
                );
            }
            if let Some(fd) = &e.stderr {
                add(
                    fd.as_raw_fd(),
                    libc::POLLIN,
                    Token::ExecOut(i, Stream::Stderr),
                );
            }
            if let Some(fd) = &e.sync {
                add(fd.as_raw_fd(), libc::POLLIN, Token::ExecSync(i));
            }
        }
        self.collect_stream_polls(&mut add);
    }

    /// Milliseconds until the nearest deadline (-1: none).
    fn next_timeout(&self) -> libc::c_int {
        let mut next: Option<Instant> = self.shutdown.as_ref().map(|s| s.deadline);
        let mut consider = |d: Instant| {
            next = Some(next.map_or(d, |n| n.min(d)));
        };
        for c in self.conns.iter().flatten() {
            match c.state {
                ConnState::Reading { deadline } | ConnState::Writing { deadline } => {
                    consider(deadline)
                }
                ConnState::Pending => {}
            }
        }
        for c in self.containers.iter().flatten() {
            if let Some(s) = &c.start {
                consider(s.deadline);
            }
            for (_, d) in &c.waiters {
                consider(*d);
            }
            if let Some(p) = &c.pending_signal {
                consider(p.next);
            }
        }
        for e in self.execs.iter().flatten() {
            if let Some(d) = e.deadline {
                consider(d);
            }
        }
        if let Some(d) = self.streams.next_deadline() {
            consider(d);
        }
        match next {
            None => -1,
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        }
    }

    fn dispatch(&mut self, tok: Token, revents: i16) {
        match tok {
            Token::Listener => self.accept(),
            Token::Signal => self.read_signals(),
            Token::Conn(i) => self.conn_event(i, revents),
            Token::CtrOut(i, s) => self.read_container_output(i, s, false),
            Token::CtrSync(i) => self.container_sync(i),
            Token::ExecOut(i, s) => self.read_exec_output(i, s),
            Token::ExecSync(i) => self.exec_sync(i),
            Token::AttachIn(i) => self.attach_in_ready(i),
            Token::AttachOut(i, s) => self.attach_out_ready(i, s),
            Token::CtrStdin(i) => self.ctr_stdin_ready(i),
            Token::Connecting(i) => self.connect_ready(i),
        }
    }

    // ---- signals and reaping ----

    fn read_signals(&mut self) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => {
                    let signo = info.ssi_signo as i32;
                    if signo == libc::SIGCHLD {
                        self.reap();
                    } else if [libc::SIGTERM, libc::SIGPWR, libc::SIGINT].contains(&signo) {
                        self.begin_shutdown(signo);
                    } else {
                        tracing::debug!("ignoring signal {signo}");
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("reading signalfd: {e}");
                    return;
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match sys::reap_one() {
                Ok(Some((pid, exit))) => self.on_exit(pid, exit),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: i32, exit: Exit) {
        let pid_u = u32::try_from(pid).ok();
        if let Some(i) = self.containers.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| c.status.pid == pid_u && c.status.state != ContainerState::Exited)
        }) {
            self.container_exited(i, exit);
            return;
        }
        if let Some(i) = self
            .execs
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.pid == pid))
        {
            self.exec_exited(i, exit);
            return;
        }
        tracing::debug!("reaped orphan {pid} ({exit:?})");
    }

    // ---- connections ----

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let live = self.conns.iter().flatten().count();
                    if live >= MAX_CONNS {
                        tracing::warn!("too many connections, dropping one");
                        continue;
                    }
                    let conn = Conn {
                        stream,
                        rbuf: Vec::new(),
                        fds: Vec::new(),
                        state: ConnState::Reading {
                            deadline: Instant::now() + READ_TIMEOUT,
                        },
                        out: VecDeque::new(),
                        out_pos: 0,
                        out_fds: Vec::new(),
                        close_when_flushed: false,
                    };
                    match self.conns.iter().position(Option::is_none) {
                        Some(slot) => self.conns[slot] = Some(conn),
                        None => self.conns.push(Some(conn)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn conn_event(&mut self, i: usize, revents: i16) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        match conn.state {
            ConnState::Reading { .. } => {
                let mut fds = Vec::new();
                let r = sys::recv_with_fds(conn.stream.as_fd(), &mut self.scratch, &mut fds, true);
                conn.fds.extend(fds);
                match r {
                    Ok(0) => self.close_conn(i),
                    Ok(n) => {
                        conn.rbuf.extend_from_slice(&self.scratch[..n]);
                        if let Some(nl) = conn.rbuf.iter().position(|&b| b == b'\n') {
                            let line = conn.rbuf[..nl].to_vec();
                            conn.rbuf.clear();
                            self.handle_line(i, &line);
                        } else if conn.rbuf.len() > api::MAX_REQUEST {
                            self.reply(i, Err(ApiError::invalid("request too large")));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        tracing::debug!("reading request: {e}");
                        self.close_conn(i);
                    }
                }
            }
            ConnState::Pending => {
                // The client has nothing more to say; data or end-of-stream means it gave up.
                let n = conn.stream.as_fd();
                let r = sys::recv_with_fds(n, &mut self.scratch, &mut Vec::new(), true);
                let gone = match r {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        revents & (libc::POLLHUP | libc::POLLERR) != 0
                    }
                    Err(_) => true,
                };
                if gone || revents & libc::POLLRDHUP != 0 {
                    self.abandon(i);
                }
            }
            ConnState::Writing { .. } => self.flush(i),
        }
    }

    /// The client of a pending request went away: cancel what only it cared about.
    fn abandon(&mut self, i: usize) {
        for c in self.containers.iter_mut().flatten() {
            c.waiters.retain(|(w, _)| *w != i);
            if let Some(s) = &mut c.start
                && s.conn == Some(i)
            {
                s.conn = None;
            }
        }
        for e in self.execs.iter_mut().flatten() {
            if e.conn == Some(i) {
                e.conn = None;
                tracing::info!(
                    "exec client of {} went away; killing its process group",
                    e.ctr_id
                );
                let _ = sys::kill(-e.pid, libc::SIGKILL);
                let _ = sys::kill(e.pid, libc::SIGKILL);
            }
        }
        self.drop_stream_conn(i);
        self.close_conn(i);
    }

    fn close_conn(&mut self, i: usize) {
        if let Some(slot) = self.conns.get_mut(i) {
            *slot = None;
        }
    }

    fn reply(&mut self, i: usize, r: Result<serde_json::Value, ApiError>) {
        let reply = match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        };
        let mut line = serde_json::to_vec(&reply).unwrap_or_else(|_| {
            br#"{"error":{"kind":"Internal","message":"cannot encode reply"}}"#.to_vec()
        });
        line.push(b'\n');
        self.send(i, vec![line]);
    }

    /// Sends a final reply, then closes the connection.
    fn send(&mut self, i: usize, chunks: Vec<Vec<u8>>) {
        self.queue(i, chunks, Vec::new(), true);
    }

    /// Queues reply bytes (with `fds` riding on the first of them); once written, the
    /// connection closes (`close`) or waits for the client again.
    fn queue(&mut self, i: usize, chunks: Vec<Vec<u8>>, fds: Vec<OwnedFd>, close: bool) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        conn.out
            .extend(chunks.into_iter().filter(|c| !c.is_empty()));
        conn.out_fds.extend(fds);
        conn.close_when_flushed |= close;
        conn.state = ConnState::Writing {
            deadline: Instant::now() + WRITE_TIMEOUT,
        };
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        while let Some(front) = conn.out.front() {
            let fds: Vec<_> = conn.out_fds.iter().map(|f| f.as_fd()).collect();
            match sys::send_with_fds(conn.stream.as_fd(), &front[conn.out_pos..], &fds) {
                Ok(n) => {
                    drop(fds);
                    if n > 0 {
                        conn.out_fds.clear();
                    }
                    conn.out_pos += n;
                    if conn.out_pos >= front.len() {
                        conn.out.pop_front();
                        conn.out_pos = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("writing reply: {e}");
                    self.abandon(i);
                    return;
                }
            }
        }
        if conn.close_when_flushed {
            self.close_conn(i);
        } else {
            conn.state = ConnState::Pending;
        }
    }

    fn handle_line(&mut self, i: usize, line: &[u8]) {
        let req: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                self.reply(i, Err(ApiError::invalid(format!("bad request: {e}"))));
                return;
            }
        };
        let fds = self
            .conns
            .get_mut(i)
            .and_then(Option::as_mut)
            .map(|c| std::mem::take(&mut c.fds))
            .unwrap_or_default();
        tracing::debug!("request {}", req.op());
        let outcome = self.handle(i, req, fds);
        match outcome {
            Outcome::Reply(r) => self.reply(i, r),
            Outcome::Pending => {
                if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
                    c.state = ConnState::Pending;
                }
            }
            Outcome::Written => {
                // Answered later (a connect in progress) unless the reply is on its way.
                if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut)
                    && matches!(c.state, ConnState::Reading { .. })
                {
                    c.state = ConnState::Pending;
                }
            }
        }
    }

    fn handle(&mut self, conn: usize, req: Request, mut fds: Vec<OwnedFd>) -> Outcome {
        match req {
            Request::Info => ok(Info {
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: api::PROTOCOL_VERSION,
                pid: std::process::id(),
                rss_bytes: sys::rss_bytes(),
                containers: self.containers.iter().flatten().count(),
                cgroup: match &self.cgroups {
                    Ok(c) if c.mode() == Mode::V2 => "v2".into(),
                    Ok(_) => "v1".into(),
                    Err(e) => format!("unavailable: {e}"),
                },
                shutting_down: self.shutdown.is_some(),
                capabilities: sys::grantable_caps().ok(),
            }),
            Request::Create { id, mounts } => {
                let Some(first_mount) = fds.len().checked_sub(mounts) else {
                    return Outcome::Reply(Err(ApiError::invalid(format!(
                        "create names {mounts} mount fds but {} came with it",
                        fds.len()
                    ))));
                };
                let passed = fds.split_off(first_mount);
                let log = match fds.len() {
                    0 => None,
                    1 => fds.pop(),
                    n => {
                        return Outcome::Reply(Err(ApiError::invalid(format!(
                            "create takes one log fd besides its mounts, not {n}"
                        ))));
                    }
                };
                Outcome::Reply(self.create(&id, log, passed).and_then(|r| {
                    serde_json::to_value(r).map_err(|e| ApiError::internal(e.to_string()))
                }))
            }
            Request::Start { id } => match self.start(conn, &id) {
                Ok(()) => Outcome::Pending,
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::Kill { id, signal } => match self.kill(&id, signal) {
                Ok(()) => ok(Empty {}),
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::State { id } => match self.find(&id) {
                Ok(i) => ok(self.status_of(i)),
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::List => {
                let all: Vec<ContainerStatus> = self
                    .containers
                    .iter()
                    .flatten()
                    .map(|c| c.status.clone())
                    .collect();
                ok(all)
            }
            Request::Wait { id, timeout_ms } => match self.find(&id) {
                Err(e) => Outcome::Reply(Err(e)),
                Ok(i) => {
                    let done = self
                        .ctr(i)
                        .is_some_and(|c| c.status.state == ContainerState::Exited);
                    if done || timeout_ms == 0 {
                        ok(self.status_of(i))
                    } else if let Some(c) = self.ctr_mut(i) {
                        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                        c.waiters.push((conn, deadline));
                        Outcome::Pending
                    } else {
                        Outcome::Reply(Err(ApiError::not_found(&id)))
                    }
                }
            },
            Request::Exec(req) => match self.exec(conn, req) {
                Ok(()) => Outcome::Pending,
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::ReopenLog { id } => {
                let Some(fd) = (!fds.is_empty()).then(|| fds.remove(0)) else {
                    return Outcome::Reply(Err(ApiError::invalid("reopen_log needs a log fd")));
                };
                match self.find(&id) {
                    Err(e) => Outcome::Reply(Err(e)),
                    Ok(i) => match self.ctr_mut(i) {
                        Some(c) if c.running() => {
                            // Dropping the old fd closes it.
                            c.log = Some(fd);
                            ok(Empty {})
                        }
                        _ => Outcome::Reply(Err(ApiError::precondition(format!(
                            "container {id} is not running"
                        )))),
                    },
                }
            }
            Request::Delete { id } => match self.delete(&id) {
                Ok(()) => ok(Empty {}),
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::ExecStream(req) => match self.exec_stream(conn, req, fds) {
                Ok(()) => Outcome::Pending,
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::Attach(req) => match self.attach(conn, req, fds) {
                Ok(()) => Outcome::Written,
                Err(e) => Outcome::Reply(Err(e)),
            },
            Request::Connect { port } => match self.connect(conn, port) {
                Ok(()) => Outcome::Written,
                Err(e) => Outcome::Reply(Err(e)),
            },
        }
    }

    // ---- containers ----

    fn find(&self, id: &str) -> Result<usize, ApiError> {
        api::validate_id(id)?;
        self.containers
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.status.id == id))
            .ok_or_else(|| ApiError::not_found(id))
    }

    fn ctr(&self, i: usize) -> Option<&Container> {
        self.containers.get(i).and_then(Option::as_ref)
    }

    fn ctr_mut(&mut self, i: usize) -> Option<&mut Container> {
        self.containers.get_mut(i).and_then(Option::as_mut)
    }

    fn status_of(&self, i: usize) -> Option<ContainerStatus> {
        self.ctr(i).map(|c| c.status.clone())
    }

    fn write_status(&self, st: &ContainerStatus) {
        if let Err(e) = status::write_status(&self.pod_dir, st) {
            tracing::error!("{e}");
        }
    }

    fn refuse_when_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutdown.is_some() {
            Err(ApiError::precondition("the pod is shutting down"))
        } else {
            Ok(())
        }
    }

    fn create(
        &mut self,
        id: &str,
        log: Option<OwnedFd>,
        passed: Vec<OwnedFd>,
    ) -> Result<CreateReply, ApiError> {
        api::validate_id(id)?;
        self.refuse_when_shutting_down()?;
        if self.find(id).is_ok() {
            return Err(ApiError::new(
                ErrorKind::AlreadyExists,
                format!("container {id} already exists"),
            ));
        }
        let bundle = self.pod_dir.join(CTRS_DIR).join(id);
        // The pod's hostname as it is now: a warm pool CT gets its pod's name when adopted,
        // after podinit started.
        let pod = PodContext {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| self.pod.hostname.clone()),
            ..self.pod.clone()
        };
        let cfg = spec::load(id, &bundle, &pod, passed.len()).map_err(|e| match e {
            SpecError::Read { ref source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ApiError::invalid(format!("no spec for container {id}: {e}"))
            }
            other => ApiError::invalid(other.to_string()),
        })?;
        let root = self
            .cgroups
            .as_ref()
            .map_err(|e| ApiError::precondition(format!("cgroups unavailable: {e}")))?;
        let cgroup = root
            .create(id, &cfg.resources, &cfg.device_policy)
            .map_err(|e| match e {
                crate::cgroup::CgroupError::Unsupported(m) => ApiError::invalid(m),
                other => ApiError::internal(other.to_string()),
            })?;
        let st = ContainerStatus::new_created(id, now_ns());
        if let Err(e) = status::write_status(&self.pod_dir, &st) {
            cgroup.remove();
            return Err(ApiError::internal(e.to_string()));
        }
        let reply = CreateReply {
            status: st.clone(),
            // podinit refuses what it cannot enforce, so it has nothing to warn about.
            warnings: Vec::new(),
        };
        let c = Container {
            cfg,
            status: st,
            cgroup,
            passed_mounts: passed,
            log,
            stdout: None,
            stderr: None,
            start: None,
            waiters: Vec::new(),
            stop_sent: false,
            pending_signal: None,
            stdin: None,
        };
        match self.containers.iter().position(Option::is_none) {
            Some(slot) => self.containers[slot] = Some(c),
            None => self.containers.push(Some(c)),
        }
        Ok(reply)
    }

    fn start(&mut self, conn: usize, id: &str) -> Result<(), ApiError> {
        self.refuse_when_shutting_down()?;
        let i = self.find(id)?;
        let pod_shm = self.pod_shm.clone();
        let own = self
            .own_pidns
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let c = self.ctr_mut(i).ok_or_else(|| ApiError::not_found(id))?;
        if c.status.state != ContainerState::Created || c.start.is_some() {
            return Err(ApiError::precondition(format!(
                "container {id} was already started"
            )));
        }
        let spawned = spawn::spawn_container(
            &c.cfg,
            &c.cgroup,
            pod_shm.as_deref(),
            &c.passed_mounts,
            own.as_fd(),
        )
        .map_err(|e| ApiError::internal(format!("forking container {id}: {e}")))?;
        // The child has them (and attaches them); a container starts once.
        c.passed_mounts.clear();
        let pid = u32::try_from(spawned.pid).unwrap_or(0);
        c.status.pid = Some(pid);
        c.stdout = spawned.stdout.map(|fd| out_pipe(fd, Stream::Stdout));
        c.stderr = spawned.stderr.map(|fd| out_pipe(fd, Stream::Stderr));
        c.stdin = spawned.stdin.map(CtrStdin::new);
        c.start = Some(StartJob {
            sync: spawned.sync,
            conn: Some(conn),
            deadline: Instant::now() + START_TIMEOUT,
        });
        tracing::info!("container {id}: started pid {pid}");
        Ok(())
    }

    /// Messages from a starting container's child.
    fn container_sync(&mut self, i: usize) {
        loop {
            let Some(c) = self.ctr_mut(i) else { return };
            let Some(job) = &c.start else { return };
            let msg = spawn::read_sync(job.sync.as_fd());
            match msg {
                Ok(SyncMessage::WouldBlock) => return,
                Ok(SyncMessage::Pty(fd)) => {
                    let _ = sys::set_nonblocking(fd.as_fd(), true);
                    if c.cfg.stdin {
                        // Attach types into the terminal.
                        c.stdin = fd.try_clone().ok().map(CtrStdin::new);
                    }
                    c.stdout = Some(OutPipe {
                        fd,
                        splitter: LineSplitter::new(Stream::Stdout),
                    });
                }
                Ok(SyncMessage::Error(msg)) => {
                    self.start_failed(i, msg);
                    return;
                }
                Ok(SyncMessage::Closed) => {
                    self.start_succeeded(i);
                    return;
                }
                Err(e) => {
                    self.start_failed(i, format!("reading the start result: {e}"));
                    return;
                }
            }
        }
    }

    fn start_succeeded(&mut self, i: usize) {
        let Some(c) = self.ctr_mut(i) else { return };
        let Some(job) = c.start.take() else { return };
        c.status.state = ContainerState::Running;
        c.status.started_ns = now_ns();
        let st = c.status.clone();
        self.write_status(&st);
        if let Some(conn) = job.conn {
            self.reply(
                conn,
                serde_json::to_value(StartReply {
                    pid: st.pid.unwrap_or(0),
                })
                .map_err(|e| ApiError::internal(e.to_string())),
            );
        }
        // A shutdown that began meanwhile stops it right away.
        if self.shutdown.is_some() {
            self.send_stop_signals();
        }
    }

    fn start_failed(&mut self, i: usize, msg: String) {
        let Some(c) = self.ctr_mut(i) else { return };
        let job = c.start.take();
        if let Some(pid) = c.status.pid {
            // It exits by itself after reporting; make sure of it (timeout case).
            let _ = sys::kill(pid as i32, libc::SIGKILL);
        }
        tracing::warn!("container {}: start failed: {msg}", c.status.id);
        c.status.state = ContainerState::Exited;
        c.status.exit_code = Some(128);
        c.status.finished_ns = now_ns();
        c.status.start_error = Some(msg.clone());
        c.stdin = None;
        let st = c.status.clone();
        let waiters = std::mem::take(&mut c.waiters);
        self.write_status(&st);
        if let Some(conn) = job.and_then(|j| j.conn) {
            self.reply(conn, Err(ApiError::new(ErrorKind::StartFailed, msg)));
        }
        self.answer_waiters(waiters, &st);
        self.end_attachers(i, st.exit_code);
    }

    fn container_exited(&mut self, i: usize, exit: Exit) {
        // The start result is conclusive now: the child's end of the sync socket is closed.
        if self.ctr(i).is_some_and(|c| c.start.is_some()) {
            self.container_sync(i);
            if self
                .ctr(i)
                .is_some_and(|c| c.status.state == ContainerState::Exited)
            {
                return;
            }
        }
        // Capture what it wrote last before recording the exit.
        self.read_container_output(i, Stream::Stdout, true);
        self.read_container_output(i, Stream::Stderr, true);
        let Some(c) = self.ctr_mut(i) else { return };
        if !c.cfg.new_pid_ns {
            // Sharing the pod's PID namespace, its children outlive it unless we end them.
            c.cgroup.kill_all();
        }
        c.status.state = ContainerState::Exited;
        c.status.exit_code = Some(exit.code());
        c.status.signal = exit.signal();
        c.status.finished_ns = now_ns();
        c.status.oom_killed = c.cgroup.oom_killed();
        tracing::info!(
            "container {}: exited with {} (oom: {})",
            c.status.id,
            exit.code(),
            c.status.oom_killed
        );
        c.stdin = None;
        let st = c.status.clone();
        let waiters = std::mem::take(&mut c.waiters);
        self.write_status(&st);
        self.answer_waiters(waiters, &st);
        self.end_attachers(i, st.exit_code);
    }

    fn answer_waiters(&mut self, waiters: Vec<(usize, Instant)>, st: &ContainerStatus) {
        for (conn, _) in waiters {
            self.reply(
                conn,
                serde_json::to_value(st).map_err(|e| ApiError::internal(e.to_string())),
            );
        }
    }

    /// Reads a container's output and writes it to its log. `drain` reads until nothing is
    /// left (at exit); otherwise one read per readiness event keeps the loop fair.
    fn read_container_output(&mut self, i: usize, stream: Stream, drain: bool) {
        loop {
            let Some(c) = self.containers.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let slot = match stream {
                Stream::Stdout => &mut c.stdout,
                Stream::Stderr => &mut c.stderr,
            };
            let Some(pipe) = slot else { return };
            // SAFETY: read(2) into our scratch buffer of the given length.
            let n = unsafe {
                libc::read(
                    pipe.fd.as_raw_fd(),
                    self.scratch.as_mut_ptr().cast(),
                    self.scratch.len(),
                )
            };
            self.lines.clear();
            let now = now_ns();
            let mut fanned = None;
            let eof = if n > 0 {
                let n = n as usize;
                pipe.splitter.feed(&self.scratch[..n], now, &mut self.lines);
                fanned = Some(n);
                false
            } else if n == 0 {
                true
            } else {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => {
                        return;
                    }
                    Some(libc::EINTR) => continue,
                    // EIO: the pty's last slave fd closed.
                    _ => true,
                }
            };
            if eof {
                pipe.splitter.finish(now, &mut self.lines);
                *slot = None;
            }
            if !self.lines.is_empty()
                && let Some(log) = &c.log
                && let Err(e) = spawn::write_all_fd(log.as_fd(), &self.lines)
            {
                tracing::warn!("container {}: writing log: {e}", c.status.id);
            }
            if let Some(n) = fanned {
                let chunk = self.scratch[..n].to_vec();
                self.fan_out(i, stream, &chunk);
            }
            if eof || !drain {
                return;
            }
        }
    }

    /// SIGKILLs what is left in a cgroup and reaps it, so that the directory can be removed.
    /// Bounded by `limit`: a process stuck in the kernel must not hang podinit.
    fn empty_cgroup(&mut self, cg: &ContainerCgroup, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if cg.pids().is_empty() {
                return;
            }
            cg.kill_all();
            self.reap();
            if Instant::now() >= end {
                tracing::warn!("processes left in a container cgroup after {limit:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), ApiError> {
        if !crate::signals::is_valid(signal) {
            return Err(ApiError::invalid(format!("invalid signal {signal}")));
        }
        let i = self.find(id)?;
        let c = self.ctr_mut(i).ok_or_else(|| ApiError::not_found(id))?;
        match (c.running(), c.status.pid) {
            (true, Some(pid)) => match send_watched(c, pid as i32, signal) {
                Ok(()) => Ok(()),
                // Exited but not reaped yet: the exit is on its way.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                Err(e) => Err(ApiError::internal(format!("kill: {e}"))),
            },
            _ => Err(ApiError::precondition(format!(
                "container {id} is not running"
            ))),
        }
    }

    fn delete(&mut self, id: &str) -> Result<(), ApiError> {
        let i = self.find(id)?;
        let c = self.ctr(i).ok_or_else(|| ApiError::not_found(id))?;
        if c.running() || c.start.is_some() {
            return Err(ApiError::precondition(format!("container {id} is running")));
        }
        if self.execs.iter().flatten().any(|e| e.ctr_id == id) {
            return Err(ApiError::precondition(format!(
                "container {id} still has exec processes"
            )));
        }
        let Some(mut c) = self.containers.get_mut(i).and_then(Option::take) else {
            return Err(ApiError::not_found(id));
        };
        self.empty_cgroup(&c.cgroup, CGROUP_DRAIN);
        c.cgroup.remove();
        for w in std::mem::take(&mut c.waiters) {
            let st = c.status.clone();
            self.answer_waiters(vec![w], &st);
        }
        let path = status::status_path(&self.pod_dir, id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", path.display());
        }
        tracing::info!("container {id}: deleted");
        Ok(())
    }

    // ---- exec ----

    fn exec(&mut self, conn: usize, req: ExecRequest) -> Result<(), ApiError> {
        self.refuse_when_shutting_down()?;
        if req.args.is_empty() || req.args[0].is_empty() {
            return Err(ApiError::invalid("exec: no command given"));
        }
        if let Some(cwd) = &req.cwd
            && !cwd.starts_with('/')
        {
            return Err(ApiError::invalid("exec: cwd must be absolute"));
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
        let plan = ExecPlan::new(
            &c.cfg.process,
            req.args.clone(),
            &req.env,
            req.cwd.as_deref(),
            req.user.clone(),
        );
        let spawned = spawn::spawn_exec(
            &c.cfg,
            &c.cgroup,
            pid,
            &plan,
            spawn::ExecStdio::Collect,
            self.own_pidns.as_fd(),
        )
        .map_err(|e| ApiError::internal(format!("exec in {}: {e}", req.id)))?;
        for fd in [&spawned.stdout, &spawned.stderr].into_iter().flatten() {
            let _ = sys::set_nonblocking(fd.as_fd(), true);
        }
        let job = ExecJob {
            ctr_id: req.id.clone(),
            pid: spawned.pid,
            sync: Some(spawned.sync),
            error: None,
            stdout: spawned.stdout,
            stderr: spawned.stderr,
            out: Vec::new(),
            err: Vec::new(),
            out_truncated: false,
            err_truncated: false,
            deadline: (req.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(req.timeout_ms)),
            timed_out: false,
            conn: Some(conn),
            stream: None,
        };
        match self.execs.iter().position(Option::is_none) {
            Some(slot) => self.execs[slot] = Some(job),
            None => self.execs.push(Some(job)),
        }
        Ok(())
    }

    fn exec_sync(&mut self, i: usize) {
        let Some(job) = self.execs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if job.stream.is_some() {
            self.stream_exec_sync(i);
            return;
        }
        let Some(sync) = &job.sync else { return };
        match spawn::read_sync(sync.as_fd()) {
            Ok(SyncMessage::WouldBlock) => {}
            Ok(SyncMessage::Error(m)) => {
                job.error = Some(m);
                job.sync = None;
            }
            Ok(SyncMessage::Closed) | Ok(SyncMessage::Pty(_)) | Err(_) => job.sync = None,
        }
    }

    fn read_exec_output(&mut self, i: usize, stream: Stream) {
        let Some(job) = self.execs.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        read_capped(job, stream, &mut self.scratch, false);
    }

    fn exec_exited(&mut self, i: usize, exit: Exit) {
        let Some(mut job) = self.execs.get_mut(i).and_then(Option::take) else {
            return;
        };
        if job.stream.is_some() {
            self.stream_exec_exited(job, exit);
            return;
        }
        // Whatever the exec'd process wrote is in the pipes now. Background children that
        // inherited them may keep them open forever (containerd#9568): don't wait for them.
        read_capped(&mut job, Stream::Stdout, &mut self.scratch, true);
        read_capped(&mut job, Stream::Stderr, &mut self.scratch, true);
        if let Some(sync) = job.sync.take()
            && let Ok(SyncMessage::Error(m)) = spawn::read_sync(sync.as_fd())
        {
            job.error = Some(m);
        }
        let Some(conn) = job.conn else { return };
        if let Some(err) = job.error {
            self.reply(conn, Err(ApiError::new(ErrorKind::StartFailed, err)));
            return;
        }
        let header = ExecReplyHeader {
            exit_code: exit.code(),
            signal: exit.signal(),
            timed_out: job.timed_out,
            stdout_len: job.out.len() as u64,
            stderr_len: job.err.len() as u64,
            stdout_truncated: job.out_truncated,
            stderr_truncated: job.err_truncated,
        };
        let mut line = match serde_json::to_value(&header) {
            Ok(v) => serde_json::to_vec(&Reply::Ok(v)).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        line.push(b'\n');
        self.send(conn, vec![line, job.out, job.err]);
    }

    // ---- timers ----

    fn handle_timers(&mut self) {
        let now = Instant::now();
        let expired_conns: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.as_ref()?.state {
                ConnState::Reading { deadline } | ConnState::Writing { deadline }
                    if deadline <= now =>
                {
                    Some(i)
                }
                _ => None,
            })
            .collect();
        for i in expired_conns {
            self.abandon(i);
        }
        self.stream_timers(now);
        let mut due_waiters = Vec::new();
        let mut due_starts = Vec::new();
        for (i, c) in self.containers.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            let (due, keep): (Vec<_>, Vec<_>) = c.waiters.drain(..).partition(|(_, d)| *d <= now);
            c.waiters = keep;
            for (conn, _) in due {
                due_waiters.push((conn, c.status.clone()));
            }
            if c.start.as_ref().is_some_and(|s| s.deadline <= now) {
                due_starts.push(i);
            }
        }
        for c in self.containers.iter_mut().flatten() {
            resend_if_caught(c, now);
        }
        for (conn, st) in due_waiters {
            self.answer_waiters(vec![(conn, now)], &st);
        }
        for i in due_starts {
            self.start_failed(i, format!("setup did not finish within {START_TIMEOUT:?}"));
        }
        for job in self.execs.iter_mut().flatten() {
            if job.deadline.is_some_and(|d| d <= now) {
                job.deadline = None;
                job.timed_out = true;
                tracing::info!(
                    "exec in {} timed out; killing its process group",
                    job.ctr_id
                );
                let _ = sys::kill(-job.pid, libc::SIGKILL);
                let _ = sys::kill(job.pid, libc::SIGKILL);
            }
        }
        self.advance_shutdown(now);
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self, signo: i32) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(
            "signal {signo}: stopping containers (grace {:?})",
            self.grace
        );
        self.shutdown = Some(Shutdown {
            phase: Phase::Term,
            deadline: Instant::now() + self.grace,
        });
        self.send_stop_signals();
        for job in self.execs.iter().flatten() {
            let _ = sys::kill(-job.pid, libc::SIGKILL);
            let _ = sys::kill(job.pid, libc::SIGKILL);
        }
    }

    fn send_stop_signals(&mut self) {
        for c in self.containers.iter_mut().flatten() {
            if c.running() && !c.stop_sent {
                c.stop_sent = true;
                if let Some(pid) = c.status.pid {
                    let _ = send_watched(c, pid as i32, c.cfg.stop_signal);
                }
            }
        }
    }

    fn advance_shutdown(&mut self, now: Instant) {
        let Some(sd) = &mut self.shutdown else { return };
        if sd.deadline > now {
            return;
        }
        match sd.phase {
            Phase::Term => {
                tracing::info!("grace period over: killing what is left");
                sd.phase = Phase::Kill;
                sd.deadline = now + KILL_WAIT;
                for c in self.containers.iter().flatten() {
                    if c.running()
                        && let Some(pid) = c.status.pid
                    {
                        let _ = sys::kill(pid as i32, libc::SIGKILL);
                        c.cgroup.kill_all();
                    }
                }
            }
            Phase::Kill => {
                // Nothing more can be done; record what we know and leave.
                tracing::warn!("containers still not reaped after SIGKILL; exiting anyway");
                let mut left = Vec::new();
                for c in self.containers.iter_mut().flatten() {
                    if c.running() || c.start.is_some() {
                        c.start = None;
                        c.status.state = ContainerState::Exited;
                        c.status.exit_code = Some(128 + libc::SIGKILL);
                        c.status.signal = Some(libc::SIGKILL);
                        c.status.finished_ns = now_ns();
                        left.push(c.status.clone());
                    }
                }
                for st in left {
                    self.write_status(&st);
                }
            }
        }
    }

    fn shutdown_done(&self) -> bool {
        self.shutdown.is_some()
            && !self
                .containers
                .iter()
                .flatten()
                .any(|c| c.running() || c.start.is_some())
            && self.execs.iter().flatten().next().is_none()
    }

    fn finish_shutdown(&mut self) {
        for i in 0..self.containers.len() {
            self.read_container_output(i, Stream::Stdout, true);
            self.read_container_output(i, Stream::Stderr, true);
        }
        let cgroups: Vec<ContainerCgroup> = self
            .containers
            .iter()
            .flatten()
            .map(|c| c.cgroup.clone())
            .collect();
        for cg in cgroups {
            self.empty_cgroup(&cg, CGROUP_DRAIN);
            cg.remove();
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = io::stderr().flush();
        tracing::info!("all containers stopped; podinit exits");
    }
}

fn out_pipe(fd: OwnedFd, stream: Stream) -> OutPipe {
    let _ = sys::set_nonblocking(fd.as_fd(), true);
    OutPipe {
        fd,
        splitter: LineSplitter::new(stream),
    }
}

/// Reads exec output into its buffer, keeping at most [`api::EXEC_OUTPUT_CAP`] bytes.
fn read_capped(job: &mut ExecJob, stream: Stream, scratch: &mut [u8], drain: bool) {
    let (slot, buf, truncated) = match stream {
        Stream::Stdout => (&mut job.stdout, &mut job.out, &mut job.out_truncated),
        Stream::Stderr => (&mut job.stderr, &mut job.err, &mut job.err_truncated),
    };
    loop {
        let Some(fd) = slot else { return };
        // SAFETY: read(2) into the scratch buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
        if n > 0 {
            let n = n as usize;
            let room = api::EXEC_OUTPUT_CAP.saturating_sub(buf.len());
            buf.extend_from_slice(&scratch[..n.min(room)]);
            if n > room {
                *truncated = true;
            }
            if !drain {
                return;
            }
        } else if n == 0 {
            *slot = None;
            return;
        } else {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    if drain {
                        // The process is gone; anything still holding the pipe is a stray.
                        *slot = None;
                    }
                    return;
                }
                _ => {
                    *slot = None;
                    return;
                }
            }
        }
    }
}

/// The pod-wide `/dev/shm` bound into containers whose spec has none: the host's in a host
/// IPC pod, else a tmpfs podinit mounts when it has a mount namespace of its own (it is the
/// pod's init, or runs in a CT that keeps the host's PID namespace); `None` otherwise, and
/// containers then get a private one each.
fn setup_pod_shm(host_ipc: bool) -> Option<PathBuf> {
    if host_ipc {
        tracing::info!("host IPC namespace: containers share the host's /dev/shm");
        return Some(PathBuf::from("/dev/shm"));
    }
    if !sys::owns_mount_namespace() {
        tracing::info!("in the host's mount namespace: containers get private /dev/shm");
        return None;
    }
    let shm = PathBuf::from("/dev/shm");
    if let Err(e) = std::fs::create_dir_all(&shm) {
        tracing::warn!("creating /dev/shm: {e}");
        return None;
    }
    match crate::rootfs::mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    ) {
        Ok(()) => Some(shm),
        Err(e) => {
            tracing::warn!("mounting the pod's /dev/shm: {e}; containers get private ones");
            None
        }
    }
}

/// Status records an earlier podinit left open belong to processes that died with it.
fn close_stale_statuses(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join(CTRS_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path().join(api::STATUS_FILE);
        let Ok(mut st) = status::read_status_file(&path) else {
            continue;
        };
        if st.state != ContainerState::Exited {
            tracing::info!(
                "container {}: closing the record of an earlier podinit",
                st.id
            );
            st.state = ContainerState::Exited;
            st.lost = true;
            st.exit_code = Some(255);
            st.finished_ns = now_ns();
            if let Err(e) = status::write_status_file(&path, &st) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Sets podinit up and serves until shutdown.
pub fn run(opts: Options) -> Result<(), ServerError> {
    Server::new(opts)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_left_open_by_an_earlier_podinit_are_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (id, state) in [
            ("run", ContainerState::Running),
            ("new", ContainerState::Created),
            ("done", ContainerState::Exited),
        ] {
            std::fs::create_dir_all(dir.path().join("ctrs").join(id)).expect("mkdir");
            let mut st = ContainerStatus::new_created(id, 1);
            st.state = state;
            if state == ContainerState::Exited {
                st.exit_code = Some(0);
            }
            status::write_status(dir.path(), &st).expect("write");
        }
        close_stale_statuses(dir.path());
        let read = |id| status::read_status(dir.path(), id).expect("read");
        for id in ["run", "new"] {
            let st = read(id);
            assert_eq!(st.state, ContainerState::Exited);
            assert!(st.lost);
            assert_eq!(st.exit_code, Some(255));
            assert!(st.finished_ns > 0);
        }
        let done = read("done");
        assert!(!done.lost);
        assert_eq!(done.exit_code, Some(0));
    }

    #[test]
    fn exec_output_is_capped() {
        let (r, w) = sys::pipe().expect("pipe");
        let mut job = ExecJob {
            ctr_id: "c".into(),
            pid: 0,
            sync: None,
            error: None,
            stdout: Some(r),
            stderr: None,
            out: vec![0; api::EXEC_OUTPUT_CAP - 3],
            err: Vec::new(),
            out_truncated: false,
            err_truncated: false,
            deadline: None,
            timed_out: false,
            conn: None,
            stream: None,
        };
        spawn::write_all_fd(w.as_fd(), b"abcdef").expect("write");
        drop(w);
        let mut scratch = vec![0u8; 64];
        read_capped(&mut job, Stream::Stdout, &mut scratch, true);
        assert_eq!(job.out.len(), api::EXEC_OUTPUT_CAP);
        assert_eq!(&job.out[api::EXEC_OUTPUT_CAP - 3..], b"abc");
        assert!(job.out_truncated);
        assert!(job.stdout.is_none(), "closed at end of stream");
    }
}
