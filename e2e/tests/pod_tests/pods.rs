//! The bodies of the pod and container tests: pods and containers through the real daemon,
//! real CNI (bridge plugin) and the static podinit. Each takes a [`Setup`] (pod host driver
//! and layer store) and gets its own daemon, registry and network; `tests/pods.rs` runs them
//! with the lxc driver on both stores, `tests/pve.rs` with the pve driver.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use e2e::pods::{PodEnv, Setup, container_config, exec, exec_ok, pod_ip, sh, wait_container_state};
use k8s_cri::v1::ContainerState;

const RUNNING: Duration = Duration::from_secs(20);

/// An HTTP GET from the host; returns the body.
fn http_get(ip: &str, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

pub async fn two_containers_share_the_pod_network(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.config).await.unwrap();
    env.pull(&env.images.multi_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("web");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    assert_eq!(pod_id.len(), 64);

    // The config image runs as uid 1000 in /home/app.
    let mut server = container_config("server", &env.images.config, &[]);
    server.command = sh(
        "mkdir -p /tmp/www && echo served-by-server > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    let server_id = env
        .run_container(&mut rt, &pod_id, &pod, server)
        .await
        .unwrap();
    let client = container_config("client", &env.images.multi_layer, &["sleep", "3600"]);
    let client_id = env
        .run_container(&mut rt, &pod_id, &pod, client)
        .await
        .unwrap();
    for id in [&server_id, &client_id] {
        wait_container_state(&mut rt, id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
    }

    // Same pod IP, from CNI, in both containers.
    let ip = pod_ip(&mut rt, &pod_id).await.unwrap();
    assert!(
        env.net.contains(&ip),
        "pod IP {ip} not in {}",
        env.net.subnet()
    );
    for id in [&server_id, &client_id] {
        let addrs = exec_ok(&mut rt, id, "ip -4 -o addr show eth0")
            .await
            .unwrap();
        assert!(addrs.contains(&format!("inet {ip}/24")), "{id}: {addrs}");
    }

    // The client reaches the server on localhost (httpd may take a moment to listen).
    let body = e2e::pods::eventually("server answers on 127.0.0.1:8080", RUNNING, || {
        let mut rt = rt.clone();
        let id = client_id.clone();
        async move {
            let r = exec(
                &mut rt,
                &id,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
                10,
            )
            .await?;
            Ok((r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).into_owned()))
        }
    })
    .await
    .unwrap();
    assert_eq!(body, "served-by-server\n");

    // The host reaches the pod IP.
    assert_eq!(http_get(&ip, 8080).unwrap(), "served-by-server\n");

    // Each container sees its own root filesystem only.
    assert_eq!(
        exec_ok(&mut rt, &client_id, "cat /data/keep.txt")
            .await
            .unwrap(),
        "keep\n"
    );
    let r = exec(&mut rt, &server_id, &["test", "-e", "/data/keep.txt"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 1, "the server sees the client's image files");
    let r = exec(
        &mut rt,
        &client_id,
        &["test", "-e", "/tmp/www/index.html"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, 1, "the client sees the server's files");
    // The config image's user and working directory hold in the server.
    assert_eq!(
        exec_ok(&mut rt, &server_id, "id -u; pwd").await.unwrap(),
        "1000\n/home/app\n"
    );
    // The pod's hostname and the env from the request.
    assert_eq!(
        exec_ok(&mut rt, &client_id, "hostname; echo $PVECRI_TEST")
            .await
            .unwrap(),
        "web\n1\n"
    );
}

fn log_path(pod: &k8s_cri::v1::PodSandboxConfig, name: &str) -> std::path::PathBuf {
    std::path::Path::new(&pod.log_directory).join(format!("{name}/0.log"))
}

pub async fn logs_are_cri_format_and_reopen_starts_a_new_file(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("logs");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // 40000 characters: two 16 KiB partial chunks and a full rest; then a marker file tells
    // the test the first part is out, and the container waits for `go` before the second.
    let script = "echo out-1; echo err-1 >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; \
                  touch /tmp/first-done; \
                  while [ ! -e /tmp/go ]; do sleep 0.05; done; echo out-2; echo err-2 >&2; sleep 3600";
    let mut cfg = container_config("talker", &env.images.one_layer, &[]);
    cfg.command = sh(script);
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    let path = log_path(&pod, "talker");
    let parsed = e2e::pods::eventually("the first part is logged", RUNNING, || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines = e2e::pods::parse_cri_log(&text)?;
            Ok((lines.iter().filter(|l| l.tag == "F").count() >= 3).then_some(lines))
        }
    })
    .await
    .unwrap();
    let status = e2e::pods::container_status(&mut rt, &id).await.unwrap();
    assert_eq!(status.log_path, path.display().to_string());
    assert_eq!(
        e2e::pods::full_lines(&parsed, "stdout"),
        ["out-1".to_string(), "x".repeat(40000)]
    );
    assert_eq!(e2e::pods::full_lines(&parsed, "stderr"), ["err-1"]);
    let long: Vec<_> = parsed
        .iter()
        .filter(|l| l.stream == "stdout" && l.text.starts_with('x'))
        .collect();
    assert_eq!(
        long.iter()
            .map(|l| (l.tag.as_str(), l.text.len()))
            .collect::<Vec<_>>(),
        [("P", 16384), ("P", 16384), ("F", 40000 - 2 * 16384)],
        "a long line is split into 16 KiB partial chunks and a full rest"
    );

    // The kubelet's rotation: rename, then ReopenContainerLog.
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    rt.reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(path.is_file(), "reopen creates a new file at the log path");
    exec_ok(&mut rt, &id, "touch /tmp/go").await.unwrap();
    let fresh = e2e::pods::eventually("the second part is logged", RUNNING, || {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines = e2e::pods::parse_cri_log(&text)?;
            Ok((lines.len() >= 2).then_some(lines))
        }
    })
    .await
    .unwrap();
    assert_eq!(e2e::pods::full_lines(&fresh, "stdout"), ["out-2"]);
    assert_eq!(e2e::pods::full_lines(&fresh, "stderr"), ["err-2"]);
    let old = e2e::pods::parse_cri_log(&std::fs::read_to_string(&rotated).unwrap()).unwrap();
    assert_eq!(old, parsed, "nothing more went to the rotated file");
}

pub async fn exit_codes_and_reasons(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("exits");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut fails = container_config("fails", &env.images.one_layer, &[]);
    fails.command = sh("sleep 0.2; exit 3");
    let fails = env
        .run_container(&mut rt, &pod_id, &pod, fails)
        .await
        .unwrap();
    let mut ok = container_config("ok", &env.images.one_layer, &[]);
    ok.command = sh("sleep 0.2; exit 0");
    let ok = env.run_container(&mut rt, &pod_id, &pod, ok).await.unwrap();
    let mut missing = container_config("missing", &env.images.one_layer, &["/no/such/program"]);
    missing.args = vec![];
    let missing_result = env.run_container(&mut rt, &pod_id, &pod, missing).await;

    let st = wait_container_state(&mut rt, &fails, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));
    assert!(st.created_at > 0 && st.started_at >= st.created_at);
    assert!(
        st.finished_at - st.started_at >= 150_000_000,
        "times are in nanoseconds: started {} finished {}",
        st.started_at,
        st.finished_at
    );
    let st = wait_container_state(&mut rt, &ok, ContainerState::ContainerExited, RUNNING)
        .await
        .unwrap();
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(st.finished_at > st.started_at);
    // A program that is not there: StartContainer fails and the container is not running.
    let err = missing_result.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert!(status.message().contains("/no/such/program"), "{status:?}");
}

pub async fn exec_sync_output_exit_code_and_timeout(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("exec");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let cfg = container_config("sleeper", &env.images.one_layer, &["sleep", "3600"]);
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    let r = exec(
        &mut rt,
        &id,
        &["sh", "-c", "echo to-out; echo to-err >&2; exit 5"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(r.stdout, b"to-out\n");
    assert_eq!(r.stderr, b"to-err\n");
    assert_eq!(r.exit_code, 5);
    // Runs in the container: its env, its root.
    let out = exec_ok(&mut rt, &id, "echo $PVECRI_TEST; cat /etc/motd")
        .await
        .unwrap();
    assert_eq!(out, "1\npvecri test image\n");

    // Outliving the timeout: DeadlineExceeded after about the timeout, and the command is
    // killed (its pid file names a process that is gone).
    let started = std::time::Instant::now();
    let err = exec(
        &mut rt,
        &id,
        &["sh", "-c", "echo $$ > /tmp/slow.pid; exec sleep 30"],
        1,
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "the 1s timeout took {took:?}"
    );
    let r = exec(
        &mut rt,
        &id,
        &["sh", "-c", "kill -0 $(cat /tmp/slow.pid)"],
        10,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0, "the timed-out command still runs");
    // A missing program is an RPC error, as with containerd (runc's exec fails).
    let err = exec(&mut rt, &id, &["/no/such/program"], 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown, "{err:?}");
    assert!(err.message().contains("/no/such/program"), "{err:?}");
    // The container itself was not disturbed.
    let st = e2e::pods::container_status(&mut rt, &id).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
}

pub async fn volumes_are_visible_and_readonly_is_honoured(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("volumes");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let host = tempfile::tempdir().unwrap();
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("hello"), "from the host\n").unwrap();
    let file = host.path().join("config.txt");
    std::fs::write(&file, "key=value\n").unwrap();
    let created = host.path().join("new/dir");
    let mount = |host: &std::path::Path, ctr: &str, readonly: bool| k8s_cri::v1::Mount {
        container_path: ctr.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    };
    let mut cfg = container_config("user", &env.images.one_layer, &["sleep", "3600"]);
    cfg.mounts = vec![
        mount(&rw, "/vol/rw", false),
        mount(&ro, "/vol/ro", true),
        mount(&file, "/etc/app/config.txt", true),
        mount(&created, "/vol/new", false),
    ];
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();

    assert_eq!(
        exec_ok(&mut rt, &id, "cat /vol/ro/hello /etc/app/config.txt")
            .await
            .unwrap(),
        "from the host\nkey=value\n"
    );
    exec_ok(&mut rt, &id, "echo from the container > /vol/rw/out")
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "from the container\n"
    );
    let r = exec(&mut rt, &id, &["sh", "-c", "echo x > /vol/ro/nope"], 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "wrote to a readonly volume");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!ro.join("nope").exists());
    let r = exec(
        &mut rt,
        &id,
        &["sh", "-c", "echo x >> /etc/app/config.txt"],
        10,
    )
    .await
    .unwrap();
    assert_ne!(r.exit_code, 0, "wrote to a readonly file mount");
    // A missing source is created as a directory, as containerd does.
    assert!(created.is_dir());
    exec_ok(&mut rt, &id, "touch /vol/new/made").await.unwrap();
    assert!(created.join("made").is_file());
    // Host changes show inside.
    std::fs::write(rw.join("later"), "later\n").unwrap();
    assert_eq!(
        exec_ok(&mut rt, &id, "cat /vol/rw/later").await.unwrap(),
        "later\n"
    );
    // ContainerStatus lists the mounts.
    let st = e2e::pods::container_status(&mut rt, &id).await.unwrap();
    let mut listed: Vec<(String, bool)> = st
        .mounts
        .iter()
        .map(|m| (m.container_path.clone(), m.readonly))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("/etc/app/config.txt".to_string(), true),
            ("/vol/new".to_string(), false),
            ("/vol/ro".to_string(), true),
            ("/vol/rw".to_string(), false),
        ]
    );
    // Removing the container unbinds its volumes and leaves the host's files.
    rt.remove_container(k8s_cri::v1::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let mounts = e2e::mounts::current_mounts().unwrap();
    let left = e2e::mounts::mounts_under(&mounts, &env.pod_dir(&pod_id).join("ctrs"));
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert_eq!(
        std::fs::read_to_string(ro.join("hello")).unwrap(),
        "from the host\n"
    );
}

pub async fn host_network_pods_share_the_host_network(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let mut pod = env.pod_config("hostnet");
    pod.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
        security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
            namespace_options: Some(k8s_cri::v1::NamespaceOption {
                network: k8s_cri::v1::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // No CNI for it: no address from the test network, no veth on its bridge.
    assert_eq!(pod_ip(&mut rt, &pod_id).await.unwrap(), "");
    assert!(env.net.attached_interfaces().unwrap().is_empty());
    // It serves on a host port, reached on the host's loopback.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = container_config("hostsrv", &env.images.one_layer, &[]);
    cfg.command = sh(&format!(
        "mkdir -p /tmp/www && echo on-the-host-network > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    ));
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    // The container sees the host's interfaces, this test's bridge among them.
    let links = exec_ok(&mut rt, &id, "ip -o link").await.unwrap();
    assert!(links.contains(&env.net.bridge), "{links}");
    // And the node's hostname, as the kubelet sends none for host-network pods.
    let node = env.node_hostname();
    assert_eq!(
        exec_ok(&mut rt, &id, "hostname").await.unwrap(),
        format!("{node}\n")
    );
    let body = e2e::pods::eventually("the server answers on the host", RUNNING, || async move {
        Ok(http_get("127.0.0.1", port).ok())
    })
    .await
    .unwrap();
    assert_eq!(body, "on-the-host-network\n");
}

pub async fn stop_sends_the_image_stop_signal_then_sigkill(setup: Setup) {
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    env.pull(&env.images.stop_signal).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("stopping");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // The image says SIGUSR1; the container exits cleanly on it.
    let mut polite = container_config("polite", &env.images.stop_signal, &[]);
    polite.command =
        sh("trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done");
    // SIGTERM (the default) is only logged: SIGKILL must follow after the timeout.
    let mut stubborn = container_config("stubborn", &env.images.one_layer, &[]);
    stubborn.command = sh("trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done");
    let mut instant = container_config("instant", &env.images.one_layer, &[]);
    instant.command = sh("trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done");
    let mut ids = vec![];
    for cfg in [polite, stubborn, instant] {
        ids.push(
            env.run_container(&mut rt, &pod_id, &pod, cfg)
                .await
                .unwrap(),
        );
    }
    for name in ["polite", "stubborn", "instant"] {
        let path = log_path(&pod, name);
        e2e::pods::eventually("the trap is set", RUNNING, || {
            let path = path.clone();
            async move {
                Ok(std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains("stdout F ready")
                    .then_some(()))
            }
        })
        .await
        .unwrap();
    }
    let stopper = rt.clone();
    let stop = move |id: &String, timeout: i64| {
        let mut rt = stopper.clone();
        let id = id.clone();
        async move {
            let t = std::time::Instant::now();
            rt.stop_container(k8s_cri::v1::StopContainerRequest {
                container_id: id,
                timeout,
            })
            .await
            .unwrap();
            t.elapsed()
        }
    };

    let took = stop(&ids[0], 10).await;
    assert!(took < Duration::from_secs(5), "SIGUSR1 stop took {took:?}");
    let st = e2e::pods::container_status(&mut rt, &ids[0]).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    let log = std::fs::read_to_string(log_path(&pod, "polite")).unwrap();
    assert!(log.contains("stdout F got-usr1"), "{log}");

    let took = stop(&ids[1], 2).await;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "a 2s stop of a container ignoring SIGTERM took {took:?}"
    );
    let st = e2e::pods::container_status(&mut rt, &ids[1]).await.unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"));
    let log = std::fs::read_to_string(log_path(&pod, "stubborn")).unwrap();
    assert!(log.contains("stdout F got-term"), "{log}");

    // Timeout 0: SIGKILL at once, no stop signal.
    let took = stop(&ids[2], 0).await;
    assert!(took < Duration::from_secs(2), "a 0s stop took {took:?}");
    let st = e2e::pods::container_status(&mut rt, &ids[2]).await.unwrap();
    assert_eq!(st.exit_code, 137);
    let log = std::fs::read_to_string(log_path(&pod, "instant")).unwrap();
    assert!(!log.contains("got-term"), "{log}");
}

pub async fn port_mappings_reach_the_pod_through_portmap(setup: Setup) {
    let env = PodEnv::start_with(
        setup,
        e2e::pods::PodEnvOptions {
            network: e2e::cni::NetworkOptions { portmap: true },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let host_port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut pod = env.pod_config("ports");
    pod.port_mappings = vec![k8s_cri::v1::PortMapping {
        protocol: k8s_cri::v1::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let mut cfg = container_config("srv", &env.images.one_layer, &[]);
    cfg.command = sh(
        "mkdir -p /tmp/www && echo through-the-host-port > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    let id = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &id, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    // The host's address on the pod network is local: portmap's OUTPUT rule applies.
    let gw = env.net.gateway().to_string();
    let body = e2e::pods::eventually("the host port answers", RUNNING, || {
        let gw = gw.clone();
        async move { Ok(http_get(&gw, host_port).ok()) }
    })
    .await
    .unwrap();
    assert_eq!(body, "through-the-host-port\n");
    let rules =
        || e2e::cmd::run(std::process::Command::new("iptables-save").args(["-t", "nat"])).unwrap();
    assert!(rules().contains(&pod_id), "no portmap rule names the pod");
    rt.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(
        !rules().contains(&pod_id),
        "portmap rules left after StopPodSandbox"
    );
    assert!(
        http_get(&gw, host_port).is_err(),
        "the host port still answers"
    );
}

/// `container_config` with a seccomp profile of that type.
fn with_seccomp(
    mut cfg: k8s_cri::v1::ContainerConfig,
    profile_type: k8s_cri::v1::security_profile::ProfileType,
    localhost_ref: &str,
) -> k8s_cri::v1::ContainerConfig {
    cfg.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref: localhost_ref.into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

/// The filter is a property of the container, not of the store: one store is enough.
pub async fn runtime_default_seccomp_is_enforced_in_the_process_and_in_exec(setup: Setup) {
    use k8s_cri::v1::security_profile::ProfileType;
    let env = PodEnv::start(setup).await.unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    let pod = env.pod_config("seccomp");
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    // unshare(CLONE_NEWUSER) needs no capability: only a seccomp filter refuses it.
    let script = "unshare -U true 2>/tmp/unshare.err; echo $? > /tmp/unshare.rc; exec sleep 3600";
    let image = &env.images.one_layer;
    let confined = with_seccomp(
        container_config("confined", image, &["sh", "-c", script]),
        ProfileType::RuntimeDefault,
        "",
    );
    let unconfined = with_seccomp(
        container_config("unconfined", image, &["sh", "-c", script]),
        ProfileType::Unconfined,
        "",
    );
    let confined = env
        .run_container(&mut rt, &pod_id, &pod, confined)
        .await
        .unwrap();
    let unconfined = env
        .run_container(&mut rt, &pod_id, &pod, unconfined)
        .await
        .unwrap();
    for id in [&confined, &unconfined] {
        wait_container_state(&mut rt, id, ContainerState::ContainerRunning, RUNNING)
            .await
            .unwrap();
    }
    let rc = async |id: &str| {
        let rt = env.rt().await.unwrap();
        e2e::pods::eventually("the container's unshare result", RUNNING, || {
            let (id, mut rt) = (id.to_owned(), rt.clone());
            async move {
                let r = exec(&mut rt, &id, &["cat", "/tmp/unshare.rc"], 10).await?;
                Ok((r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).into_owned()))
            }
        })
        .await
        .unwrap()
    };
    assert_ne!(
        rc(&confined).await.trim(),
        "0",
        "unshare -U went through RuntimeDefault"
    );
    assert_eq!(
        rc(&unconfined).await.trim(),
        "0",
        "unshare -U failed without a filter"
    );
    let err = exec_ok(&mut rt, &confined, "cat /tmp/unshare.err")
        .await
        .unwrap();
    assert!(err.contains("Operation not permitted"), "{err}");

    // ExecSync'd processes carry the container's filter too.
    let r = exec(&mut rt, &confined, &["unshare", "-U", "true"], 10)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = exec(&mut rt, &unconfined, &["unshare", "-U", "true"], 10)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{:?}", String::from_utf8_lossy(&r.stderr));
    // Ordinary work is untouched.
    assert_eq!(
        exec_ok(&mut rt, &confined, "echo ok").await.unwrap(),
        "ok\n"
    );

    // A Localhost profile that is not on the node: FailedPrecondition, naming it, and nothing
    // created.
    let localhost = with_seccomp(
        container_config("localhost", image, &["sleep", "3600"]),
        ProfileType::Localhost,
        "/var/lib/kubelet/seccomp/audit.json",
    );
    let err = env
        .create_container(&mut rt, &pod_id, &pod, localhost)
        .await
        .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().unwrap();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("audit.json"), "{status:?}");
    let listed = rt
        .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2, "{listed:?}");
}

/// A warm pool of one: RunPodSandbox adopts the ready CT (the pod's id is the warm CT's), gives
/// it the pod's hostname, network and limits, and the pool makes the next; a pod the warm CT
/// does not fit (host network) is created cold.
pub async fn warm_pool_adopts_and_refills(setup: Setup) {
    let env = PodEnv::start_with(
        setup,
        e2e::pods::PodEnvOptions {
            warm_pool: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    env.pull(&env.images.one_layer).await.unwrap();
    let mut rt = env.rt().await.unwrap();
    env.wait_warm_ready(1, Duration::from_secs(90))
        .await
        .unwrap();
    let mut pod = env.pod_config("warm");
    pod.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
        resources: Some(k8s_cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
        sysctls: std::collections::HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "80".to_string(),
        )]),
        ..Default::default()
    });
    let pod_id = env.run_pod(&mut rt, &pod).await.unwrap();
    let stats = env.warm_pool().await.unwrap();
    assert_eq!(
        stats["taken"], 1,
        "the pod did not adopt the warm CT: {stats}"
    );
    assert!(
        env.pod_dir(&pod_id).join("podinit.sock").exists(),
        "the pod's directory is the warm CT's"
    );
    let cfg = container_config("c", &env.images.one_layer, &["sleep", "3600"]);
    let ctr = env
        .run_container(&mut rt, &pod_id, &pod, cfg)
        .await
        .unwrap();
    wait_container_state(&mut rt, &ctr, ContainerState::ContainerRunning, RUNNING)
        .await
        .unwrap();
    assert_eq!(exec_ok(&mut rt, &ctr, "hostname").await.unwrap(), "warm\n");
    assert_eq!(
        exec_ok(
            &mut rt,
            &ctr,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        .await
        .unwrap(),
        "80\n"
    );
    let ip = pod_ip(&mut rt, &pod_id).await.unwrap();
    assert!(
        env.net.contains(&ip),
        "pod IP {ip} not in {}",
        env.net.subnet()
    );
    let addrs = exec_ok(&mut rt, &ctr, "ip -4 -o addr show eth0")
        .await
        .unwrap();
    assert!(addrs.contains(&ip), "{addrs}");
    // The pool makes the next one.
    env.wait_warm_ready(1, Duration::from_secs(90))
        .await
        .unwrap();
    // A host-network pod does not fit a warm CT: created cold, the warm one stays.
    let mut host = env.pod_config("warm-host");
    host.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
        security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
            namespace_options: Some(k8s_cri::v1::NamespaceOption {
                network: k8s_cri::v1::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    env.run_pod(&mut rt, &host).await.unwrap();
    let stats = env.warm_pool().await.unwrap();
    assert_eq!(
        (stats["taken"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}
