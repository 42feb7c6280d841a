//! The podinit API, spoken on `<pod dir>/podinit.sock`.
//!
//! One request per connection: the client sends one JSON line (a [`Request`]), with file
//! descriptors attached as `SCM_RIGHTS` where an operation takes one (`create` and `reopen_log`
//! take the log file), and keeps its write side open until it has read the reply. podinit answers
//! with one JSON line, `{"ok": <payload>}` or `{"error": {"kind": .., "message": ..}}`, and closes
//! the connection. The only exception to "a line out" is `exec`: its `ok` payload
//! ([`ExecReplyHeader`]) gives the lengths of stdout and stderr, whose raw bytes follow the line
//! (stdout first), so that binary output needs no escaping.
//!
//! A client that closes its connection while its request is still running (`exec`, `wait`,
//! `start`) abandons it: an exec's process group is killed, a start still completes.
//!
//! The streaming operations behind CRI Exec, Attach and PortForward (`exec_stream`, `attach`,
//! `connect`) hand file descriptors back and forth instead of copying data through podinit:
//! the caller sends the pipe ends the process gets as its stdio (or receives a pty master), so
//! the bytes flow between the daemon and the process directly. Their connection carries two
//! reply lines: the first when the stream is set up (with fds attached), the second when it
//! ends (the exit status); closing the connection before the second ends the stream.

use serde::{Deserialize, Serialize};

pub use crate::status::{ContainerState, ContainerStatus};

/// Version of this protocol; [`Info::protocol`] reports it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Socket file name inside the pod directory.
pub const SOCKET_NAME: &str = "podinit.sock";
/// Directory of the containers inside the pod directory.
pub const CTRS_DIR: &str = "ctrs";
/// The OCI runtime spec of a container, in its bundle directory `ctrs/<id>`.
pub const CONFIG_FILE: &str = "config.json";
/// The container status record, in `ctrs/<id>`.
pub const STATUS_FILE: &str = "status.json";
/// Where the pod directory appears inside the CT, and podinit's default `--pod-dir`.
pub const DEFAULT_POD_DIR: &str = "/pvecri";
/// Most bytes of stdout and of stderr an exec returns; the rest is read and dropped.
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// Spec annotation `"true"` when the container keeps a stdin pipe that Attach writes to
/// (CRI `stdin`); otherwise its stdin is /dev/null.
pub const STDIN_ANNOTATION: &str = "io.pvecri.stdin";
/// Spec annotation `"true"` when the container's stdin is closed after the first attach that
/// wrote to it ends (CRI `stdin_once`; ignored with a terminal, as containerd does).
pub const STDIN_ONCE_ANNOTATION: &str = "io.pvecri.stdin-once";
/// Spec annotation naming the signal podinit sends a container when the pod shuts down
/// (a name like `SIGQUIT` or a number; the image's `StopSignal`). Default `SIGTERM`.
pub const STOP_SIGNAL_ANNOTATION: &str = "io.pvecri.stop-signal";
/// Spec annotation listing (as a JSON array of indices into the spec's `mounts`) the bind
/// mounts whose source is not a path but a mount tree passed with Create: the n-th listed
/// mount takes the n-th passed tree. Their `source` then only names the host path, for
/// people reading the spec. A tree cloned on the host and attached in the container's own
/// mount namespace keeps the host's propagation peers, and leaves no mount on the host.
pub const PASSED_MOUNTS_ANNOTATION: &str = "io.pvecri.passed-mounts";
/// Largest request line podinit accepts.
pub const MAX_REQUEST: usize = 1024 * 1024;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// -> [`Info`]
    Info,
    /// Reads and validates `ctrs/<id>/config.json` and records the container as created.
    /// Fds: first, optionally, the log file (CRI log lines are appended to it; none = output
    /// discarded); then `mounts` detached mount trees (`open_tree(OPEN_TREE_CLONE)`), the
    /// sources of the spec's mounts that [`PASSED_MOUNTS_ANNOTATION`] lists, in its order.
    /// -> [`CreateReply`]
    Create {
        id: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        mounts: usize,
    },
    /// Starts the container's process. Answers once the process has been executed, or with the
    /// error that prevented it (missing executable, bad cwd, mount failure, ...). -> [`StartReply`]
    Start { id: String },
    /// Sends a signal to the container's main process. -> [`Empty`]
    Kill { id: String, signal: i32 },
    /// -> [`ContainerStatus`]
    State { id: String },
    /// All containers podinit knows. -> `Vec<ContainerStatus>`
    List,
    /// Waits until the container has exited or `timeout_ms` passed, then answers its status.
    /// -> [`ContainerStatus`]
    Wait { id: String, timeout_ms: u64 },
    /// Runs a command in a running container. -> [`ExecReplyHeader`] + output bytes
    Exec(ExecRequest),
    /// Switches the container's log to the fd sent with this request (the old one is closed).
    /// -> [`Empty`]
    ReopenLog { id: String },
    /// Forgets a container that is not running and removes its cgroup and status file.
    /// -> [`Empty`]
    Delete { id: String },
    /// Runs a command in a running container with its stdio connected to the caller (CRI
    /// Exec). Without a terminal the request carries, as fds and in this order, the ends the
    /// process gets as stdin, stdout and stderr, for those asked for (the others are
    /// /dev/null). -> [`StreamStarted`] (+ the pty master with a terminal), then [`ExecExit`].
    /// Closing the connection before the exit kills the command's process group.
    ExecStream(ExecStreamRequest),
    /// Connects to the container's own stdin and output (CRI Attach); the request carries the
    /// fds asked for, in the order stdin (read end), stdout, stderr (write ends).
    /// -> [`AttachStarted`] (+ a pty master for resizing, with a terminal), then
    /// [`AttachEnded`] when the container exits. Closing the connection detaches.
    Attach(AttachRequest),
    /// Connects to `port` on the pod's loopback (CRI PortForward).
    /// -> [`Empty`] with the connected TCP socket attached.
    Connect { port: u16 },
}

impl Request {
    /// The operation's name, for logs and errors.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Info => "info",
            Request::Create { .. } => "create",
            Request::Start { .. } => "start",
            Request::Kill { .. } => "kill",
            Request::State { .. } => "state",
            Request::List => "list",
            Request::Wait { .. } => "wait",
            Request::Exec(_) => "exec",
            Request::ReopenLog { .. } => "reopen_log",
            Request::Delete { .. } => "delete",
            Request::ExecStream(_) => "exec_stream",
            Request::Attach(_) => "attach",
            Request::Connect { .. } => "connect",
        }
    }
}

/// A command to run in a running container (CRI ExecSync).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub args: Vec<String>,
    /// `NAME=value` entries added to (and overriding) the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; default the container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User to run as; default the container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ExecUser>,
    /// Kill the command's process group after this long; 0 = no timeout.
    #[serde(default)]
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A command run with its stdio connected to the caller (CRI Exec).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStreamRequest {
    pub id: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ExecUser>,
    /// Run it on a new pseudo-terminal (the reply carries the master); no fds are sent.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's size at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_size: Option<TermSize>,
    /// Without a terminal: which stdio fds come with the request.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

impl ExecStreamRequest {
    /// How many fds the request carries.
    pub fn fd_count(&self) -> usize {
        if self.tty {
            0
        } else {
            [self.stdin, self.stdout, self.stderr]
                .iter()
                .filter(|b| **b)
                .count()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// First reply of `exec_stream`: the command runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStarted {
    pub pid: u32,
    /// The pty master comes with this reply.
    pub tty: bool,
}

/// Second reply of `exec_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// Exit code; 128 + signal when killed by a signal.
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Attach to a running container's stdio (CRI Attach).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub id: String,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

impl AttachRequest {
    pub fn fd_count(&self) -> usize {
        [self.stdin, self.stdout, self.stderr]
            .iter()
            .filter(|b| **b)
            .count()
    }
}

/// First reply of `attach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachStarted {
    /// The container runs on a terminal: its output all comes as stdout, and a pty master
    /// (for resizing only) comes with this reply.
    pub tty: bool,
    /// The container keeps a stdin that attach can write to.
    pub stdin: bool,
}

/// Second reply of `attach`: the container exited (or podinit is shutting down).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachEnded {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The `ok` payload of an exec reply; `stdout_len` then `stderr_len` raw bytes follow the line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecReplyHeader {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout_len: u64,
    pub stderr_len: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// An exec's outcome as the client returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code; 128 + signal when killed by a signal (also after a timeout).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The timeout passed and the command's process group was killed.
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than [`EXEC_OUTPUT_CAP`] bytes were written to the stream; the rest was dropped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    /// Resident set size of podinit itself.
    pub rss_bytes: u64,
    pub containers: usize,
    /// `v1`, `v2` or `unavailable: <why>`.
    pub cgroup: String,
    /// A shutdown signal arrived; new containers and execs are refused.
    pub shutting_down: bool,
    /// The capabilities podinit can give a container (bit n = capability n): its permitted
    /// set within its bounding set, which is what the pod's CT was started with. A
    /// privileged container gets these, not more. `None` from a podinit too old to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateReply {
    pub status: ContainerStatus,
    /// Spec settings accepted without being enforced. Always empty now that podinit
    /// refuses such settings; kept so that daemons and podinits of other versions agree.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartReply {
    pub pid: u32,
}

/// Payload of operations that answer nothing but success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Error classes, chosen to map one to one onto gRPC codes in the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    /// The container's process could not be started (the message says why): gRPC `Unknown`,
    /// as containerd reports runc start failures.
    StartFailed,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(id: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("container {id} not found"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

/// A reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(ApiError),
}

/// Container IDs become directory and cgroup names: 1 to 128 of `[A-Za-z0-9_.-]`, not starting
/// with a dot (the daemon uses 64 hex characters).
pub fn validate_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("invalid container id {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let cases = vec![
            (Request::Info, r#"{"op":"info"}"#),
            (
                Request::Create {
                    id: "a".into(),
                    mounts: 0,
                },
                r#"{"op":"create","id":"a"}"#,
            ),
            (
                Request::Create {
                    id: "a".into(),
                    mounts: 2,
                },
                r#"{"op":"create","id":"a","mounts":2}"#,
            ),
            (
                Request::Kill {
                    id: "a".into(),
                    signal: 15,
                },
                r#"{"op":"kill","id":"a","signal":15}"#,
            ),
            (
                Request::Wait {
                    id: "a".into(),
                    timeout_ms: 5,
                },
                r#"{"op":"wait","id":"a","timeout_ms":5}"#,
            ),
            (
                Request::Exec(ExecRequest {
                    id: "a".into(),
                    args: vec!["ls".into()],
                    timeout_ms: 10,
                    ..Default::default()
                }),
                r#"{"op":"exec","id":"a","args":["ls"],"env":[],"timeout_ms":10}"#,
            ),
            (Request::List, r#"{"op":"list"}"#),
        ];
        for (req, json) in cases {
            assert_eq!(serde_json::to_string(&req).expect("ser"), json);
            assert_eq!(serde_json::from_str::<Request>(json).expect("de"), req);
        }
    }

    #[test]
    fn exec_request_defaults() {
        let r: Request =
            serde_json::from_str(r#"{"op":"exec","id":"x","args":["a"]}"#).expect("de");
        assert_eq!(
            r,
            Request::Exec(ExecRequest {
                id: "x".into(),
                args: vec!["a".into()],
                ..Default::default()
            })
        );
    }

    #[test]
    fn streaming_requests_round_trip() {
        let req = Request::ExecStream(ExecStreamRequest {
            id: "c".into(),
            args: vec!["sh".into()],
            tty: true,
            term_size: Some(TermSize { rows: 24, cols: 80 }),
            ..Default::default()
        });
        let json = serde_json::to_string(&req).expect("ser");
        assert_eq!(serde_json::from_str::<Request>(&json).expect("de"), req);
        let r: Request = serde_json::from_str(
            r#"{"op":"exec_stream","id":"c","args":["cat"],"stdin":true,"stdout":true}"#,
        )
        .expect("de");
        let Request::ExecStream(e) = r else {
            panic!("not exec_stream")
        };
        assert_eq!(e.fd_count(), 2);
        assert!(!e.tty && !e.stderr && e.term_size.is_none());
        let tty = ExecStreamRequest {
            tty: true,
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        assert_eq!(tty.fd_count(), 0, "a terminal takes no fds");
        let a: Request =
            serde_json::from_str(r#"{"op":"attach","id":"c","stdout":true,"stderr":true}"#)
                .expect("de");
        assert_eq!(
            a,
            Request::Attach(AttachRequest {
                id: "c".into(),
                stdin: false,
                stdout: true,
                stderr: true,
            })
        );
        assert_eq!(
            serde_json::to_string(&Request::Connect { port: 8080 }).expect("ser"),
            r#"{"op":"connect","port":8080}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"connect","port":70000}"#).is_err());
    }

    #[test]
    fn unknown_op_is_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let ok = Reply::Ok(serde_json::json!({"pid": 3}));
        let s = serde_json::to_string(&ok).expect("ser");
        assert_eq!(s, r#"{"ok":{"pid":3}}"#);
        assert_eq!(serde_json::from_str::<Reply>(&s).expect("de"), ok);
        let err = Reply::Error(ApiError::not_found("c"));
        let s = serde_json::to_string(&err).expect("ser");
        assert_eq!(
            s,
            r#"{"error":{"kind":"NotFound","message":"container c not found"}}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&s).expect("de"), err);
    }

    #[test]
    fn ids() {
        for good in ["a", "0123abcdef", "x_y-z.1", &"f".repeat(128)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            &"f".repeat(129),
            "é",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
