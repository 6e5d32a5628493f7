//! A progress bar on stderr, shared by the `plt` commands (model loading, perplexity) and
//! `plt bench`. On a terminal it is one line, redrawn in place; elsewhere (logs, pipes) it prints
//! only the lines its caller marks as major, one line each, so that logs stay short.
//!
//! The line reads `[#####-------]  42% 0:12 eta 0:17  what`: the bar, the fraction done, the
//! time since the bar started, the estimated time left (while between 1% and 100%), and a label.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Width of the bar in characters.
const WIDTH: usize = 24;

/// Progress towards a total amount of work (in any unit: weights, bytes, fractions).
pub struct Progress {
    total: f64,
    done: f64,
    start: Instant,
    tty: bool,
    on: bool,
    /// The stage `stage` is drawing (a new stage starts the bar over).
    stage: Option<String>,
}

impl Progress {
    /// A bar towards `total`; `on = false` prints nothing.
    pub fn new(total: f64, on: bool) -> Progress {
        Progress { total: total.max(1e-9), done: 0.0, start: Instant::now(), tty: std::io::stderr().is_terminal(), on, stage: None }
    }

    /// Adds `work` to the amount done.
    pub fn advance(&mut self, work: f64) {
        self.done += work;
    }

    /// The amount done so far.
    pub fn done(&self) -> f64 {
        self.done
    }

    /// Seconds since the bar started.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Seconds per unit of work at the pace so far (0 before any work is done).
    pub fn seconds_per_unit(&self) -> f64 {
        if self.done > 0.0 {
            self.elapsed_s() / self.done
        } else {
            0.0
        }
    }

    /// Draws the bar labelled `what`: redrawn on a terminal; elsewhere only when `major`.
    pub fn show(&mut self, what: &str, major: bool) {
        if !self.on || !(self.tty || major) {
            return;
        }
        let f = (self.done / self.total).clamp(0.0, 1.0);
        let el = self.elapsed_s();
        let eta = if f > 0.01 && f < 1.0 { format!(" eta {}", mmss(el / f - el)) } else { String::new() };
        let line = format!("{} {:3.0}% {}{}  {what}", bar(f), f * 100.0, mmss(el), eta);
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }

    /// Ends the redrawn line with a full bar and the time taken (terminal only: logs already
    /// have their lines).
    pub fn finish(&mut self) {
        if self.on && self.tty {
            eprintln!("\r\x1b[2K{} 100% {}", bar(1.0), mmss(self.elapsed_s()));
        }
    }

    /// Reports `fraction` (0..=1) of a named stage, for callbacks of the form `(stage, fraction)`
    /// such as model loading's: a new stage name starts the bar over, and a stage that reaches 1
    /// ends its line. Elsewhere than on a terminal only completed stages are printed.
    pub fn stage(&mut self, stage: &str, fraction: f32) {
        if self.stage.as_deref() != Some(stage) {
            self.stage = Some(stage.to_string());
            self.start = Instant::now();
        }
        let f = f64::from(fraction.clamp(0.0, 1.0));
        self.done = f * self.total;
        let complete = fraction >= 1.0;
        self.show(stage, complete);
        if complete {
            if self.on && self.tty {
                eprintln!();
            }
            self.stage = None;
        }
    }
}

/// `[####----]` filled to `fraction`.
fn bar(fraction: f64) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(WIDTH - filled))
}

/// Seconds as `m:ss`.
fn mmss(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_time_format() {
        assert_eq!(bar(0.0), format!("[{}]", "-".repeat(WIDTH)));
        assert_eq!(bar(0.5), format!("[{}{}]", "#".repeat(WIDTH / 2), "-".repeat(WIDTH / 2)));
        assert_eq!(bar(2.0), format!("[{}]", "#".repeat(WIDTH)));
        assert_eq!(mmss(0.4), "0:00");
        assert_eq!(mmss(125.0), "2:05");
    }

    #[test]
    fn stages_start_over() {
        let mut p = Progress::new(1.0, false);
        p.stage("reading", 0.5);
        assert_eq!(p.done(), 0.5);
        p.stage("reading", 1.0);
        assert_eq!(p.done(), 1.0);
        p.stage("uploading", 0.25);
        assert_eq!(p.done(), 0.25);
    }
}
