//! The bench's one table (measure | figure | target | ratio) and the
//! statistics behind its figures.

use std::fmt::Write as _;
use std::time::Duration;

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A baseline or context figure: no pass/fail.
    Info,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub measure: String,
    pub figure: String,
    pub target: String,
    pub ratio: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Table {
    /// A row whose ratio is `value / target` for an upper bound (<= 1 meets it).
    pub fn at_most(&mut self, measure: &str, figure: String, value: f64, target: f64, text: &str) {
        self.push(measure, figure, text, value / target, value / target <= 1.0);
    }

    /// A row whose ratio is `value / target` for a lower bound (>= 1 meets it).
    pub fn at_least(&mut self, measure: &str, figure: String, value: f64, target: f64, text: &str) {
        self.push(measure, figure, text, value / target, value / target >= 1.0);
    }

    fn push(&mut self, measure: &str, figure: String, target: &str, ratio: f64, ok: bool) {
        let verdict = if ok { Verdict::Met } else { Verdict::Missed };
        self.rows.push(Row {
            measure: measure.into(),
            figure,
            target: target.into(),
            ratio: format!("{ratio:.2} {}", if ok { "ok" } else { "MISS" }),
            verdict,
        });
    }

    pub fn row(
        &mut self,
        measure: &str,
        figure: String,
        target: &str,
        ratio: &str,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            figure,
            target: target.into(),
            ratio: ratio.into(),
            verdict,
        });
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = String::from("| measure | figure | target | ratio |\n|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                esc(&r.measure),
                esc(&r.figure),
                esc(&r.target),
                esc(&r.ratio)
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile (p50 of 10 values is the 5th smallest).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// "1.234 s" or "12.3 ms".
pub fn fmt_secs(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
