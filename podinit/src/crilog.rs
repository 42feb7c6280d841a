//! Container output as CRI log lines: `<RFC3339Nano> <stdout|stderr> <P|F> <text>\n`.
//!
//! Follows containerd's `internal/cri/io/logger.go`: a line is cut at `\n` (a `\r` right before
//! it is dropped); a line longer than the maximum is written as `P` (partial) chunks of exactly
//! the maximum, the rest closing with `F`; an empty line is an `F` line with empty text; and text
//! left without a newline when the stream ends is written as a `P` line.

use crate::timefmt;

/// containerd's `max_container_log_line_size` default.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts one stream's bytes into CRI log lines.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    max: usize,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        Self::with_max(stream, MAX_LINE)
    }

    /// A splitter with another line limit (tests; 0 means no limit).
    pub fn with_max(stream: Stream, max: usize) -> Self {
        Self {
            stream,
            max,
            pending: Vec::new(),
        }
    }

    /// Bytes held back while waiting for the end of a line.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds bytes read from the stream and appends every completed line to `out`, stamped `ns`.
    pub fn feed(&mut self, mut data: &[u8], ns: i64, out: &mut Vec<u8>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.pending.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    if self.pending.last() == Some(&b'\r') {
                        self.pending.pop();
                    }
                    self.split_overlong(false, ns, out);
                    self.emit(b'F', ns, out);
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    self.split_overlong(true, ns, out);
                }
            }
        }
    }

    /// The stream ended: text without a final newline becomes a `P` line.
    pub fn finish(&mut self, ns: i64, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.split_overlong(false, ns, out);
            if !self.pending.is_empty() {
                self.emit(b'P', ns, out);
            }
        }
    }

    /// Writes `P` chunks of exactly `max` bytes while more than `max` bytes wait. A trailing `\r`
    /// is not counted while the line is open, since it may be the first half of `\r\n`.
    fn split_overlong(&mut self, line_open: bool, ns: i64, out: &mut Vec<u8>) {
        if self.max == 0 {
            return;
        }
        loop {
            let held_cr = usize::from(line_open && self.pending.last() == Some(&b'\r'));
            if self.pending.len() - held_cr <= self.max {
                return;
            }
            push_line(out, ns, self.stream, b'P', &self.pending[..self.max]);
            self.pending.drain(..self.max);
        }
    }

    fn emit(&mut self, tag: u8, ns: i64, out: &mut Vec<u8>) {
        push_line(out, ns, self.stream, tag, &self.pending);
        self.pending.clear();
    }
}

fn push_line(out: &mut Vec<u8>, ns: i64, stream: Stream, tag: u8, text: &[u8]) {
    timefmt::push_rfc3339_nano(out, ns);
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(tag);
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// One parsed CRI log line (used by tests and by readers of the log).
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    pub tag: &'a str,
    pub text: &'a [u8],
}

/// Parses one line (without its newline) in CRI log format.
pub fn parse_line(line: &[u8]) -> Option<ParsedLine<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = std::str::from_utf8(parts.next()?).ok()?;
    let text = parts.next()?;
    Some(ParsedLine {
        timestamp,
        stream,
        tag,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TS: i64 = 1_700_000_000_123_000_000;
    const TS_STR: &str = "2023-11-14T22:13:20.123Z";

    fn lines(out: &[u8]) -> Vec<(String, String, Vec<u8>)> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let p = parse_line(l).expect("parses");
                assert_eq!(p.timestamp, TS_STR);
                (p.stream.to_string(), p.tag.to_string(), p.text.to_vec())
            })
            .collect()
    }

    #[test]
    fn full_lines_and_exact_format() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"hello\nworld\n", TS, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("{TS_STR} stdout F hello\n{TS_STR} stdout F world\n")
        );
    }

    #[test]
    fn empty_line_is_an_empty_full_line() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        s.feed(b"\n", TS, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("{TS_STR} stderr F \n")
        );
    }

    #[test]
    fn line_split_across_reads_waits_for_newline() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"hel", TS, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.pending_len(), 3);
        s.feed(b"lo\r", TS, &mut out);
        assert!(out.is_empty());
        s.feed(b"\nx", TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![("stdout".into(), "F".into(), b"hello".to_vec())]
        );
    }

    #[test]
    fn crlf_is_stripped_but_lone_cr_is_kept() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"a\r\nb\rc\n", TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stdout".into(), "F".into(), b"a".to_vec()),
                ("stdout".into(), "F".into(), b"b\rc".to_vec()),
            ]
        );
    }

    #[test]
    fn long_line_is_cut_into_partials_of_exactly_max() {
        let mut s = LineSplitter::with_max(Stream::Stdout, 4);
        let mut out = Vec::new();
        s.feed(b"abcdefghij\n", TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stdout".into(), "P".into(), b"abcd".to_vec()),
                ("stdout".into(), "P".into(), b"efgh".to_vec()),
                ("stdout".into(), "F".into(), b"ij".to_vec()),
            ]
        );
    }

    #[test]
    fn line_of_exactly_max_is_not_split_and_multiple_of_max_has_no_empty_full() {
        let mut s = LineSplitter::with_max(Stream::Stdout, 4);
        let mut out = Vec::new();
        s.feed(b"abcd\nabcdefgh\n", TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stdout".into(), "F".into(), b"abcd".to_vec()),
                ("stdout".into(), "P".into(), b"abcd".to_vec()),
                ("stdout".into(), "F".into(), b"efgh".to_vec()),
            ]
        );
    }

    #[test]
    fn cr_straddling_the_limit_is_not_counted() {
        // containerd: "abcd\r\n" with max 4 is one full line "abcd".
        let mut s = LineSplitter::with_max(Stream::Stdout, 4);
        let mut out = Vec::new();
        s.feed(b"abcd\r", TS, &mut out);
        assert!(out.is_empty());
        s.feed(b"\n", TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![("stdout".into(), "F".into(), b"abcd".to_vec())]
        );
    }

    #[test]
    fn text_without_final_newline_becomes_partial_at_end_of_stream() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"done\nno newline", TS, &mut out);
        s.finish(TS, &mut out);
        assert_eq!(
            lines(&out),
            vec![
                ("stdout".into(), "F".into(), b"done".to_vec()),
                ("stdout".into(), "P".into(), b"no newline".to_vec()),
            ]
        );
        let mut again = Vec::new();
        s.finish(TS, &mut again);
        assert!(again.is_empty(), "finish twice writes nothing more");
    }

    #[test]
    fn default_limit_is_16_kib() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        let long = vec![b'x'; 40_000];
        s.feed(&long, TS, &mut out);
        s.feed(b"\n", TS, &mut out);
        let l = lines(&out);
        let shape: Vec<(&str, usize)> = l.iter().map(|(_, t, x)| (t.as_str(), x.len())).collect();
        assert_eq!(shape, vec![("P", 16384), ("P", 16384), ("F", 7232)]);
    }

    proptest! {
        /// Whatever the chunking, the lines reassemble into the input (minus `\r\n` handling),
        /// no chunk exceeds the limit, and a P chunk is always exactly the limit or final.
        #[test]
        fn reassembles_input(input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b'), Just(b'\r')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
            max in 1usize..8) {
            let mut s = LineSplitter::with_max(Stream::Stdout, max);
            let mut out = Vec::new();
            let mut cuts = cuts;
            cuts.push(0);
            cuts.push(input.len());
            cuts.sort_unstable();
            for w in cuts.windows(2) {
                let (a, b) = (w[0].min(input.len()), w[1].min(input.len()));
                s.feed(&input[a..b], TS, &mut out);
            }
            s.finish(TS, &mut out);
            let parsed = lines(&out);
            let mut rebuilt = Vec::new();
            for (i, (_, tag, text)) in parsed.iter().enumerate() {
                prop_assert!(text.len() <= max);
                if tag == "P" && i + 1 != parsed.len() {
                    prop_assert_eq!(text.len(), max);
                }
                rebuilt.extend_from_slice(text);
                if tag == "F" {
                    rebuilt.push(b'\n');
                }
            }
            let mut expected = Vec::new();
            let mut rest: &[u8] = &input;
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let mut line = &rest[..nl];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                expected.extend_from_slice(line);
                expected.push(b'\n');
                rest = &rest[nl + 1..];
            }
            expected.extend_from_slice(rest);
            prop_assert_eq!(rebuilt, expected);
        }

        #[test]
        fn parse_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_line(&line);
        }
    }
}
