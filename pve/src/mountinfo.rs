//! A reader for `/proc/self/mountinfo` lines (proc(5)), enough to find cgroup hierarchies.

/// One mount, with its octal escapes (`\040` for a space, ...) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// Per-superblock options; for a cgroup v1 mount they name its controllers (`rw,cpuset`).
    pub super_options: String,
}

/// Parses one line; `None` for a line that does not have the documented shape.
pub fn parse_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let _dev = fields.next()?;
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    let _options = fields.next()?;
    // Optional fields run up to a lone "-".
    loop {
        if fields.next()? == "-" {
            break;
        }
    }
    let fs_type = unescape(fields.next()?);
    let _source = fields.next();
    let super_options = fields.next().map(unescape).unwrap_or_default();
    Some(Mount {
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// Decodes the kernel's `\ooo` escapes (it escapes space, tab, newline and backslash).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's escaping, also what LXC's fstab-style `lxc.mount.entry` parser (getmntent)
/// decodes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_cgroup_line_with_optional_fields() {
        let line = "35 27 0:32 / /sys/fs/cgroup/memory rw,relatime shared:16 master:3 - cgroup cgroup rw,memory";
        assert_eq!(
            parse_line(line),
            Some(Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
                fs_type: "cgroup".into(),
                super_options: "rw,memory".into(),
            })
        );
    }

    #[test]
    fn decodes_escaped_spaces() {
        let line = r"50 27 254:0 /a\040b /mnt/a\040b rw - ext4 /dev/vda rw";
        let m = parse_line(line).unwrap();
        assert_eq!(m.root, "/a b");
        assert_eq!(m.mount_point, "/mnt/a b");
    }

    #[test]
    fn short_or_unterminated_lines_are_skipped() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("1 2 3 / /x rw shared:1"), None);
        assert_eq!(parse_line("1 2 3 / /x rw -"), None);
    }

    #[test]
    fn lone_backslashes_stay() {
        assert_eq!(unescape(r"a\b\0"), r"a\b\0");
        assert_eq!(unescape(r"a\777"), r"a\777");
    }

    #[test]
    fn escapes_whitespace_and_backslash() {
        assert_eq!(escape("a b\tc\nd\\e"), r"a\040b\011c\012d\134e");
        assert_eq!(unescape(&escape("x\ty\n")), "x\ty\n");
    }

    proptest! {
        #[test]
        fn escape_round_trips(text in "\\PC{0,40}") {
            prop_assert_eq!(unescape(&escape(&text)), text.clone());
            prop_assert!(!escape(&text).contains([' ', '\t', '\n']));
        }

        #[test]
        fn parser_never_panics(line in "\\PC{0,120}") {
            let _ = parse_line(&line);
        }
    }
}
