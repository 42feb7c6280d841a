//! A TCP proxy on 127.0.0.1 that slows down or cuts what a server sends, so that tests can
//! kill the daemon in the middle of a pull or make a download fail part-way.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

const CHUNK: usize = 16 * 1024;

/// Shared knobs; they may change while connections are open.
#[derive(Debug, Default)]
struct Knobs {
    /// Server-to-client bytes per second, per connection; 0 = unlimited.
    bytes_per_sec: AtomicU64,
    /// Close a connection after this many server-to-client bytes; 0 = never.
    cut_after: AtomicU64,
    /// Server-to-client bytes forwarded, all connections.
    forwarded: AtomicU64,
    stopping: AtomicBool,
}

/// A proxy in front of `upstream`, stopped (with its connections) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    knobs: Arc<Knobs>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        Self::start_on("127.0.0.1:0", upstream)
    }

    /// A proxy listening on `listen` (`127.0.0.1:PORT`; port 0 picks one). Starting one again
    /// on the port of a dropped one brings a "server" back after an outage.
    pub fn start_on(listen: &str, upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("cannot bind the proxy to {listen}"))?;
        let addr = listener.local_addr()?;
        let knobs = Arc::new(Knobs::default());
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (knobs, open) = (knobs.clone(), open.clone());
            std::thread::Builder::new()
                .name("e2e-proxy".into())
                .spawn(move || accept_loop(listener, upstream, knobs, open))?
        };
        Ok(FaultProxy {
            addr,
            knobs,
            open,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Limits what the server sends to `bytes_per_sec` per connection (0: no limit).
    pub fn set_bytes_per_sec(&self, bytes_per_sec: u64) {
        self.knobs
            .bytes_per_sec
            .store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Closes each connection once the server has sent `bytes` through it (0: never).
    pub fn set_cut_after(&self, bytes: u64) {
        self.knobs.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Server-to-client bytes forwarded so far.
    pub fn bytes_forwarded(&self) -> u64 {
        self.knobs.forwarded.load(Ordering::SeqCst)
    }

    /// Closes every open connection now (a network failure mid-transfer).
    pub fn break_connections(&self) {
        if let Ok(mut open) = self.open.lock() {
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.knobs.stopping.store(true, Ordering::SeqCst);
        // Wakes the acceptor blocked in accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.break_connections();
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    knobs: Arc<Knobs>,
    open: Arc<Mutex<Vec<TcpStream>>>,
) {
    for client in listener.incoming() {
        if knobs.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_rx), Ok(server_tx), Ok(client_keep), Ok(server_keep)) = clones else {
            continue;
        };
        if let Ok(mut open) = open.lock() {
            open.push(client_keep);
            open.push(server_keep);
        }
        // Client to server: unthrottled.
        let _ = std::thread::Builder::new()
            .name("e2e-proxy-up".into())
            .spawn(move || {
                copy_plain(client_rx, server_tx);
            });
        let knobs = knobs.clone();
        let _ = std::thread::Builder::new()
            .name("e2e-proxy-down".into())
            .spawn(move || {
                copy_throttled(server, client, &knobs);
            });
    }
}

fn copy_plain(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn copy_throttled(mut from: TcpStream, mut to: TcpStream, knobs: &Knobs) {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let cut_after = knobs.cut_after.load(Ordering::SeqCst);
        let mut want = buf.len();
        if cut_after > 0 {
            let left = cut_after.saturating_sub(sent);
            if left == 0 {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Counted before the write: once the client has the bytes, a test may read the count.
        knobs.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        let rate = knobs.bytes_per_sec.load(Ordering::SeqCst);
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
