//! Running system commands with errors that say what was run and what it printed.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// The command line of `cmd`, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs `cmd` and returns its stdout; a non-zero exit is an error carrying its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with an install hint when a program the harness needs is missing.
pub fn require_program(path: &str, debian_package: &str) -> anyhow::Result<()> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        bail!(
            "{path} is missing: install the Debian package `{debian_package}` (apt-get install {debian_package})"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_reports_failures() {
        assert_eq!(run(Command::new("echo").arg("hi")).unwrap(), "hi\n");
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }

    #[test]
    fn require_program_names_the_package() {
        let err = require_program("/nonexistent/prog", "some-pkg").unwrap_err();
        assert!(err.to_string().contains("apt-get install some-pkg"));
        require_program("/bin/sh", "dash").unwrap();
    }
}
