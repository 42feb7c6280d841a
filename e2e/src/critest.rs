//! critest's JUnit report: per-spec outcomes, per-area counts, and the rule pvecri is held to.
//!
//! The rule: every spec passes, except the one that needs a fixed upstream digest no offline
//! registry can serve, and specs skipped because this host has no AppArmor or because they
//! are benchmarks (run only with `-benchmark`). Anything else failed or skipped is a finding.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::{Context, bail};

/// The only spec allowed to fail: it pulls by a digest of the real upstream image.
pub const DIGEST_SPEC: &str = "public image with digest should be pulled and removed";
/// critest's skip message when the host has no AppArmor.
const APPARMOR_SKIP: &str = "AppArmor is disabled on this host";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// One `<testcase>` of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `[It] [k8s.io] Area text ...`
    pub name: String,
    pub status: Status,
    /// The failure or skip message.
    pub message: String,
}

impl Spec {
    /// The spec's area: the capitalised words after `[k8s.io]` (`Security Context`,
    /// `Container Mount Propagation`, `Image Manager`, ...).
    pub fn area(&self) -> String {
        let rest = self
            .name
            .split_once("[k8s.io] ")
            .map(|(_, r)| r)
            .unwrap_or(&self.name);
        let words: Vec<&str> = rest
            .split(' ')
            .take_while(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            .collect();
        if words.is_empty() {
            "(other)".to_string()
        } else {
            words.join(" ")
        }
    }

    fn is_suite_node(&self) -> bool {
        !self.name.starts_with("[It]")
    }

    /// Left out by `-ginkgo.focus`/`-ginkgo.skip` (critest skips the benchmarks by default):
    /// Ginkgo gives these a bare `skipped`, and a spec that skips itself a reason.
    fn filtered_out(&self) -> bool {
        self.status == Status::Skipped && self.message.trim() == "skipped"
    }

    /// Why this outcome breaks the rule, if it does. In a `focused` run, specs the focus
    /// left out are not findings.
    pub fn finding(&self, focused: bool) -> Option<String> {
        match self.status {
            Status::Passed => None,
            Status::Failed if self.name.contains(DIGEST_SPEC) => None,
            Status::Skipped if self.message.contains(APPARMOR_SKIP) => None,
            Status::Skipped
                if self.filtered_out() && (focused || self.name.contains("benchmark")) =>
            {
                None
            }
            Status::Failed => Some(format!(
                "FAILED  {}\n        {}",
                self.name,
                first_lines(&self.message, 6)
            )),
            Status::Skipped => Some(format!(
                "SKIPPED {}\n        {}",
                self.name,
                first_lines(&self.message, 2)
            )),
        }
    }
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join("\n        ")
}

/// Reads the `<testcase>` elements of a Ginkgo JUnit report (suite-level nodes such as
/// `[BeforeSuite]` included: a failing BeforeSuite fails everything).
pub fn parse_junit(xml: &str) -> anyhow::Result<Vec<Spec>> {
    let doc = roxmltree::Document::parse(xml).context("critest's JUnit report is not XML")?;
    let mut specs = Vec::new();
    for tc in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = tc.attribute("name").unwrap_or_default().to_string();
        let status = match tc.attribute("status") {
            Some("passed") => Status::Passed,
            Some("skipped") | Some("pending") => Status::Skipped,
            Some("failed") | Some("panicked") | Some("interrupted") | Some("timedout") => {
                Status::Failed
            }
            other => bail!("testcase {name:?} has an unknown status {other:?}"),
        };
        let message = tc
            .children()
            .find(|c| c.has_tag_name("failure") || c.has_tag_name("skipped"))
            .map(|c| {
                let attr = c.attribute("message").unwrap_or_default();
                let body = c.text().unwrap_or_default();
                if body.trim().is_empty() {
                    attr.to_string()
                } else {
                    format!("{attr}\n{body}")
                }
            })
            .unwrap_or_default();
        specs.push(Spec {
            name,
            status,
            message,
        });
    }
    if specs.iter().all(Spec::is_suite_node) {
        bail!("critest's JUnit report holds no specs");
    }
    Ok(specs)
}

/// Per-area counts of passed, failed and skipped specs, as a table.
pub fn area_table(specs: &[Spec]) -> String {
    let mut areas: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for s in specs.iter().filter(|s| !s.is_suite_node()) {
        let counts = areas.entry(s.area()).or_default();
        counts[s.status as usize] += 1;
    }
    let mut out = format!(
        "{:<44} {:>6} {:>6} {:>7}\n",
        "area", "passed", "failed", "skipped"
    );
    let mut total = [0usize; 3];
    for (area, c) in &areas {
        let _ = writeln!(out, "{area:<44} {:>6} {:>6} {:>7}", c[0], c[1], c[2]);
        for i in 0..3 {
            total[i] += c[i];
        }
    }
    let _ = writeln!(
        out,
        "{:<44} {:>6} {:>6} {:>7}",
        "total", total[0], total[1], total[2]
    );
    out
}

/// Every outcome that breaks the rule (see [`Spec::finding`]).
pub fn findings(specs: &[Spec], focused: bool) -> Vec<String> {
    specs.iter().filter_map(|s| s.finding(focused)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5"><testsuite name="CRI validation" tests="5">
<testcase name="[BeforeSuite]" classname="CRI validation" status="passed" time="0"></testcase>
<testcase name="[It] [k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]" status="failed"><failure message="[FAILED] no such digest" type="failed">trace</failure></testcase>
<testcase name="[It] [k8s.io] Security Context bucket [It] runtime should support Privileged is true" status="failed"><failure message="[FAILED] setting capabilities" type="failed"></failure></testcase>
<testcase name="[It] [k8s.io] AppArmor runtime should support apparmor field should work" status="skipped"><skipped message="skipped - AppArmor is disabled on this host"></skipped></testcase>
<testcase name="[It] [k8s.io] Image benchmark about operations on Image benchmark about listing Image" status="skipped"><skipped message="skipped"></skipped></testcase>
<testcase name="[It] [k8s.io] Container Mount Readonly runtime should support readonly mounts should support recursive readonly mounts" status="skipped"><skipped message="skipped - runtime does not implement recursive readonly mounts"></skipped></testcase>
<testcase name="[It] [k8s.io] Container runtime should support basic operations on container runtime should support creating container [Conformance]" status="passed"></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn the_rule_allows_only_the_digest_spec_apparmor_and_benchmarks() {
        let specs = parse_junit(REPORT).unwrap();
        assert_eq!(specs.len(), 7);
        let found = findings(&specs, false);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("FAILED  [It] [k8s.io] Security Context"));
        assert!(found[0].contains("setting capabilities"));
        assert!(found[1].starts_with("SKIPPED [It] [k8s.io] Container Mount Readonly"));
    }

    #[test]
    fn a_focused_run_passes_over_what_the_focus_left_out_but_not_a_reasoned_skip() {
        let xml = REPORT.replace(
            "</testsuite>",
            r#"<testcase name="[It] [k8s.io] Networking runtime should support DNS config" status="skipped"><skipped message="skipped"></skipped></testcase></testsuite>"#,
        );
        let specs = parse_junit(&xml).unwrap();
        assert_eq!(
            findings(&specs, false).len(),
            3,
            "unfocused: a spec left out is a finding"
        );
        let found = findings(&specs, true);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[1].contains("recursive readonly"),
            "a skip with a reason stays one"
        );
    }

    #[test]
    fn areas_are_the_capitalised_words_after_the_tag() {
        let specs = parse_junit(REPORT).unwrap();
        let areas: Vec<String> = specs.iter().skip(1).map(Spec::area).collect();
        assert_eq!(
            areas,
            [
                "Image Manager",
                "Security Context",
                "AppArmor",
                "Image",
                "Container Mount Readonly",
                "Container"
            ]
        );
        let table = area_table(&specs);
        assert!(table.contains("Security Context"), "{table}");
        assert!(
            table
                .lines()
                .last()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                == ["total", "1", "2", "3"],
            "{table}"
        );
    }

    #[test]
    fn a_report_without_specs_or_with_an_unknown_status_is_an_error() {
        assert!(parse_junit("<testsuites></testsuites>").is_err());
        assert!(parse_junit("not xml").is_err());
        assert!(
            parse_junit(r#"<testsuites><testcase name="[It] x" status="weird"/></testsuites>"#)
                .is_err()
        );
    }
}
