//! Progress bars of the jobs that run outside the training dashboard (`eval`, `embed`,
//! `data`, `bench`, the ablation grid): indicatif bars with rate and ETA on stderr.
//!
//! Where stderr is not a terminal (a log file, CI, a pipe) indicatif's stderr target hides
//! itself, so a log gets no bar, no carriage returns and no escape codes; the lines a job
//! prints on stdout are unchanged.

use std::sync::Arc;

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle,
};

use crate::util::progress::Progress;

/// One bar: a [`Progress`] sink for the library's loops.
#[derive(Debug, Clone)]
pub struct Bar {
    bar: ProgressBar,
}

/// A stage's bar; `{prefix}` is empty but for the bars of an ablation's runs, which it names.
const TEMPLATE: &str =
    "{prefix}{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})";

/// A bar before its first stage: no count to show yet.
const WAITING: &str = "{prefix}{msg} [{elapsed_precise}]";

fn style(template: &str) -> ProgressStyle {
    // indicatif's `{per_sec}` prints four decimals (1,890.2783/s).
    let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.1}/s", state.per_sec());
    };
    ProgressStyle::with_template(template).expect("a valid template").with_key("rate", rate)
}

impl Bar {
    /// A bar on stderr, drawn only where stderr is a terminal.
    pub fn stderr() -> Self {
        Self::new(ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()))
    }

    /// A bar that draws nothing (for callers that must pass one).
    pub fn hidden() -> Self {
        Self::new(ProgressBar::hidden())
    }

    fn new(bar: ProgressBar) -> Self {
        // Cleared when dropped as well as when finished, so a job that fails leaves no bar
        // above its error message.
        Self { bar: bar.with_style(style(WAITING)).with_finish(ProgressFinish::AndClear) }
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        // Every call but the style's draws: the count is shown once it has its length, so
        // that no frame reads 0/0.
        self.bar.set_style(style(WAITING));
        self.bar.set_message(what.to_string());
        self.bar.set_style(style(TEMPLATE));
        self.bar.set_length(total);
        // Position, elapsed time and rate from zero: each stage's ETA is its own.
        self.bar.reset();
    }

    fn start_at(&self, what: &str, total: u64, done: u64) {
        self.start(what, total);
        self.bar.set_position(done);
        // Units done before the stage would show as done in no time, a rate in the millions:
        // the estimator takes the position in (a tick, which `set_position` may skip), forgets
        // the time it took, and the bar is drawn again without that rate.
        self.bar.tick();
        self.bar.reset_eta();
        self.bar.tick();
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }

    fn message(&self, text: &str) {
        self.bar.set_message(text.to_string());
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The bars of an ablation: one of the runs done, and below it one per run in flight.
#[derive(Debug)]
pub struct RunBars {
    multi: MultiProgress,
    done: ProgressBar,
}

impl RunBars {
    /// Bars on stderr for `runs` runs (named `what`s), drawn only where stderr is a terminal.
    pub fn stderr(what: &str, runs: usize) -> Self {
        Self::on(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), what, runs)
    }

    /// Bars that draw nothing; lines still go to stdout.
    pub fn hidden(what: &str, runs: usize) -> Self {
        Self::on(MultiProgress::with_draw_target(ProgressDrawTarget::hidden()), what, runs)
    }

    fn on(multi: MultiProgress, what: &str, runs: usize) -> Self {
        // No clock: the line is drawn again only when a run ends, so it would stand still.
        let style =
            ProgressStyle::with_template("{msg}: {pos}/{len} done").expect("a valid template");
        let done = multi.add(ProgressBar::new(runs as u64).with_style(style));
        done.set_message(format!("{what}s"));
        Self { multi, done }
    }

    /// The bar of run `id`, which starts now (reading its data, building its model), below
    /// the others.
    pub fn run(&self, id: &str) -> Arc<Bar> {
        let bar = ProgressBar::no_length().with_prefix(format!("{id}: ")).with_message("starting");
        Arc::new(Bar::new(self.multi.add(bar)))
    }

    /// The run of `bar` stopped, its bar goes.
    pub fn end(&self, bar: &Bar) {
        bar.bar.finish_and_clear();
        self.multi.remove(&bar.bar);
    }

    /// A run is done (trained or read back): `line` is printed on stdout with the bars
    /// hidden, so that the two never tear, and they are drawn again below it.
    pub fn finished(&self, line: &str) {
        self.multi.suspend(|| println!("{line}"));
        self.done.inc(1);
    }

    /// Every run is over: the bar of the runs done goes.
    pub fn finish(&self) {
        self.done.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_counts_each_stage_from_zero() {
        let bar = Bar::hidden();
        bar.start("images", 10);
        bar.advance(4);
        bar.advance(6);
        assert_eq!((bar.bar.position(), bar.bar.length()), (10, Some(10)));
        bar.start("pairs", 3);
        bar.advance(1);
        assert_eq!((bar.bar.position(), bar.bar.length()), (1, Some(3)));
        assert_eq!(bar.bar.message(), "pairs");
        bar.start_at("epoch 2/3", 18, 10);
        bar.advance(2);
        assert_eq!((bar.bar.position(), bar.bar.length()), (12, Some(18)));
        bar.finish();
        assert!(bar.bar.is_finished());
    }

    #[test]
    fn run_bars_count_the_runs_done() {
        let bars = RunBars::hidden("run", 3);
        let first = bars.run("baseline");
        first.start("epoch 1/2", 8);
        first.advance(8);
        assert_eq!(first.bar.prefix(), "baseline: ");
        bars.end(&first);
        bars.finished("[run 1/3] baseline: verification 97.00% in 3 s");
        bars.finished("[run 2/3] k32 (done earlier)");
        assert_eq!((bars.done.position(), bars.done.length()), (2, Some(3)));
        assert!(first.bar.is_finished());
    }
}
