//! The Debian package, installed with dpkg into throwaway roots: its files, conffile and
//! unit, its maintainer scripts (chrootless, with DPKG_ROOT, as dpkg runs them for another
//! root), upgrade with a changed conffile, remove and purge; its dependencies, satisfied by
//! Debian's `lxc` or Proxmox's `lxc-pve`; and that it stays out of Proxmox's LXC and
//! storage paths.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::cmd::{output, run};
use e2e::deb::{build_deb, control_field, deb_under_test, package_paths};

/// Stand-in dpkg status entries: what the throwaway root claims to have installed.
const LIBS: &[(&str, &str)] = &[("libc6", "2.36-9+deb12u10"), ("libgcc-s1", "12.2.0-14")];

/// A root with an empty dpkg database holding `installed` (name, version) entries.
fn dpkg_root(installed: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let admin = root.path().join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    let mut status = String::new();
    for (name, version) in installed {
        status.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nVersion: {version}\n\
             Architecture: amd64\nMaintainer: test\nDescription: stand-in entry\n\n"
        ));
    }
    std::fs::write(admin.join("status"), status).unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    root
}

/// `dpkg --root ROOT ARGS`, maintainer scripts run chrootless with DPKG_ROOT set.
fn dpkg(root: &Path, args: &[&str]) -> std::process::Output {
    output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--log=/dev/null"])
            .args(args),
    )
    .unwrap()
}

fn dpkg_ok(root: &Path, args: &[&str]) -> String {
    let out = dpkg(root, args);
    assert!(
        out.status.success(),
        "dpkg {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `[Section]` `Key=Value` pairs of a unit file, in order.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn unit_value(entries: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

#[test]
fn install_upgrade_remove_purge_in_a_throwaway_root() {
    let build = tempfile::tempdir().unwrap();
    let deb = deb_under_test(build.path()).unwrap();
    let mut installed = LIBS.to_vec();
    installed.push(("lxc", "1:5.0.2-1+deb12u2"));
    let root = dpkg_root(&installed);
    let r = root.path();
    dpkg_ok(r, &["-i", deb.to_str().unwrap()]);

    // Files and modes.
    let pvecri = r.join("usr/bin/pvecri");
    let podinit = r.join("usr/lib/pvecri/podinit");
    let config = r.join("etc/pvecri/config.toml");
    let unit = r.join("usr/lib/systemd/system/pvecri.service");
    assert_eq!(mode(&pvecri), 0o755);
    assert_eq!(mode(&podinit), 0o755);
    assert_eq!(mode(&config), 0o644);
    assert_eq!(mode(&unit), 0o644);
    let version = run(Command::new(&pvecri).arg("--version")).unwrap();
    assert!(version.starts_with("pvecri "), "{version}");
    // podinit runs in CT roots without libraries: no program interpreter.
    let headers = run(Command::new("readelf").arg("-lW").arg(&podinit)).unwrap();
    assert!(
        !headers.contains("INTERP"),
        "podinit is not static:\n{headers}"
    );

    // The conffile is the commented default and passes the daemon's own check.
    let default = run(Command::new(&pvecri).args(["config", "default"])).unwrap();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), default);
    run(Command::new(&pvecri)
        .arg("config")
        .arg("check")
        .arg(&config))
    .unwrap();
    let status = dpkg_ok(r, &["-s", "pvecri"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("Conffiles:\n /etc/pvecri/config.toml "),
        "{status}"
    );

    // The unit: the settings that keep pods alive across restarts, and the config check.
    let text = std::fs::read_to_string(&unit).unwrap();
    let e = unit_entries(&text);
    assert_eq!(unit_value(&e, "Service", "KillMode"), ["process"]);
    assert_eq!(unit_value(&e, "Service", "Delegate"), ["yes"]);
    assert_eq!(unit_value(&e, "Service", "Restart"), ["always"]);
    assert_eq!(unit_value(&e, "Service", "RuntimeDirectory"), ["pvecri"]);
    assert_eq!(
        unit_value(&e, "Service", "RuntimeDirectoryPreserve"),
        ["yes"]
    );
    assert_eq!(
        unit_value(&e, "Service", "ExecStartPre"),
        ["/usr/bin/pvecri config check /etc/pvecri/config.toml"]
    );
    assert_eq!(
        unit_value(&e, "Service", "ExecStart"),
        ["/usr/bin/pvecri serve --config /etc/pvecri/config.toml"]
    );
    assert_eq!(unit_value(&e, "Install", "WantedBy"), ["multi-user.target"]);
    // systemd's own parser finds nothing wrong (paths pointed at the throwaway root).
    let checked = build.path().join("pvecri.service");
    std::fs::write(
        &checked,
        text.replace("/usr/bin/pvecri", pvecri.to_str().unwrap()),
    )
    .unwrap();
    let verify = output(Command::new("systemd-analyze").arg("verify").arg(&checked)).unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // postinst enabled the unit in the root (deb-systemd-helper honours DPKG_ROOT).
    let wants = r.join("etc/systemd/system/multi-user.target.wants/pvecri.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        PathBuf::from("/usr/lib/systemd/system/pvecri.service")
    );

    // Upgrade to a new revision: the admin's config survives, the binary is replaced.
    let edited = format!("{default}\n# local change\n");
    std::fs::write(&config, &edited).unwrap();
    let newer = build_deb(build.path(), 2).unwrap();
    dpkg_ok(r, &["--force-confold", "-i", newer.to_str().unwrap()]);
    assert!(dpkg_ok(r, &["-s", "pvecri"]).contains("Version: 0.1.0-2"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(
        wants.symlink_metadata().is_ok(),
        "still enabled after upgrade"
    );

    // Remove keeps the conffile; purge takes it and the enablement.
    dpkg_ok(r, &["-r", "pvecri"]);
    assert!(!pvecri.exists() && !podinit.exists() && !unit.exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    dpkg_ok(r, &["-P", "pvecri"]);
    assert!(!config.exists());
    assert!(
        wants.symlink_metadata().is_err(),
        "enablement left after purge"
    );
}

#[test]
fn dependencies_are_met_by_lxc_or_lxc_pve_and_nothing_else() {
    let build = tempfile::tempdir().unwrap();
    let deb = deb_under_test(build.path()).unwrap();
    let deb_s = deb.to_str().unwrap();
    let depends = control_field(&deb, "Depends").unwrap();
    assert!(
        depends.contains("lxc (>= 1:5.0) | lxc-pve (>= 5.0)"),
        "{depends}"
    );
    // Nothing that apt would weigh against Proxmox's packages.
    for field in ["Conflicts", "Breaks", "Replaces", "Provides", "Pre-Depends"] {
        assert_eq!(control_field(&deb, field).unwrap(), "", "{field} is set");
    }

    // A Proxmox node: lxc-pve, no Debian lxc.
    let mut pve = LIBS.to_vec();
    pve.push(("lxc-pve", "6.0.0-1"));
    let root = dpkg_root(&pve);
    dpkg_ok(root.path(), &["-i", deb_s]);

    // Neither: dpkg refuses to configure it.
    let root = dpkg_root(LIBS);
    let out = dpkg(root.path(), &["-i", deb_s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lxc-pve"), "{err}");

    // And apt on this Debian machine would install it without removing anything.
    let sim = output(
        Command::new("apt-get")
            .args(["-s", "-o", "Debug::NoLocking=1", "install"])
            .arg(&deb),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&sim.stdout);
    assert!(
        sim.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(text.contains("Inst pvecri"), "{text}");
    assert!(
        !text.contains("\nRemv "),
        "apt would remove packages:\n{text}"
    );
}

#[test]
fn package_stays_out_of_proxmox_paths() {
    let build = tempfile::tempdir().unwrap();
    let deb = deb_under_test(build.path()).unwrap();
    let paths = package_paths(&deb).unwrap();
    assert!(paths.contains(&"/usr/bin/pvecri".to_string()), "{paths:?}");
    for p in &paths {
        for forbidden in [
            "/etc/lxc",
            "/var/lib/lxc",
            "/usr/share/lxc",
            "/etc/pve",
            "/var/lib/vz",
        ] {
            assert!(
                !(p == forbidden || p.starts_with(&format!("{forbidden}/"))),
                "the package ships {p}"
            );
        }
    }
    // Nor do its maintainer scripts name those paths.
    let scripts = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(scripts.path()))
    .unwrap();
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(scripts.path().join(script)).unwrap();
        for forbidden in [
            "/etc/lxc",
            "/var/lib/lxc",
            "/etc/pve",
            "zfs ",
            "pct ",
            "pvesm",
        ] {
            assert!(!text.contains(forbidden), "{script} mentions {forbidden}");
        }
    }
}
