//! How far a long loop got, reported to whoever watches: the library's loops (embedding,
//! pooling, packing) take a [`Progress`] and never know whether a bar, a log or nothing shows
//! it. The binaries' progress bars live in `app::progress`; tests and callers that want
//! nothing pass [`NoProgress`].

/// Where a long job reports its stages and how many units of each are done.
///
/// Every method has a no-op default, so a sink overrides only what it shows. Methods take
/// `&self` so that one sink can be shared by the closures of a loop and sent to the thread
/// that runs it.
pub trait Progress: Send + Sync {
    /// A new stage of `total` units (images, pairs, steps) named `what`, starting at 0; it
    /// replaces the stage before it.
    fn start(&self, what: &str, total: u64) {
        let _ = (what, total);
    }

    /// [`Self::start`] of a stage of which `done` units were done before it started (the
    /// epochs of a resumed run, a step that ran before the sink heard of the stage): they count
    /// in its position and not in its rate.
    fn start_at(&self, what: &str, total: u64, done: u64) {
        self.start(what, total);
        self.advance(done);
    }

    /// `units` more units of the current stage are done.
    fn advance(&self, units: u64) {
        let _ = units;
    }

    /// A new description of the current stage (the epoch a run is in), keeping its count.
    fn message(&self, text: &str) {
        let _ = text;
    }

    /// The job is over: nothing more will be reported.
    fn finish(&self) {}
}

/// Reports nothing: what library loops get from callers that show no progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// `items` with `progress` advanced by one for each item pulled, in steps of at most
/// `chunk` so that a loop over 10⁷ pairs does not make 10⁷ calls; what is left is reported
/// when the source runs out.
/// The iterator keeps its source's size hint, so that `collect` sizes its vector once: a
/// vector grown by doubling instead held up to 1.5 times the pairs' scores at its peak
/// (`tests/memory.rs` bounds that peak).
pub fn counted<'a, I: Iterator + 'a>(
    items: I,
    progress: &'a dyn Progress,
    chunk: u64,
) -> impl Iterator<Item = I::Item> + 'a {
    Counted { items: items.fuse(), progress, chunk: chunk.max(1), pending: 0 }
}

struct Counted<'a, I> {
    items: std::iter::Fuse<I>,
    progress: &'a dyn Progress,
    chunk: u64,
    pending: u64,
}

impl<I: Iterator> Iterator for Counted<'_, I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        match self.items.next() {
            Some(item) => {
                self.pending += 1;
                if self.pending == self.chunk {
                    self.progress.advance(std::mem::take(&mut self.pending));
                }
                Some(item)
            }
            None => {
                if self.pending > 0 {
                    self.progress.advance(std::mem::take(&mut self.pending));
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

/// A sink that remembers every call, for the tests of the loops that report.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Recorded(std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl Recorded {
    /// The calls so far, as `start WHAT TOTAL`, `advance N`, `message TEXT` and `finish`.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Each stage as (name, total, units advanced in it).
    pub fn stages(&self) -> Vec<(String, u64, u64)> {
        let mut stages: Vec<(String, u64, u64)> = Vec::new();
        for call in self.calls() {
            match call.split_once(' ') {
                Some(("start", rest)) => {
                    let (what, total) = rest.rsplit_once(' ').unwrap();
                    stages.push((what.to_string(), total.parse().unwrap(), 0));
                }
                Some(("advance", n)) => stages.last_mut().unwrap().2 += n.parse::<u64>().unwrap(),
                _ => {}
            }
        }
        stages
    }
}

#[cfg(test)]
impl Progress for Recorded {
    fn start(&self, what: &str, total: u64) {
        self.0.lock().unwrap().push(format!("start {what} {total}"));
    }
    fn advance(&self, units: u64) {
        self.0.lock().unwrap().push(format!("advance {units}"));
    }
    fn message(&self, text: &str) {
        self.0.lock().unwrap().push(format!("message {text}"));
    }
    fn finish(&self) {
        self.0.lock().unwrap().push("finish".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_reports_in_chunks_and_the_rest_at_the_end() {
        let sink = Recorded::default();
        let sum: u32 = counted(1..=10u32, &sink, 4).sum();
        assert_eq!(sum, 55);
        assert_eq!(sink.calls(), ["advance 4", "advance 4", "advance 2"]);
        // A source that ends on a chunk boundary reports nothing more.
        let sink = Recorded::default();
        assert_eq!(counted(0..8, &sink, 4).count(), 8);
        assert_eq!(sink.calls(), ["advance 4", "advance 4"]);
        // Chunk 0 would never report: it counts one at a time.
        let sink = Recorded::default();
        assert_eq!(counted(0..2, &sink, 0).count(), 2);
        assert_eq!(sink.calls(), ["advance 1", "advance 1"]);
    }
}
