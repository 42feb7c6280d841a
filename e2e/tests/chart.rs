//! The Helm chart `charts/pvecri`: lint, rendering with default and non-default values (and
//! the values it must refuse), every rendered object accepted by a real apiserver, and the
//! chart installed into a real single-node cluster whose kubelet runs on pvecri.
//!
//! What the install test substitutes, and what it does not: the installer image is the real
//! one (`scripts/build-image` from a package of the binaries under test), pushed to a local
//! registry. The node's host root is a temporary directory (`hostRoot`), so the install
//! cannot touch this machine's /usr or /etc; as that root has no systemd, the default
//! `restart.method: auto` makes the installer write restart requests instead of running
//! systemctl (the pod still gets hostPID, as on a real node); the test reads them. The pvecri that runs the pods is the e2e harness's daemon, not the one
//! installed into the temporary root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::cmd::{output, run};
use e2e::daemon::binary_path;
use e2e::deb::{build_deb, workspace_dir};
use e2e::k8s_tools::{self, StandInRegistry};
use e2e::pods::{PodEnv, PodEnvOptions, Store};

const NAMESPACE: &str = "pvecri-system";
const RELEASE: &str = "pvecri";

fn chart() -> PathBuf {
    workspace_dir().join("charts/pvecri")
}

fn helm() -> Command {
    let mut cmd = Command::new(k8s_tools::tool("helm").unwrap());
    let home = std::env::temp_dir().join("pvecri-helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// `helm template` of the chart; Err holds helm's stderr.
fn template(args: &[&str]) -> Result<String, String> {
    let out = output(
        helm()
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE])
            .args(args),
    )
    .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The rendered documents of one kind.
fn documents<'a>(yaml: &'a str, kind: &str) -> Vec<&'a str> {
    yaml.split("\n---")
        .filter(|d| d.lines().any(|l| l == format!("kind: {kind}")))
        .collect()
}

/// The text of a `key: |` literal block in a YAML document.
fn literal_block(doc: &str, key: &str) -> Option<String> {
    let mut lines = doc.lines();
    let header = lines.find(|l| l.trim_start() == format!("{key}: |"))?;
    let indent = header.len() - header.trim_start().len() + 2;
    let mut out = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    Some(out.trim_end().to_string() + "\n")
}

fn write_values(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Values a Proxmox admin might give: most of the chart's switches off their defaults.
const NON_DEFAULT_VALUES: &str = r#"
image:
  repository: registry.example:5000/pvecri/installer
  tag: "0.1.0"
  pullSecrets: [{name: regcred}]
nodeSelector:
  kubernetes.io/os: linux
  node.example/proxmox: "true"
restart:
  method: systemd
kubelet:
  configure: true
  extraArgs: ["--v=2"]
pve:
  existingSecret: pve-api
  existingSecretKey: api-token
runtimeClass:
  name: proxmox-ct
  overhead:
    memory: 16Mi
    cpu: 50m
metrics:
  enabled: true
  port: 9500
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
config:
  socket: /run/pvecri/pvecri.sock
  log_level: debug
  cgroup_driver: systemd
  storage:
    driver: zfs
    zfs:
      dataset: rpool/pvecri
  pod_host:
    driver: lxc
  cni:
    bin_dirs: [/opt/cni/bin]
  images:
    max_concurrent_downloads: 8
  registries:
    registry.k8s.io:
      mirrors: ["http://mirror.example:5000"]
    "private.example:5000":
      insecure: true
      ca_files: [/etc/pvecri/certs/ca.pem]
"#;

#[test]
fn chart_lints_strictly() {
    for args in [
        vec!["--set", "image.repository=r.example/i"],
        vec![
            "--set",
            "image.repository=r.example/i",
            "--set",
            "kubelet.configure=true",
        ],
    ] {
        let out = output(helm().args(["lint", "--strict"]).arg(chart()).args(&args)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "helm lint {args:?}:\n{text}");
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "{text}"
        );
    }
}

#[test]
fn required_values_fail_with_a_message() {
    let err = template(&[]).unwrap_err();
    assert!(err.contains("image.repository is required"), "{err}");
    let err = template(&[
        "--set",
        "image.repository=r/i",
        "--set",
        "config.pod_host.driver=pve",
    ])
    .unwrap_err();
    assert!(err.contains("pve.token or pve.existingSecret"), "{err}");
    // With a token it renders, and the token goes into a Secret, not the ConfigMap.
    let out = template(&[
        "--set",
        "image.repository=r/i",
        "--set",
        "config.pod_host.driver=pve",
        "--set",
        "pve.token=root@pam!k8s=5ecret",
    ])
    .unwrap();
    let secrets = documents(&out, "Secret");
    assert_eq!(secrets.len(), 1);
    assert!(secrets[0].contains("root@pam!k8s=5ecret"));
    assert!(!documents(&out, "ConfigMap")[0].contains("5ecret"));
}

#[test]
fn the_schema_refuses_bad_values_naming_them() {
    for (set, named) in [
        ("config.sockett=/x", "sockett"),
        ("config.storage.driver=btrfs", "config.storage.driver"),
        (
            "config.images.max_concurrent_downloads=1.5",
            "config.images",
        ),
        ("restart.method=reboot", "restart.method"),
        ("pve.token=not-a-token", "pve.token"),
        ("hostRoot=relative", "hostRoot"),
        ("metrics.port=70000", "metrics.port"),
        ("imag.repository=x", "imag"),
    ] {
        let err = template(&["--set", "image.repository=r/i", "--set", set]).unwrap_err();
        assert!(err.contains(named), "--set {set}: {err}");
    }
}

#[test]
fn default_values_render_what_a_node_needs() {
    let out = template(&["--set", "image.repository=r.example/installer"]).unwrap();
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "RoleBinding",
            "DaemonSet",
            "RuntimeClass"
        ]
    );
    let ds = documents(&out, "DaemonSet")[0];
    for line in [
        "image: r.example/installer:0.1.0",
        "hostPID: true",
        "hostNetwork: true",
        "privileged: true",
        "pvecri.io/install: \"true\"",
        "path: /",
        "- \"pvecri-system/pvecri\"",
    ] {
        assert!(ds.contains(line), "no {line:?} in\n{ds}");
    }
    let cm = documents(&out, "ConfigMap")[0];
    assert!(!cm.contains("kubelet-dropin.conf"), "{cm}");
    // Empty config: comments only, every key at its default.
    let config = literal_block(cm, "config.toml").unwrap();
    assert!(config.lines().all(|l| l.starts_with('#')), "{config}");
    let rc = documents(&out, "RuntimeClass")[0];
    assert!(
        rc.contains("handler: pvecri") && rc.contains("name: pvecri"),
        "{rc}"
    );
}

#[test]
fn non_default_values_render_a_config_pvecri_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let values = write_values(dir.path(), "values.yaml", NON_DEFAULT_VALUES);
    let out = template(&["-f", values.to_str().unwrap()]).unwrap();
    let kinds: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in ["Service", "ServiceMonitor", "RuntimeClass", "DaemonSet"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert!(
        !kinds.contains(&"Secret"),
        "an existing secret is named, none made"
    );

    let cm = documents(&out, "ConfigMap")[0];
    let config_text = literal_block(cm, "config.toml").unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, &config_text).unwrap();
    // The daemon's own check accepts what the chart writes.
    run(Command::new(binary_path().unwrap())
        .args(["config", "check"])
        .arg(&config_file))
    .unwrap();
    let parsed: toml::Table = config_text.parse().unwrap();
    assert_eq!(
        parsed["images"]["max_concurrent_downloads"].as_integer(),
        Some(8)
    );
    assert_eq!(
        parsed["storage"]["zfs"]["dataset"].as_str(),
        Some("rpool/pvecri")
    );
    assert_eq!(
        parsed["registries"]["private.example:5000"]["insecure"].as_bool(),
        Some(true)
    );
    assert_eq!(parsed["metrics"]["address"].as_str(), Some("0.0.0.0:9500"));

    let dropin = literal_block(cm, "kubelet-dropin.conf").unwrap();
    assert!(
        dropin.contains("ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS")
            && dropin
                .ends_with(" --container-runtime-endpoint=unix:///run/pvecri/pvecri.sock --v=2\n"),
        "{dropin}"
    );

    let ds = documents(&out, "DaemonSet")[0];
    for line in [
        "hostPID: true",
        "secretName: pve-api",
        "key: api-token",
        "PVECRI_NODE_KUBELET_DROPIN",
        "node.example/proxmox: \"true\"",
        "- name: regcred",
        "image: registry.example:5000/pvecri/installer:0.1.0",
    ] {
        assert!(ds.contains(line), "no {line:?} in\n{ds}");
    }
    let rc = documents(&out, "RuntimeClass")[0];
    assert!(
        rc.contains("name: proxmox-ct") && rc.contains("memory: 16Mi"),
        "{rc}"
    );
    let svc = documents(&out, "Service")[0];
    assert!(
        svc.contains("clusterIP: None") && svc.contains("port: 9500"),
        "{svc}"
    );

    // Request files need no PID 1: the pods do without hostPID.
    let out = template(&[
        "--set",
        "image.repository=r/i",
        "--set",
        "restart.method=file",
    ])
    .unwrap();
    assert!(documents(&out, "DaemonSet")[0].contains("hostPID: false"));
}

/// Every value the schema knows (the schema itself refuses values it does not know, so
/// values.yaml holds no others: `helm lint` checks it against the schema) is in the README.
#[test]
fn readme_describes_every_value() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    fn paths(prefix: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            // `config` is pvecri's own config, documented in docs/configuration.md.
            if path == "config" || path == "global" {
                out.push(path);
                continue;
            }
            if v.get("properties").is_some() {
                paths(&path, v, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut all = Vec::new();
    paths("", &schema, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for p in all.iter().filter(|p| *p != "global") {
        assert!(
            readme.contains(&format!("| `{p}` |")),
            "README.md lacks a row for `{p}`"
        );
    }
}

/// A minimal CustomResourceDefinition for the Prometheus Operator's ServiceMonitor, so that
/// the apiserver can take the chart's ServiceMonitor. It checks the group, version, kind
/// and scope, not the operator's field schema.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

/// What the cluster says about the chart's pods, for a failing test.
fn diagnostics(cluster: &Cluster, env: &PodEnv) -> String {
    let mut out = String::new();
    for args in [
        vec!["get", "pods", "-A", "-o", "wide"],
        vec!["-n", NAMESPACE, "describe", "pods"],
        vec![
            "-n",
            NAMESPACE,
            "logs",
            "-l",
            "app.kubernetes.io/instance=pvecri",
            "--tail=40",
        ],
        vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
    ] {
        let o = output(cluster.kubectl().args(&args)).unwrap();
        out.push_str(&format!(
            "--- kubectl {}\n{}{}\n",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // The daemon's log follows when the pod env is dropped.
    let _ = env;
    out
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    std::fs::metadata(root.join(rel))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// The installed files of a node, relative to its root.
const INSTALLED: [&str; 7] = [
    "usr/local/bin/pvecri",
    "usr/local/lib/pvecri/podinit",
    "etc/systemd/system/pvecri.service",
    "etc/pvecri/config.toml",
    "etc/pvecri/pve-token",
    "etc/systemd/system/kubelet.service.d/90-pvecri.conf",
    "var/lib/pvecri-node/manifest.json",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_on_a_cluster_whose_node_runs_pvecri() {
    let work = tempfile::tempdir().unwrap();
    // The installer image, from a package of the binaries under test.
    let deb = build_deb(work.path(), 1).unwrap();
    let layout = work.path().join("image");
    let image_ref = run(Command::new(workspace_dir().join("scripts/build-image"))
        .arg("--deb")
        .arg(&deb)
        .arg("--out")
        .arg(&layout)
        .args(["--tag", "test"]))
    .unwrap();

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
    let repository = format!("{}/pvecri/installer", env.registry.addr());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(image_ref.trim())
        .arg(format!("docker://{repository}:test")))
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
    // The node's root, as the installer sees it; it goes with the cluster's state.
    let root = cluster.scratch_dir("host-root").unwrap();

    let result = install_upgrade_uninstall(&cluster, &env, &repository, &root, work.path()).await;
    if let Err(e) = result {
        panic!("{e:#}\n{}", diagnostics(&cluster, &env));
    }
    // The cluster goes first: its `down` has the kubelet remove the pods from the daemon.
    drop(cluster);
    drop(env);
}

async fn install_upgrade_uninstall(
    cluster: &Cluster,
    env: &PodEnv,
    repository: &str,
    root: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let kubectl = |args: &[&str]| cluster.kubectl_run(args);
    kubectl(&["create", "namespace", NAMESPACE])?;
    kubectl(&["label", "node", &cluster.node, "pvecri.io/install=true"])?;

    // Every object of both renderings is accepted by the apiserver.
    let crd = write_values(work, "crd.yaml", SERVICE_MONITOR_CRD);
    kubectl(&["apply", "-f", crd.to_str().unwrap()])?;
    cluster.wait_for(
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
        ],
        Duration::from_secs(60),
    )?;
    let non_default = write_values(work, "non-default.yaml", NON_DEFAULT_VALUES);
    for (name, args) in [
        (
            "default",
            vec!["--set", "image.repository=r.example/installer"],
        ),
        ("non-default", vec!["-f", non_default.to_str().unwrap()]),
    ] {
        let rendered = template(&args).map_err(anyhow::Error::msg)?;
        let file = write_values(work, &format!("{name}.rendered.yaml"), &rendered);
        let applied = kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "name",
        ])?;
        let objects = rendered.lines().filter(|l| l.starts_with("kind: ")).count();
        anyhow::ensure!(
            applied.lines().count() == objects,
            "{name}: {objects} objects rendered, the apiserver took:\n{applied}"
        );
    }

    // Install: the installer pod runs on pvecri and installs into the temporary root.
    let values = write_values(
        work,
        "install.yaml",
        &format!(
            r#"
image: {{repository: "{repository}", tag: test}}
hostRoot: "{root}"
kubernetesApi: "{api}"
kubelet: {{configure: true}}
pve: {{token: "root@pam!k8s=00000000-0000-0000-0000-000000000000"}}
config:
  log_level: debug
  images: {{max_concurrent_downloads: 2}}
  registries:
    registry.k8s.io: {{mirrors: ["http://127.0.0.1:5000"]}}
"#,
            root = root.display(),
            api = cluster.api_url(),
        ),
    );
    let chart_dir = chart();
    // helm's --wait takes a DaemonSet with maxUnavailable 1 on one node as ready with no pod
    // ready, so the rollout is waited for with kubectl.
    let helm_install = |verb: &str, extra: &[&str]| {
        run(cluster
            .helm()
            .args([verb, RELEASE])
            .arg(&chart_dir)
            .args(["-n", NAMESPACE, "-f", values.to_str().unwrap()])
            .args(extra))?;
        cluster.kubectl_run(&[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            &format!("daemonset/{RELEASE}"),
            "--timeout=150s",
        ])
    };
    helm_install("install", &[])?;

    for rel in INSTALLED {
        anyhow::ensure!(root.join(rel).is_file(), "{rel} was not installed");
    }
    // The binaries are the package's.
    let unpacked = work.join("unpacked");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(build_deb_path(work)?)
        .arg(&unpacked))?;
    anyhow::ensure!(
        std::fs::read(root.join("usr/local/bin/pvecri"))?
            == std::fs::read(unpacked.join("usr/bin/pvecri"))?,
        "the installed pvecri is not the package's"
    );
    anyhow::ensure!(mode(root, "usr/local/bin/pvecri") == 0o755);
    let unit = read(root, "etc/systemd/system/pvecri.service");
    anyhow::ensure!(
        unit.contains("ExecStart=/usr/local/bin/pvecri serve --config /etc/pvecri/config.toml")
            && unit.contains(
                "ExecStartPre=/usr/local/bin/pvecri config check /etc/pvecri/config.toml"
            )
            && unit.contains("KillMode=process"),
        "unit:\n{unit}"
    );
    // The config from the values, checked by the installed binary itself.
    let config: toml::Table = read(root, "etc/pvecri/config.toml").parse()?;
    anyhow::ensure!(config["log_level"].as_str() == Some("debug"), "{config:?}");
    anyhow::ensure!(config["images"]["max_concurrent_downloads"].as_integer() == Some(2));
    anyhow::ensure!(mode(root, "etc/pvecri/config.toml") == 0o600);
    run(Command::new(root.join("usr/local/bin/pvecri"))
        .args(["config", "check"])
        .arg(root.join("etc/pvecri/config.toml")))?;
    anyhow::ensure!(
        read(root, "etc/pvecri/pve-token").trim()
            == "root@pam!k8s=00000000-0000-0000-0000-000000000000"
            && mode(root, "etc/pvecri/pve-token") == 0o600
    );
    let dropin = read(root, "etc/systemd/system/kubelet.service.d/90-pvecri.conf");
    anyhow::ensure!(
        dropin.contains("--container-runtime-endpoint=unix:///run/pvecri/pvecri.sock"),
        "{dropin}"
    );
    // The restarts were requested.
    let requests = root.join("run/pvecri-node");
    for r in [
        "pvecri.restart",
        "kubelet.restart",
        "pvecri.enable",
        "daemon-reload",
    ] {
        anyhow::ensure!(requests.join(r).is_file(), "no {r} request");
    }
    let first_restart = read(root, "run/pvecri-node/pvecri.restart");

    // A pod asking for the RuntimeClass runs on pvecri (handler "pvecri").
    let pod = write_values(
        work,
        "pod.yaml",
        r#"
apiVersion: v1
kind: Pod
metadata: {name: runtimeclass-check, namespace: default}
spec:
  runtimeClassName: pvecri
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sleep", "3600"]
"#,
    );
    kubectl(&["apply", "-f", pod.to_str().unwrap()])?;
    cluster.wait_for(
        &[
            "wait",
            "--for=condition=Ready",
            "pod/runtimeclass-check",
            "-n",
            "default",
        ],
        Duration::from_secs(120),
    )?;
    let mut rt = env.rt().await?;
    let pods = rt
        .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    anyhow::ensure!(
        pods.iter().any(|p| p.runtime_handler == "pvecri"
            && p.metadata
                .as_ref()
                .is_some_and(|m| m.name == "runtimeclass-check")),
        "no pod with handler pvecri: {pods:?}"
    );
    kubectl(&[
        "delete",
        "pod",
        "runtimeclass-check",
        "-n",
        "default",
        "--wait=true",
    ])?;

    // Upgrade with another config: the pod is replaced; its preStop sees the DaemonSet and
    // keeps the node installed; the new pod writes the new config and asks for a restart.
    std::thread::sleep(Duration::from_secs(1)); // request files carry the time in seconds
    helm_install("upgrade", &["--set", "config.log_level=info"])?;
    let config: toml::Table = read(root, "etc/pvecri/config.toml").parse()?;
    anyhow::ensure!(config["log_level"].as_str() == Some("info"), "{config:?}");
    anyhow::ensure!(
        !requests.join("pvecri.stop").exists(),
        "the rolling update reverted the node"
    );
    for rel in INSTALLED {
        anyhow::ensure!(root.join(rel).is_file(), "{rel} gone after the upgrade");
    }
    anyhow::ensure!(
        read(root, "run/pvecri-node/pvecri.restart") != first_restart,
        "no restart was requested for the new config"
    );

    // Uninstall: the pod's preStop finds the DaemonSet gone and reverts the node.
    run(cluster.helm().args(["uninstall", RELEASE, "-n", NAMESPACE]))?;
    cluster.wait_for(
        &[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/instance=pvecri",
            "-n",
            NAMESPACE,
        ],
        Duration::from_secs(180),
    )?;
    for rel in INSTALLED {
        anyhow::ensure!(!root.join(rel).exists(), "{rel} left after helm uninstall");
    }
    anyhow::ensure!(requests.join("pvecri.stop").is_file(), "no stop request");
    anyhow::ensure!(
        read(root, "run/pvecri-node/kubelet.restart").contains("drop-in removed"),
        "no kubelet restart request for the removed drop-in"
    );
    // Nothing but the request files is left in the root.
    let left = run(Command::new("find").arg(root).args(["-type", "f"]))?;
    anyhow::ensure!(
        left.lines().all(|l| l.contains("/run/pvecri-node/")),
        "left in the host root:\n{left}"
    );
    kubectl(&["get", "runtimeclass", "pvecri", "--ignore-not-found"]).and_then(|o| {
        anyhow::ensure!(o.trim().is_empty(), "the RuntimeClass is left: {o}");
        Ok(())
    })?;
    Ok(())
}

fn build_deb_path(work: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow::anyhow!("no .deb in {}", work.display()))
}
