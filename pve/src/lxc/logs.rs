//! Pieces of a CT's log files for error messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lines of an error report taken from one log.
const TAIL_LINES: usize = 12;

/// Current length of a file (0 when missing): remember it before an operation to quote only
/// what the operation logged.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The lines written to `path` after byte `from`. LXC's own lines are long and many; when
/// there are ERROR lines only those are kept, as they say what failed.
pub fn tail_since(path: &Path, from: u64) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut text = String::new();
    if file.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    // Bounded: a log can be large, its end is what matters.
    let mut raw = Vec::new();
    if file.take(1 << 20).read_to_end(&mut raw).is_err() {
        return Vec::new();
    }
    text.push_str(&String::from_utf8_lossy(&raw));
    pick(&text)
}

fn pick(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(" ERROR "))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let skip = chosen.len().saturating_sub(TAIL_LINES);
    chosen[skip..].iter().map(|l| l.to_string()).collect()
}

/// `"\n  <label> (<path>):\n    line\n    line"`, or nothing when there are no lines.
pub fn section(label: &str, path: &Path, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = format!("\n  {label} ({}):", path.display());
    for line in lines {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_win_and_only_new_lines_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lxc.log");
        std::fs::write(&log, "old ERROR  x\n").unwrap();
        let from = len(&log);
        std::fs::write(
            &log,
            "old ERROR  x\nlxc-start a 1 INFO     start - ok\nlxc-start a 2 ERROR    conf - Failed to mount\nlxc-start a 3 INFO     done\n",
        )
        .unwrap();
        assert_eq!(
            tail_since(&log, from),
            ["lxc-start a 2 ERROR    conf - Failed to mount"]
        );
    }

    #[test]
    fn without_errors_the_last_lines_are_kept() {
        let text: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let picked = pick(&text);
        assert_eq!(picked.len(), TAIL_LINES);
        assert_eq!(picked.last().map(String::as_str), Some("line 39"));
    }

    #[test]
    fn missing_files_give_nothing() {
        let path = Path::new("/nonexistent/lxc.log");
        assert_eq!(len(path), 0);
        assert!(tail_since(path, 0).is_empty());
        assert_eq!(section("LXC log", path, &[]), "");
        assert_eq!(
            section("LXC log", path, &["a".to_string()]),
            "\n  LXC log (/nonexistent/lxc.log):\n    a"
        );
    }
}
