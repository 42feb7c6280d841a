//! Interface counters of a pod's network namespace, from `/proc/<pid>/net/dev`: procfs shows
//! the network namespace of the process named, so the CT init's entry gives the pod's
//! interfaces without entering the namespace.

use std::path::PathBuf;

/// Counters of one interface, cumulative since it appeared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace of process `pid`, loopback excluded.
pub fn read(pid: u32) -> std::io::Result<Vec<InterfaceStats>> {
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// Parses `/proc/net/dev`: two header lines, then `name: rx(8 fields) tx(8 fields)`. Lines
/// that do not have that shape are skipped.
pub fn parse(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name.is_empty() || name == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if f.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1234567    890    1    2    0     0          0         0   765432     321    3    4    0     0       0          0
";

    #[test]
    fn parses_and_skips_loopback() {
        let v = parse(SAMPLE);
        assert_eq!(
            v,
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1_234_567,
                rx_packets: 890,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 765_432,
                tx_packets: 321,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }

    #[test]
    fn short_or_garbled_lines_are_skipped() {
        assert!(parse("eth0: 1 2 3\n").is_empty());
        assert!(parse("eth0: a b c d e f g h i j k l m n o p\n").is_empty());
        assert!(parse(": 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n").is_empty());
    }

    #[test]
    fn this_process_has_a_network_namespace() {
        assert!(read(std::process::id()).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,400}") {
            for i in parse(&text) {
                prop_assert!(!i.name.is_empty() && i.name != "lo");
            }
        }
    }
}
