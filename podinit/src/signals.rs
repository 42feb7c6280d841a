//! Signal names as images and CRI write them (`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`).

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Kernel-side real-time signal range (glibc reserves the first two for itself, but a container
/// process may use them all).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// Parses a signal name or number; `None` when it is not a valid signal.
pub fn parse(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Some(n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix(if sign > 0 { '+' } else { '-' })?
                .parse::<i32>()
                .ok()?
        };
        let n = base + sign * off;
        (RTMIN..=RTMAX).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(RTMIN, rest, 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(RTMAX, rest, -1);
    }
    None
}

/// Whether `n` is a signal number a client may ask podinit to send.
pub fn is_valid(n: i32) -> bool {
    (1..=RTMAX).contains(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("term"), Some(15));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("SIGQUIT"), Some(3));
        assert_eq!(parse("SIGPWR"), Some(libc::SIGPWR));
        assert_eq!(parse("SIGRTMIN"), Some(34));
        assert_eq!(parse("SIGRTMIN+3"), Some(37));
        assert_eq!(parse("RTMAX-1"), Some(63));
        for bad in ["", "0", "65", "-1", "SIGFOO", "RTMIN+40", "RTMIN-1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
