//! Exec, Attach and PortForward through the daemon's streaming server with the field's
//! clients: crictl over SPDY and WebSocket (in a real terminal for `exec -it`), and a
//! WebSocket client of our own for the `v5`/`v4.channel.k8s.io` details; on both stores.
//! Plus the limits: single-use tokens, stopped containers, killed commands, TLS, and a
//! stress run (50 concurrent execs, 200 MB through one forwarded port) that must leave no
//! process or fd behind.
//!
//! And kubectl through a real control plane and kubelet, which proxies to the daemon.
//!
//! Needs root, `scripts/build-podinit`, `cargo build -p cri`, the k8s-tools (crictl,
//! kubectl, the cluster) and `script` (bsdutils) for the terminal tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test crate

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::cluster::Cluster;
use e2e::k8s_tools::StandInRegistry;
use e2e::pods::{
    PodEnv, PodEnvOptions, Store, container_config, exec_ok, sh, wait_container_state,
};
use e2e::streaming::{
    PortForward, crictl, fd_count, http_get, run_with_input, ws_collect, ws_connect, ws_send,
};
use futures::SinkExt;
use k8s_cri::v1::{
    AttachRequest, ContainerState, ExecRequest, PodSandboxStatusRequest, PortForwardRequest,
    StopContainerRequest,
};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

e2e::on_both_stores!(crictl_exec_attach_and_port_forward, websocket_clients);
/// And with Proxmox CTs (the pve driver in the pve-harness).
mod proxmox {
    use super::*;
    e2e::on_pve!(crictl_exec_attach_and_port_forward, websocket_clients);
}

const RUNNING: Duration = Duration::from_secs(30);

/// A pod with three containers: `sh` (sleeps), `att` (a shell reading its stdin, with
/// stdin_once), `web` (httpd on 8080 serving /www).
struct Setup {
    env: PodEnv,
    pod_id: String,
    sh: String,
    att: String,
    web: String,
}

async fn setup(on: impl Into<e2e::pods::Setup>, options: PodEnvOptions) -> Setup {
    let env = PodEnv::start_with(on, options).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("streams");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let sh_cfg = container_config("sh", &env.images.one_layer, &["sleep", "100000"]);
    let mut att_cfg = container_config("att", &env.images.one_layer, &["sh"]);
    att_cfg.stdin = true;
    att_cfg.stdin_once = true;
    let mut web_cfg = container_config("web", &env.images.one_layer, &[]);
    web_cfg.command = sh(
        "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let mut ids = Vec::new();
    for cfg in [sh_cfg, att_cfg, web_cfg] {
        let id = env
            .run_container(&mut rt, &pod_id, &pod, cfg)
            .await
            .unwrap();
        wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
        ids.push(id);
    }
    let [sh, att, web] = <[String; 3]>::try_from(ids).unwrap();
    // Running is when the shell started, not when httpd listens.
    e2e::pods::eventually("httpd in the pod to answer", RUNNING, || {
        let mut rt = rt.clone();
        let id = sh.clone();
        async move {
            Ok(e2e::pods::exec(
                &mut rt,
                &id,
                &[
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    "http://127.0.0.1:8080/index.html",
                ],
                10,
            )
            .await?
            .exit_code
            .eq(&0)
            .then_some(()))
        }
    })
    .await
    .unwrap();
    Setup {
        env,
        pod_id,
        sh,
        att,
        web,
    }
}

fn socket(s: &Setup) -> &Path {
    &s.env.daemon.socket
}

async fn crictl_exec_attach_and_port_forward(on: e2e::pods::Setup) {
    let s = setup(on, PodEnvOptions::default()).await;
    let sock = socket(&s).to_path_buf();

    // stdin, stdout, stderr and the exit code over SPDY (crictl's default).
    let mut cmd = crictl(&sock).unwrap();
    cmd.args([
        "exec",
        "-i",
        &s.sh,
        "sh",
        "-c",
        "cat; echo to-err >&2; exit 3",
    ]);
    let (code, out, err) = run_with_input(cmd, b"through stdin\n").unwrap();
    assert_eq!(out, "through stdin\n", "stderr: {err}");
    assert!(err.contains("to-err"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert_ne!(code, 0);

    // The same over WebSocket (v5: the end of stdin is signalled and reaches `cat`).
    let mut cmd = crictl(&sock).unwrap();
    cmd.args([
        "exec",
        "-r",
        "websocket",
        "-i",
        &s.sh,
        "sh",
        "-c",
        "cat; echo ws-done",
    ]);
    let (code, out, err) = run_with_input(cmd, b"via websocket\n").unwrap();
    assert_eq!(
        (code, out.as_str()),
        (0, "via websocket\nws-done\n"),
        "{err}"
    );

    // exec -it in a real terminal (script gives crictl a pty of 22x77): the size reaches
    // the container's terminal.
    let crictl_line = format!("{} exec -it {} sh", crate_crictl_prefix(&sock), s.sh);
    let mut script = Command::new("script");
    script.args([
        "-qec",
        &format!("stty cols 77 rows 22; {crictl_line}"),
        "/dev/null",
    ]);
    let (_, out, _) = run_with_input(script, b"stty size; tty; exit 6\n").unwrap();
    assert!(out.contains("22 77"), "terminal size not seen: {out:?}");
    assert!(out.contains("/dev/pts/"), "no tty: {out:?}");
    assert!(
        out.contains("exit code 6"),
        "exit code not reported: {out:?}"
    );

    // attach: what is typed reaches the container's shell; its output comes back and goes
    // to the log; closing stdin (stdin_once) ends the shell.
    let mut cmd = crictl(&sock).unwrap();
    cmd.args(["attach", "-i", &s.att]);
    let (code, out, err) = run_with_input(cmd, b"echo attached-hello\n").unwrap();
    assert_eq!(out, "attached-hello\n", "{err}");
    assert_eq!(code, 0, "{err}");
    let mut rt = s.env.rt().await.unwrap();
    let st = wait_container_state(&mut rt, &s.att, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(log.contains("stdout F attached-hello"), "{log}");

    // port-forward to httpd in the pod, over SPDY and over the WebSocket tunnel; a few
    // connections each.
    for websocket in [false, true] {
        let pf = PortForward::start(&sock, &s.pod_id, 8080, websocket).unwrap();
        for _ in 0..3 {
            let (status, body) = http_get(pf.local_port, "/index.html").unwrap();
            assert!(status.contains("200"), "{status} (websocket {websocket})");
            assert_eq!(body, b"hello-from-the-pod\n");
        }
    }
    let _ = &s.web;
}

/// crictl's command line with the daemon's endpoints, for a shell.
fn crate_crictl_prefix(sock: &Path) -> String {
    let c = crictl(sock).unwrap();
    std::iter::once(c.get_program().to_string_lossy().into_owned())
        .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn exec_url(s: &Setup, req: ExecRequest) -> String {
    let mut rt = s.env.rt().await.unwrap();
    rt.exec(req).await.unwrap().into_inner().url
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
    }
}

fn status_of(error_channel: &[u8]) -> serde_json::Value {
    serde_json::from_slice(error_channel).unwrap_or_else(|e| {
        panic!(
            "error channel is not a status ({e}): {:?}",
            String::from_utf8_lossy(error_channel)
        )
    })
}

async fn websocket_clients(on: e2e::pods::Setup) {
    let s = setup(on, PodEnvOptions::default()).await;

    // v5: stdin, then the close signal for channel 0 ends `cat`'s input.
    let url = exec_url(
        &s,
        exec_req(&s.sh, &["sh", "-c", "cat; echo end; echo e >&2"], true),
    )
    .await;
    let (mut ws, proto) = ws_connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(proto, "v5.channel.k8s.io");
    ws_send(&mut ws, 0, b"abc\n").await.unwrap();
    ws_send(&mut ws, 0, b"def\n").await.unwrap();
    ws.send(Message::Binary(vec![255u8, 0].into()))
        .await
        .unwrap();
    let ch = ws_collect(&mut ws, Duration::from_secs(20)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ch[1]), "abc\ndef\nend\n");
    assert_eq!(String::from_utf8_lossy(&ch[2]), "e\n");
    assert_eq!(status_of(&ch[3])["status"], "Success");

    // The URL was for one use only.
    let err = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");

    // v4: a failing command's exit code in the status.
    let url = exec_url(
        &s,
        exec_req(&s.sh, &["sh", "-c", "echo out; exit 7"], false),
    )
    .await;
    let (mut ws, proto) = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    let ch = ws_collect(&mut ws, Duration::from_secs(20)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ch[1]), "out\n");
    let st = status_of(&ch[3]);
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "7");

    // A command killed by a signal reports 128 + the signal.
    let url = exec_url(&s, exec_req(&s.sh, &["sh", "-c", "kill -9 $$"], false)).await;
    let (mut ws, _) = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    let ch = ws_collect(&mut ws, Duration::from_secs(20)).await.unwrap();
    assert_eq!(status_of(&ch[3])["details"]["causes"][0]["message"], "137");

    // Closing the client's connection kills the command (no process left behind).
    let url = exec_url(&s, exec_req(&s.sh, &["sh", "-c", "exec sleep 4242"], true)).await;
    let (ws, _) = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    let mut rt = s.env.rt().await.unwrap();
    e2e::pods::eventually("the exec to run", RUNNING, || {
        let mut rt = rt.clone();
        let id = s.sh.clone();
        async move {
            Ok(exec_ok(&mut rt, &id, "ps")
                .await?
                .contains("sleep 4242")
                .then_some(()))
        }
    })
    .await
    .unwrap();
    drop(ws);
    e2e::pods::eventually("the abandoned exec to die", RUNNING, || {
        let mut rt = rt.clone();
        let id = s.sh.clone();
        async move { Ok((!exec_ok(&mut rt, &id, "ps").await?.contains("sleep 4242")).then_some(())) }
    })
    .await
    .unwrap();

    // Port forwarding framed in v4.channel.k8s.io: the port first on both channels, then
    // the connection's bytes.
    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: s.pod_id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (mut ws, proto) = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    ws_send(
        &mut ws,
        0,
        b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let ch = ws_collect(&mut ws, Duration::from_secs(20)).await.unwrap();
    assert_eq!(&ch[0][..2], &8080u16.to_le_bytes(), "port prefix on data");
    assert_eq!(
        &ch[1][..],
        &8080u16.to_le_bytes(),
        "port prefix, no error: {:?}",
        String::from_utf8_lossy(&ch[1][2..])
    );
    let resp = String::from_utf8_lossy(&ch[0][2..]);
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(" 200 "),
        "{resp}"
    );
    assert!(resp.ends_with("hello-from-the-pod\n"), "{resp}");

    // A port nobody listens on: the error channel says so.
    let url = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: s.pod_id.clone(),
            port: vec![9],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (mut ws, _) = ws_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let ch = ws_collect(&mut ws, Duration::from_secs(20)).await.unwrap();
    let msg = String::from_utf8_lossy(&ch[1][2..]);
    assert!(msg.contains("port 9") && msg.contains("refused"), "{msg}");

    // Unknown tokens and paths are 404, for SPDY clients too.
    let base = url.rsplit_once("/portforward/").unwrap().0;
    for path in ["/exec/nope", "/attach/x", "/portforward/", "/other"] {
        let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
        let (status, _) = http_get(port, path).unwrap();
        assert!(status.contains("404"), "{path}: {status}");
    }

    // A stopped container cannot be exec'd into or attached to.
    rt.stop_container(StopContainerRequest {
        container_id: s.sh.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let e = rt
        .exec(exec_req(&s.sh, &["true"], false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("not running"), "{e}");
    let e = rt
        .attach(AttachRequest {
            container_id: s.sh.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let e = rt
        .exec(ExecRequest {
            container_id: s.web.clone(),
            cmd: vec!["sh".into()],
            tty: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let _ = &s.att;
}

/// The daemon's and podinit's fds, and the processes in the container, after a burst of
/// streams must be what they were before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_concurrent_execs_and_a_large_port_forward_leak_nothing() {
    let s = setup(Store::Overlay, PodEnvOptions::default()).await;
    let sock = socket(&s).to_path_buf();
    let mut rt = s.env.rt().await.unwrap();
    let daemon_pid = s.env.daemon.pid().unwrap();
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: s.pod_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let podinit_pid = u32::try_from(info["init_pid"].as_u64().unwrap()).unwrap();

    // Warm up (first connections, lazily made things), then take the baseline.
    let mut warm = crictl(&sock).unwrap();
    warm.args(["exec", &s.sh, "true"]);
    assert_eq!(run_with_input(warm, b"").unwrap().0, 0);
    let fds = || (fd_count(daemon_pid), fd_count(podinit_pid));
    let before = fds();
    let procs_before = processes(&mut rt, &s.sh).await;

    // 50 execs at once, each with 10 000 lines of output.
    let expected: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let mut cmd = crictl(&sock).unwrap();
            cmd.args(["exec", &s.sh, "seq", "1", "10000"]);
            std::thread::spawn(move || run_with_input(cmd, b"").unwrap())
        })
        .collect();
    for h in handles {
        let (code, out, err) = h.join().unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(out == expected, "output of {} bytes differs", out.len());
    }
    eprintln!("50 concurrent execs: {:?}", t0.elapsed());

    // 200 MB of random bytes from httpd in the pod through crictl port-forward.
    exec_ok(
        &mut rt,
        &s.web,
        "head -c 209715200 /dev/urandom > /www/big && sha256sum /www/big > /www/big.sha",
    )
    .await
    .unwrap();
    let want = exec_ok(&mut rt, &s.web, "cat /www/big.sha").await.unwrap();
    let want = want.split_whitespace().next().unwrap().to_string();
    {
        let pf = PortForward::start(&sock, &s.pod_id, 8080, false).unwrap();
        let t0 = Instant::now();
        let (status, body) = http_get(pf.local_port, "/big").unwrap();
        let secs = t0.elapsed().as_secs_f64();
        assert!(status.contains("200"), "{status}");
        assert_eq!(body.len(), 209_715_200, "all bytes arrive");
        assert_eq!(hex::encode(sha2::Sha256::digest(&body)), want, "and intact");
        eprintln!(
            "200 MiB through crictl port-forward: {secs:.2} s, {:.0} MiB/s",
            200.0 / secs
        );
    }

    // Nothing left: no exec'd process in the container, no fd in the daemon or podinit.
    let procs_after = processes(&mut rt, &s.sh).await;
    assert_eq!(procs_before, procs_after, "processes left in the container");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = fds();
        if now.0 <= before.0 && now.1 <= before.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds leaked: daemon {} -> {}, podinit {} -> {}",
            before.0,
            now.0,
            before.1,
            now.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !e2e::procs::all_pids()
            .into_iter()
            .any(|p| e2e::procs::cmdline(p).iter().any(|a| a == &s.pod_id)
                && e2e::procs::comm(p) == "crictl"),
        "a crictl port-forward was left running"
    );
}

/// `idle_timeout` from the config: a stream with no traffic is closed and its command
/// killed; one that keeps moving data outlives the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_are_closed_after_the_configured_timeout() {
    let s = setup(
        Store::Overlay,
        PodEnvOptions {
            config_top: "[streaming]\nidle_timeout = \"2s\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    let rt = s.env.rt().await.unwrap();

    // Output every half second for 4 s: never idle for 2 s, so it runs to its end.
    let url = exec_url(
        &s,
        exec_req(
            &s.sh,
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done",
            ],
            false,
        ),
    )
    .await;
    let (mut ws, _) = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    let ch = ws_collect(&mut ws, Duration::from_secs(30)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ch[1]), "1\n2\n3\n4\n5\n6\n7\n8\n");
    assert_eq!(status_of(&ch[3])["status"], "Success");

    // Nothing moves: the connection is closed after about 2 s, and the command killed.
    let url = exec_url(&s, exec_req(&s.sh, &["sh", "-c", "exec sleep 4343"], true)).await;
    let t0 = Instant::now();
    let (mut ws, _) = ws_connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    ws_collect(&mut ws, Duration::from_secs(30)).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
    e2e::pods::eventually("the idle exec to die", RUNNING, || {
        let mut rt = rt.clone();
        let id = s.sh.clone();
        async move { Ok((!exec_ok(&mut rt, &id, "ps").await?.contains("sleep 4343")).then_some(())) }
    })
    .await
    .unwrap();
}

/// The container's processes (`PID ARGS`) but the `ps` listing them (run without a shell:
/// a pipeline's second command may or may not be there yet when `ps` reads /proc).
async fn processes(rt: &mut e2e::cri_client::RuntimeClient, id: &str) -> Vec<String> {
    let r = e2e::pods::exec(rt, id, &["ps", "-o", "pid,args"], 30)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim_end().ends_with("ps -o pid,args"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The streaming server on HTTPS with a certificate from the config; crictl verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_streaming_with_a_configured_certificate() {
    e2e::cmd::require_program("/usr/bin/openssl", "openssl").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("stream.crt");
    let key = dir.path().join("stream.key");
    e2e::cmd::run(Command::new("/usr/bin/openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]))
    .unwrap();
    let config = format!(
        "[streaming]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let s = setup(
        Store::Overlay,
        PodEnvOptions {
            config_top: config,
            ..Default::default()
        },
    )
    .await;
    let url = exec_url(&s, exec_req(&s.sh, &["echo", "over-tls"], false)).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut cmd = crictl(socket(&s)).unwrap();
    cmd.args([
        "exec",
        "--tls-ca",
        cert.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-sni",
        "localhost",
        &s.sh,
        "echo",
        "over-tls",
    ]);
    let (code, out, err) = run_with_input(cmd, b"").unwrap();
    assert_eq!((code, out.as_str()), (0, "over-tls\n"), "{err}");
    // Plain HTTP to the HTTPS port does not get a stream.
    let port: u16 = url
        .trim_start_matches("https://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(http_get(port, "/exec/x").is_err());
}

/// kubectl through a real control plane and kubelet (`../shared/k8s-tools/cluster`, under
/// the kubelet lock): kubectl speaks WebSocket to the API server, which goes to the kubelet,
/// which proxies to the daemon's streaming server. exec (exit code, stdin, stderr), exec -it
/// in a terminal, attach with stdinOnce, port-forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_attach_and_port_forward_through_the_kubelet() {
    let stand_ins = tokio::task::spawn_blocking(StandInRegistry::start)
        .await
        .unwrap()
        .unwrap();
    let env = PodEnv::start_with(
        Store::Overlay,
        PodEnvOptions {
            config_top: stand_ins.mirrors_toml(),
            log_level: Some("info".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let socket = env.daemon.socket.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        let c = Cluster::up()?;
        c.start_kubelet(&socket)?;
        anyhow::Ok(c)
    })
    .await
    .unwrap()
    .unwrap();
    let result = tokio::task::block_in_place(|| kubectl_streams(&cluster));
    if let Err(e) = result {
        panic!(
            "{e:#}\n--- daemon log (end) ---\n{}",
            tail(&env.daemon.log(), 40)
        );
    }
    // The cluster goes first: its `down` has the kubelet remove the pod from the daemon.
    drop(cluster);
    drop(env);
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const KUBECTL_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: streams, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: sh
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sleep", "3600"]
    - name: att
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sh"]
      stdin: true
      stdinOnce: true
    - name: web
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sh", "-c", "mkdir -p /www && echo hello-through-kubectl > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#;

fn kubectl_streams(cluster: &Cluster) -> anyhow::Result<()> {
    use anyhow::{Context, ensure};
    let work = tempfile::tempdir()?;
    let pod = work.path().join("pod.yaml");
    std::fs::write(&pod, KUBECTL_POD)?;
    // The API server refuses pods until the controller manager made the namespace's
    // service account.
    cluster.wait_for(
        &["wait", "--for=create", "serviceaccount/default"],
        Duration::from_secs(60),
    )?;
    cluster.kubectl_run(&["apply", "-f", pod.to_str().context("path")?])?;
    cluster.wait_for(
        &["wait", "--for=condition=Ready", "pod/streams"],
        Duration::from_secs(120),
    )?;
    let kubectl = |args: &[&str]| {
        let mut c = cluster.kubectl();
        c.args(args);
        c
    };

    // exec: stdout, stderr and the exit code.
    let (code, out, err) = run_with_input(
        kubectl(&[
            "exec",
            "streams",
            "-c",
            "sh",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]),
        b"",
    )?;
    ensure!(
        (code, out.as_str()) == (3, "out\n") && err.contains("err"),
        "kubectl exec: exit {code}, stdout {out:?}, stderr {err:?}"
    );

    // exec -i: stdin reaches the command, its end ends `cat`.
    let (code, out, err) = run_with_input(
        kubectl(&["exec", "-i", "streams", "-c", "sh", "--", "cat"]),
        b"through kubectl\n",
    )?;
    ensure!(
        (code, out.as_str()) == (0, "through kubectl\n"),
        "kubectl exec -i: exit {code}, stdout {out:?}, stderr {err:?}"
    );

    // exec -it in a real terminal: the size reaches the container's terminal.
    let line = std::iter::once(kubectl(&[]).get_program().to_string_lossy().into_owned())
        .chain(["exec", "-it", "streams", "-c", "sh", "--", "sh"].map(String::from))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args([
            "-qec",
            &format!("stty cols 91 rows 33; {line}"),
            "/dev/null",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig);
    let (_, out, _) = run_with_input(script, b"stty size; tty; exit 5\n")?;
    ensure!(
        out.contains("33 91") && out.contains("/dev/pts/"),
        "kubectl exec -it: terminal not seen: {out:?}"
    );

    // attach: what is typed reaches the container's shell, whose output comes back; the
    // end of stdin (stdinOnce) ends it.
    let (code, out, err) = run_with_input(
        kubectl(&["attach", "-i", "streams", "-c", "att"]),
        b"echo attached-through-kubectl\n",
    )?;
    ensure!(
        out.contains("attached-through-kubectl\n"),
        "kubectl attach: exit {code}, stdout {out:?}, stderr {err:?}"
    );

    // port-forward to httpd in the pod.
    let local = e2e::streaming::free_port()?;
    let pf = PortForward::spawn(
        kubectl(&["port-forward", "pod/streams", &format!("{local}:8080")]),
        local,
    )?;
    for _ in 0..3 {
        let (status, body) = http_get(pf.local_port, "/index.html")?;
        ensure!(
            status.contains("200") && body == b"hello-through-kubectl\n",
            "kubectl port-forward: {status} {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    drop(pf);
    cluster.kubectl_run(&["delete", "pod", "streams", "--wait=true"])?;
    Ok(())
}
