//! `pvecri`: the command line. Errors leave here as one line on stderr and exit code 1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cri::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG_TOML, LogLevel};
use cri::daemon::Daemon;
use cri::node;
use cri::server;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "pvecri",
    version,
    about = "A Kubernetes CRI runtime for Proxmox VE nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: CRI RuntimeService and ImageService on a Unix socket.
    Serve(ServeArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The Helm chart's node agent: put pvecri on this node, or take it off.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

#[derive(clap::Args)]
struct HostArgs {
    /// Where the host's / is mounted.
    #[arg(
        long,
        env = "PVECRI_HOST_ROOT",
        default_value = "/host",
        value_name = "DIR"
    )]
    host_root: PathBuf,
    /// How services on the host are restarted.
    #[arg(long, env = "PVECRI_RESTART", value_enum, default_value = "auto")]
    restart: node::host::RestartMethod,
    /// The process whose mount namespace is the host's, for systemctl (the pod has hostPID).
    #[arg(long, env = "PVECRI_HOST_PID", default_value_t = 1, value_name = "PID")]
    host_pid: u32,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Install or upgrade pvecri on the host from the payload, restarting what changed.
    Install {
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        inputs: InstallInputs,
        /// After installing, stay until SIGTERM (the DaemonSet's container).
        #[arg(long)]
        wait: bool,
    },
    /// Revert what install placed (pvecri stopped and removed, kubelet drop-in removed).
    Uninstall {
        #[command(flatten)]
        host: HostArgs,
        /// Only when the release is gone: DaemonSet NAMESPACE/NAME no longer exists (a
        /// preStop hook runs on rolling updates too, which must not revert the node).
        #[arg(long, env = "PVECRI_DAEMONSET", value_name = "NAMESPACE/NAME")]
        only_if_released: Option<String>,
        /// The Kubernetes API URL; default: the in-cluster service address.
        #[arg(long, env = "PVECRI_KUBE_API", value_name = "URL")]
        kube_api: Option<String>,
    },
    /// Exit 0 when the host holds what `install` with these inputs places (the DaemonSet's
    /// readiness).
    Installed {
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        inputs: InstallInputs,
    },
}

#[derive(clap::Args)]
struct InstallInputs {
    /// The package's file tree (usr/bin/pvecri, usr/lib/pvecri/podinit, the unit).
    #[arg(long, env = "PVECRI_PAYLOAD", default_value = "/", value_name = "DIR")]
    payload: PathBuf,
    /// The config.toml to install as /etc/pvecri/config.toml.
    #[arg(long, env = "PVECRI_NODE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// The Proxmox API token file to install as /etc/pvecri/pve-token (mode 0600).
    #[arg(long, env = "PVECRI_NODE_PVE_TOKEN", value_name = "FILE")]
    pve_token: Option<PathBuf>,
    /// A systemd drop-in for kubelet.service; without it a drop-in installed before is
    /// removed.
    #[arg(long, env = "PVECRI_NODE_KUBELET_DROPIN", value_name = "FILE")]
    kubelet_dropin: Option<PathBuf>,
}

impl InstallInputs {
    fn options(self, host_root: PathBuf) -> node::InstallOptions {
        node::InstallOptions {
            host_root,
            payload: self.payload,
            config: self.config,
            pve_token: self.pve_token,
            kubelet_dropin: self.kubelet_dropin,
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file; a missing file at the default path means the built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `socket` from the config file.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Overrides `state_dir` from the config file.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Overrides `log_level` from the config file (trace, debug, info, warn, error).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LogLevel>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, commented.
    Default,
    /// Parse and validate a configuration file; print what is wrong in one line naming the
    /// key, and exit non-zero. Without FILE: /etc/pvecri/config.toml, where a missing file
    /// means the defaults.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the configuration reference (markdown, every key with its type, default and
    /// meaning): docs/configuration.md.
    Reference,
    /// Print the configuration's JSON schema (draft-07).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config { command } => config_command(command),
        Command::Node { command } => node_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvecri: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn node_command(command: NodeCommand) -> anyhow::Result<()> {
    init_logging(LogLevel::Info);
    match command {
        NodeCommand::Install { host, inputs, wait } => {
            let restarter = node::host::restarter(host.restart, &host.host_root, host.host_pid);
            let opts = inputs.options(host.host_root);
            let outcome = node::install(&opts, restarter.as_ref())?;
            tracing::info!(
                changed = ?outcome.changed,
                restarted_pvecri = outcome.restarted_pvecri,
                restarted_kubelet = outcome.restarted_kubelet,
                "pvecri {} installed on the host",
                env!("CARGO_PKG_VERSION")
            );
            if wait {
                wait_for_termination()?;
            }
            Ok(())
        }
        NodeCommand::Uninstall {
            host,
            only_if_released,
            kube_api,
        } => {
            if let Some(ds) = only_if_released {
                let (namespace, name) = ds
                    .split_once('/')
                    .context("--only-if-released wants NAMESPACE/NAME")?;
                let api = node::release::ApiAccess::in_cluster(
                    kube_api.as_deref(),
                    std::path::Path::new(node::release::SERVICE_ACCOUNT_DIR),
                )?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                match runtime.block_on(node::release::daemonset_release(&api, namespace, name)) {
                    node::release::Release::Removed(why) => {
                        tracing::info!(why, "the release is gone: reverting the node");
                    }
                    node::release::Release::Deployed => {
                        tracing::info!(
                            "the DaemonSet is still deployed (update or restart): the node keeps pvecri"
                        );
                        return Ok(());
                    }
                    node::release::Release::Unknown(why) => {
                        tracing::warn!(
                            why,
                            "cannot tell whether the release is gone: the node keeps pvecri"
                        );
                        return Ok(());
                    }
                }
            }
            let restarter = node::host::restarter(host.restart, &host.host_root, host.host_pid);
            let outcome = node::uninstall(&host.host_root, restarter.as_ref())?;
            tracing::info!(changed = ?outcome.changed, "pvecri removed from the host");
            Ok(())
        }
        NodeCommand::Installed { host, inputs } => {
            if node::installed(&inputs.options(host.host_root.clone()))? {
                Ok(())
            } else {
                anyhow::bail!(
                    "pvecri {} is not installed under {}",
                    env!("CARGO_PKG_VERSION"),
                    host.host_root.display()
                )
            }
        }
    }
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_termination() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        shutdown_signal()?.await;
        anyhow::Ok(())
    })
}

fn config_command(command: ConfigCommand) -> anyhow::Result<()> {
    let text = match command {
        ConfigCommand::Default => DEFAULT_CONFIG_TOML.to_string(),
        ConfigCommand::Check { file } => {
            let (path, explicit) = match file {
                Some(path) => (path, true),
                None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
            };
            Config::load(&path, explicit)?;
            if path.exists() {
                format!("{}: ok\n", path.display())
            } else {
                format!("{}: absent, the defaults apply\n", path.display())
            }
        }
        ConfigCommand::Reference => cri::config_reference::markdown(),
        ConfigCommand::Schema => {
            let mut json = serde_json::to_string_pretty(&cri::config_reference::json_schema())?;
            json.push('\n');
            json
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let (path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, explicit)?;
    if let Some(socket) = &args.socket {
        config.socket = socket.clone();
    }
    if let Some(state_dir) = &args.state_dir {
        config.state_dir = state_dir.clone();
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(level: LogLevel) {
    // The HTTP and gRPC stacks are chatty at debug; they stay at warn unless RUST_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,rustls=warn,reqwest=warn",
            level.as_str()
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    init_logging(config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Before the socket exists: a SIGTERM sent as soon as it appears (while the daemon
        // still starts) must end it cleanly, not by the default action.
        let shutdown = shutdown_signal()?;
        let socket_path = config.socket.clone();
        let listener = server::socket::bind(&socket_path)?;
        if config.has_credentials() {
            warn_if_readable(
                args.config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(DEFAULT_CONFIG_PATH)),
            );
        }
        let daemon = match Daemon::start(config).await {
            Ok(daemon) => Arc::new(daemon),
            Err(e) => {
                let _ = std::fs::remove_file(&socket_path);
                return Err(e.into());
            }
        };
        server::serve(daemon.clone(), listener, &socket_path, shutdown).await?;
        // Warm CTs nobody took would run on until the next start; pods stay.
        if tokio::time::timeout(
            std::time::Duration::from_secs(20),
            daemon.runtime.drain_warm_pool(),
        )
        .await
        .is_err()
        {
            tracing::warn!("the warm pool was not drained within 20 s");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Registry secrets in a file others can read are worth a warning, not a refusal.
fn warn_if_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(config = %path.display(), "the config holds registry credentials but is readable by others; chmod 0600 it");
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
