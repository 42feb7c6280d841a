//! The test images: what each contains is spelled out here so tests can rely on it.

use std::process::Command;

use serde_json::{Value, json};

use super::image::{ImageFormat, IndexPlatform, TestImage, TestIndex};
use super::layer::{Compression, LayerBuilder, TarEnd};
use crate::cmd::{require_program, run};

/// Debian's busybox-static binary, the only program in the test images.
pub const BUSYBOX: &str = "/bin/busybox";
pub const CREATED: &str = "2023-11-14T22:13:20Z";
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\ndaemon:x:1:\napp:x:1000:\nnogroup:x:65534:\n";
pub const MOTD: &str = "pvecri test image\n";

/// The OCI architecture name of this machine (what busybox-static was built for).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The base layer: directories, `/bin/busybox`, one symlink to it per applet (`/bin/sh`,
/// `/bin/ls`, ...), `/etc/passwd`, `/etc/group`, `/etc/motd`.
pub fn busybox_layer() -> anyhow::Result<LayerBuilder> {
    require_program(BUSYBOX, "busybox-static")?;
    let mut b = LayerBuilder::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ] {
        b.dir(dir, mode);
    }
    b.file_from_path("bin/busybox", std::path::Path::new(BUSYBOX), 0o755)?;
    let list = run(Command::new(BUSYBOX).arg("--list-full"))?;
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| l.contains('/') && *l != "bin/busybox")
        .collect();
    applets.sort_unstable();
    applets.dedup();
    for applet in applets {
        b.symlink(applet, "/bin/busybox");
    }
    b.file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644)
        .file("etc/motd", MOTD, 0o644);
    Ok(b)
}

fn base_config(arch: &str) -> Value {
    json!({
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": { "Env": [DEFAULT_PATH], "Cmd": ["sh"] },
    })
}

/// `one-layer`: just [`busybox_layer`].
pub fn one_layer(format: ImageFormat) -> anyhow::Result<TestImage> {
    TestImage::build(
        "one-layer",
        format,
        base_config(host_arch()),
        &[busybox_layer()?],
    )
}

/// Upper layer 1 of `multi-layer`: adds the files the later layers change.
pub fn multi_layer_adds() -> LayerBuilder {
    let mut b = LayerBuilder::new();
    b.dir("data", 0o755)
        .file("data/keep.txt", "keep\n", 0o644)
        .mtime(1_111_111_111)
        .file("data/gone.txt", "gone\n", 0o644)
        .dir("data/dir", 0o755)
        .file("data/dir/a", "a\n", 0o644)
        .file("data/dir/b", "b\n", 0o644)
        .file("data/xattr.txt", "xattr\n", 0o644)
        .xattr("user.pvecri", "test")
        .file("data/owned.txt", "owned by 4242:4343\n", 0o640)
        .owner(4242, 4343)
        .dir("opaque", 0o755)
        .file("opaque/old1", "old1\n", 0o644)
        .dir("opaque/sub", 0o755)
        .file("opaque/sub/old2", "old2\n", 0o644)
        .dir("replace", 0o755)
        .file("replace/me.txt", "version 1\n", 0o644)
        .file("replace/kind", "a file that becomes a directory\n", 0o644)
        .dir("link", 0o755)
        .file("link/target.txt", "hardlink target\n", 0o644)
        .dir("home/app", 0o750)
        .owner(1000, 1000)
        .file("home/app/owned.txt", "owned by app\n", 0o640)
        .owner(1000, 1000)
        .file("usr/bin/suidprog", "#!/bin/sh\nid\n", 0o4755)
        .file("usr/bin/sgidprog", "#!/bin/sh\nid\n", 0o2755)
        .owner(0, 42);
    b
}

/// Upper layer 2 of `multi-layer`: whiteouts, an opaque directory, replacements, a hard link
/// to a file of layer 1, symlinks, a FIFO and a character device.
pub fn multi_layer_changes() -> LayerBuilder {
    let mut b = LayerBuilder::new();
    b.whiteout("data/gone.txt")
        .whiteout("data/dir")
        .whiteout("etc/motd")
        .dir("opaque", 0o755)
        .opaque("opaque")
        .file("opaque/new1", "new1\n", 0o644)
        .file(
            "replace/me.txt",
            "version 2, longer than version 1\n",
            0o600,
        )
        .mtime(1_300_000_000)
        .hardlink("link/hard.txt", "link/target.txt")
        .symlink("data/sym", "keep.txt")
        .symlink("data/abs-sym", "/etc/passwd")
        .fifo("data/fifo", 0o644)
        .chardev("data/null", 1, 3, 0o666);
    b
}

/// Upper layer 3 of `multi-layer`, with `./`-prefixed names as some tar writers make them:
/// re-creates the directory layer 2 deleted and turns a file into a directory.
pub fn multi_layer_recreates() -> LayerBuilder {
    let mut b = LayerBuilder::new();
    b.dir("./data/dir", 0o700)
        .file("./data/dir/c", "c\n", 0o644)
        .dir("./replace/kind", 0o755)
        .file("./replace/kind/inner", "inner\n", 0o644);
    b
}

/// `multi-layer`: [`busybox_layer`], [`multi_layer_adds`], [`multi_layer_changes`],
/// [`multi_layer_recreates`]. The resulting tree, on top of the base:
/// `data/{keep.txt, xattr.txt, owned.txt, sym -> keep.txt, abs-sym -> /etc/passwd, fifo,
/// null (char 1:3), dir/c}` (no `gone.txt`, no `dir/a`, `dir/b`), `opaque/new1` only,
/// `replace/me.txt` = version 2 (0600), `replace/kind/inner`, `link/target.txt` and
/// `link/hard.txt` as one inode, `home/app/owned.txt` (1000:1000), setuid
/// `usr/bin/suidprog`, setgid `usr/bin/sgidprog`, and no `etc/motd`.
pub fn multi_layer(format: ImageFormat) -> anyhow::Result<TestImage> {
    let name = match format {
        ImageFormat::Oci(Compression::Gzip) => "multi-layer",
        ImageFormat::Oci(Compression::Zstd) => "multi-layer-zstd",
        ImageFormat::Oci(Compression::None) => "multi-layer-uncompressed",
        ImageFormat::Docker => "multi-layer-docker",
    };
    TestImage::build(
        name,
        format,
        base_config(host_arch()),
        &[
            busybox_layer()?,
            multi_layer_adds(),
            multi_layer_changes(),
            multi_layer_recreates(),
        ],
    )
}

/// Mode of the root entry `/` of the last layer of [`umoci_image`] (which containerd, and
/// so pvecri, ignores).
pub const UMOCI_ROOT_MODE: u32 = 0o751;
/// `/etc/os-release` of [`umoci_image`].
pub const UMOCI_OS_RELEASE: &str = "NAME=\"pvecri umoci test\"\nID=umoci\n";
/// The last entry of [`umoci_image`]'s top layer, cut without padding: 700 bytes.
pub fn umoci_last_file() -> String {
    "umoci 0.4.7 insert wrote this layer without end-of-archive blocks.\n"
        .repeat(11)
        .chars()
        .take(700)
        .collect()
}

/// `umoci`: an image as umoci and KIWI (openSUSE's official images) write it. Every layer
/// starts with a root entry `/` and names everything from the root (`/bin/busybox`,
/// whiteouts and hard link targets too). The base is [`busybox_layer`] so written; the top
/// layer is what umoci 0.4.7's `insert` makes: no end-of-archive blocks and no padding after
/// its last entry. The top layer adds `/etc/os-release` ([`UMOCI_OS_RELEASE`]), a hard link
/// `/bin/busybox.link` to the base's `/bin/busybox`, a symlink `/usr/bin/os-release ->
/// /etc/os-release`, whites out `/etc/motd`, has a root entry of mode [`UMOCI_ROOT_MODE`],
/// and ends with `/etc/umoci-last` ([`umoci_last_file`]).
pub fn umoci_image() -> anyhow::Result<TestImage> {
    let mut base = LayerBuilder::new();
    base.dir("/", 0o755);
    for entry in busybox_layer()?.entries() {
        base.entry(entry.clone());
    }
    base.absolute_names();
    let mut insert = LayerBuilder::new();
    insert
        .dir("/", UMOCI_ROOT_MODE)
        .dir("/etc", 0o755)
        .file("/etc/os-release", UMOCI_OS_RELEASE, 0o644)
        .whiteout("/etc/motd")
        .hardlink("/bin/busybox.link", "/bin/busybox")
        .symlink("/usr/bin/os-release", "/etc/os-release")
        .file("/etc/umoci-last", umoci_last_file(), 0o644)
        .end(TarEnd::Unterminated);
    TestImage::build(
        "umoci",
        ImageFormat::Oci(Compression::Gzip),
        base_config(host_arch()),
        &[base, insert],
    )
}

/// `/run/app.pid` of [`quirks_image`], written as `var/run/app.pid`.
pub const QUIRKS_PID: &str = "4242\n";
/// The file of [`quirks_image`] that follows a symlink entry with a size field.
pub const QUIRKS_AFTER: &str = "read from the right place\n";

/// `quirks`: what other build tools write and containerd takes, each as containerd takes
/// it. The base is [`busybox_layer`] with `/run`, `/usr/lib` and symlinks `var/run ->
/// /run`, `var/lock -> ../../../run/lock` (climbing out of the root, and dangling) and
/// `lib -> usr/lib`. The second layer has a root entry `./` of mode 0700 (ignored), writes
/// `var/run/app.pid` ([`QUIRKS_PID`], landing at `/run/app.pid`), `var/run/gone`,
/// `var/lock/app.lock` (landing at `/run/lock/app.lock`), `lib/libquirk.so`; AUFS
/// bookkeeping: `.wh..wh.plnk/1234.5678` hard-linked as `/usr/bin/shared`, `.wh..wh.aufs`;
/// a symlink `/etc/sized-link` whose size field says 2048 with no data after it, then
/// `/etc/after-sized-link` ([`QUIRKS_AFTER`]); type `\0` entries `olddir/` (a directory)
/// and `oldfile`. The third layer whites out `var/run/gone` (gone from `/run`).
pub fn quirks_image() -> anyhow::Result<TestImage> {
    let mut base = busybox_layer()?;
    base.dir("run", 0o755)
        .dir("usr/lib", 0o755)
        .symlink("var/run", "/run")
        .symlink("var/lock", "../../../run/lock")
        .symlink("lib", "usr/lib");
    let mut tools = LayerBuilder::new();
    tools
        .dir("./", 0o700)
        .file("var/run/app.pid", QUIRKS_PID, 0o644)
        .file("var/run/gone", "whited out by the next layer\n", 0o644)
        .file("var/lock/app.lock", "locked\n", 0o644)
        .file("lib/libquirk.so", "quirk\n", 0o755)
        .dir(".wh..wh.plnk", 0o700)
        .file(".wh..wh.plnk/1234.5678", "shared by hard links\n", 0o755)
        .hardlink("usr/bin/shared", ".wh..wh.plnk/1234.5678")
        .file(".wh..wh.aufs", "", 0o600)
        .raw("etc/sized-link", b'2', 2048, "/etc/motd", Vec::new())
        .file("etc/after-sized-link", QUIRKS_AFTER, 0o644)
        .raw("olddir/", 0, 0, "", Vec::new())
        .raw("oldfile", 0, 6, "", "old-f\n");
    let mut later = LayerBuilder::new();
    later.whiteout("var/run/gone");
    TestImage::build(
        "quirks",
        ImageFormat::Oci(Compression::Gzip),
        base_config(host_arch()),
        &[base, tools, later],
    )
}

/// `contiguous`: busybox and a layer with a contiguous file (type `7`), which containerd
/// refuses ("unhandled tar header type").
pub fn contiguous_image() -> anyhow::Result<TestImage> {
    let mut layer = LayerBuilder::new();
    layer.raw("etc/contiguous", b'7', 4, "", "data");
    TestImage::build(
        "contiguous",
        ImageFormat::Oci(Compression::Gzip),
        base_config(host_arch()),
        &[busybox_layer()?, layer],
    )
}

pub const CONFIG_USER: &str = "1000:1000";
pub const CONFIG_WORKDIR: &str = "/home/app";
pub const CONFIG_ENV: [&str; 2] = [DEFAULT_PATH, "GREETING=hello from pvecri"];
pub const CONFIG_ENTRYPOINT: [&str; 2] = ["/bin/sh", "-c"];
pub const CONFIG_CMD: [&str; 1] = ["echo \"$GREETING\"; id -u; pwd"];

/// `config`: busybox plus `/home/app` (1000:1000), with a config setting User, WorkingDir,
/// Env, Entrypoint, Cmd, a label and a stop signal.
pub fn config_image() -> anyhow::Result<TestImage> {
    let mut home = LayerBuilder::new();
    home.dir("home/app", 0o755).owner(1000, 1000);
    let config = json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": CREATED,
        "config": {
            "User": CONFIG_USER,
            "WorkingDir": CONFIG_WORKDIR,
            "Env": CONFIG_ENV,
            "Entrypoint": CONFIG_ENTRYPOINT,
            "Cmd": CONFIG_CMD,
            "Labels": { "io.pvecri.test": "config" },
            "StopSignal": "SIGTERM",
        },
    });
    TestImage::build(
        "config",
        ImageFormat::Oci(Compression::Gzip),
        config,
        &[busybox_layer()?, home],
    )
}

/// `index`: an OCI index with a linux/amd64 and a linux/arm64/v8 image. Each has the
/// busybox layer plus a layer with `/etc/arch` naming its architecture, and its own config.
pub fn index_image() -> anyhow::Result<TestIndex> {
    let base = busybox_layer()?;
    let mut images = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let mut marker = LayerBuilder::new();
        marker.file("etc/arch", format!("{arch}\n"), 0o644);
        let mut config = base_config(arch);
        if let (Some(v), Some(obj)) = (variant, config.as_object_mut()) {
            obj.insert("variant".into(), json!(v));
        }
        let image = TestImage::build(
            &format!("index-{arch}"),
            ImageFormat::Oci(Compression::Gzip),
            config,
            &[base.clone(), marker],
        )?;
        let platform = IndexPlatform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_owned),
        };
        images.push((platform, image));
    }
    TestIndex::assemble("index", images)
}
