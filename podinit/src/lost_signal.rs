//! Stop signals the kernel drops, and repeating them once they would arrive.
//!
//! A container's process is usually the init of its own PID namespace, and such an init gets
//! from an ancestor namespace only SIGKILL, SIGSTOP and the signals it has a handler for:
//! any other signal is discarded, not queued. A stop that comes right after a start (the
//! kubelet's, critest's "stopping container") races with the entrypoint installing its
//! SIGTERM handler (a shell about to `exec top`, a runtime still loading); a lost SIGTERM
//! turns a prompt stop into the whole grace period and a SIGKILL. runc has the same race;
//! podinit closes it by watching such a process and sending the signal again once the
//! process catches it. A process that never catches it is left to the grace period, as
//! before: repeating a signal it does not catch changes nothing.

use std::io;
use std::time::{Duration, Instant};

/// How a process treats one signal, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disposition {
    /// A handler is installed (`SigCgt`).
    pub caught: bool,
    /// The process ignores it on purpose (`SigIgn`).
    pub ignored: bool,
    /// The process is the init of its innermost PID namespace (`NSpid` ends in 1).
    pub namespace_init: bool,
}

impl Disposition {
    /// Whether the kernel would discard `signal` sent now from an ancestor namespace.
    pub fn drops(&self) -> bool {
        self.namespace_init && !self.caught && !self.ignored
    }
}

/// Signals that always arrive (or that have nothing to arrive for).
pub fn never_dropped(signal: i32) -> bool {
    signal == 0 || signal == libc::SIGKILL || signal == libc::SIGSTOP
}

/// Reads `pid`'s disposition of `signal`.
pub fn disposition(pid: i32, signal: i32) -> io::Result<Disposition> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text, signal).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status lacks SigIgn, SigCgt or NSpid"),
        )
    })
}

fn parse_status(text: &str, signal: i32) -> Option<Disposition> {
    let bit = u32::try_from(signal - 1).ok().filter(|b| *b < 64)?;
    let mask = |v: &str| u64::from_str_radix(v.trim(), 16).ok();
    let (mut ign, mut cgt, mut init) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "SigIgn" => ign = mask(value),
            "SigCgt" => cgt = mask(value),
            "NSpid" => init = value.split_whitespace().last().map(|p| p == "1"),
            _ => {}
        }
    }
    Some(Disposition {
        caught: cgt? & (1 << bit) != 0,
        ignored: ign? & (1 << bit) != 0,
        namespace_init: init?,
    })
}

/// A signal sent while it would be dropped, to send again once it is caught.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub signal: i32,
    /// When to look again.
    pub next: Instant,
    delay: Duration,
    /// When to stop looking: a process that never catches it is the grace period's.
    until: Instant,
}

/// First look soon (an entrypoint sets its handler up within milliseconds), then back off.
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(500);
const WATCH_FOR: Duration = Duration::from_secs(600);

/// What to do with a pending signal now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send it again: the process catches it now.
    Resend,
    /// Forget it: the process ignores it, or it has been watched long enough.
    Drop,
    /// Look again at `Pending::next`.
    Wait,
}

impl Pending {
    pub fn new(signal: i32, now: Instant) -> Self {
        Pending {
            signal,
            next: now + FIRST_DELAY,
            delay: FIRST_DELAY,
            until: now + WATCH_FOR,
        }
    }

    /// Decides from the process's disposition now (`None`: it is gone).
    pub fn step(&mut self, now: Instant, disposition: Option<Disposition>) -> Step {
        match disposition {
            None => Step::Drop,
            Some(d) if d.caught => Step::Resend,
            Some(d) if d.ignored || !d.namespace_init => Step::Drop,
            Some(_) if now >= self.until => Step::Drop,
            Some(_) => {
                self.delay = (self.delay * 2).min(MAX_DELAY);
                self.next = now + self.delay;
                Step::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STATUS: &str = "Name:\ttop\nNSpid:\t4242\t1\nSigQ:\t0/31\nSigPnd:\t0000000000000000\n\
        SigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000004003\n";

    #[test]
    fn reads_the_masks_and_the_namespace() {
        let term = parse_status(STATUS, libc::SIGTERM).unwrap();
        assert_eq!(
            term,
            Disposition {
                caught: true,
                ignored: false,
                namespace_init: true
            }
        );
        let quit = parse_status(STATUS, libc::SIGQUIT).unwrap();
        assert!(quit.ignored && !quit.caught);
        let usr1 = parse_status(STATUS, libc::SIGUSR1).unwrap();
        assert!(usr1.drops());
        let not_init = STATUS.replace("4242\t1", "4242\t7");
        assert!(!parse_status(&not_init, libc::SIGUSR1).unwrap().drops());
    }

    #[test]
    fn incomplete_or_bad_input_is_none() {
        assert!(parse_status("Name:\tx\n", libc::SIGTERM).is_none());
        assert!(parse_status(STATUS, 0).is_none());
        assert!(parse_status(STATUS, 65).is_none());
        let bad = STATUS.replace("0000000000004003", "zz");
        assert!(parse_status(&bad, libc::SIGTERM).is_none());
    }

    #[test]
    fn resends_once_caught_and_backs_off_until_then() {
        let t0 = Instant::now();
        let mut p = Pending::new(libc::SIGTERM, t0);
        let uncaught = Disposition {
            caught: false,
            ignored: false,
            namespace_init: true,
        };
        assert_eq!(p.step(p.next, Some(uncaught)), Step::Wait);
        let first = p.next;
        assert_eq!(p.step(first, Some(uncaught)), Step::Wait);
        assert!(p.next - first > first - t0, "it backs off");
        let caught = Disposition {
            caught: true,
            ..uncaught
        };
        assert_eq!(p.step(p.next, Some(caught)), Step::Resend);
        let ignored = Disposition {
            ignored: true,
            ..uncaught
        };
        assert_eq!(p.step(p.next, Some(ignored)), Step::Drop);
        assert_eq!(p.step(p.next, None), Step::Drop);
        assert_eq!(p.step(t0 + WATCH_FOR, Some(uncaught)), Step::Drop);
    }

    #[test]
    fn this_process_is_read() {
        let me = disposition(std::process::id() as i32, libc::SIGTERM).unwrap();
        assert!(!me.ignored);
    }
}
