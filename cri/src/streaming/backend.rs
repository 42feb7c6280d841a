//! What the streaming server needs from the runtime, and the async I/O on the fds it gets:
//! pipes or a pty master connected to a process in a pod, or a socket into the pod.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub use podinit::api::TermSize;

/// A command to run in a container, as the Exec RPC asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The client's terminal size, when it sent one before the command started.
    pub term_size: Option<TermSize>,
}

/// An attach to a container, as the Attach RPC asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    pub container_id: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// How a process or attach ended: the exit code when there is one.
pub type Done = Pin<Box<dyn Future<Output = Result<Option<i32>, BackendError>> + Send>>;

/// The caller's side of a running exec or attach. Dropping it ends the session (podinit kills
/// an exec's process group, or detaches).
pub struct ProcessIo {
    pub stdin: Option<FdIo>,
    pub stdout: Option<FdIo>,
    pub stderr: Option<FdIo>,
    /// The pty master, for resizing.
    pub terminal: Option<OwnedFd>,
    pub done: Done,
}

/// The runtime behind the streaming server.
pub trait Backend: Send + Sync + 'static {
    fn exec(&self, t: ExecTarget) -> impl Future<Output = Result<ProcessIo, BackendError>> + Send;
    fn attach(
        &self,
        t: AttachTarget,
    ) -> impl Future<Output = Result<ProcessIo, BackendError>> + Send;
    /// A connection to `port` on the pod's loopback (the host's, for host-network pods).
    fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, BackendError>> + Send;
}

/// Sets a pty's window size; the kernel sends SIGWINCH to its foreground process group.
pub fn set_window_size(pty: &OwnedFd, size: TermSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a live local.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe end or pty master read and written without blocking a thread.
pub struct FdIo {
    fd: AsyncFd<OwnedFd>,
}

impl FdIo {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        podinit::sys::set_nonblocking(fd.as_fd(), true)?;
        // SAFETY: `fd` is an open OwnedFd that the AsyncFd owns from here on; an OwnedFd
        // always returns the same descriptor and closes it only when dropped with it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    fn read_raw(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: read(2) into a live buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        // EIO: the last holder of a pty's slave side is gone, which is its end of output.
        if e.raw_os_error() == Some(libc::EIO) {
            return Ok(0);
        }
        Err(e)
    }

    /// Reads some bytes; `Ok(0)` at the end.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| Self::read_raw(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is there right now: `Ok(None)` when nothing is.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match Self::read_raw(self.fd.get_ref(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.ready(Interest::WRITABLE).await?;
            let res = guard.try_io(|fd| {
                // SAFETY: write(2) from a live slice of the given length.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}
