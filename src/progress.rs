//! Progress reporting and cancellation for long operations.
//!
//! Operations call a [`Progress`] sink with the phase they are in and bytes done out of a
//! total. The sink returns `false` to cancel; the operation then stops with
//! [`Error::Cancelled`] and leaves nothing behind.

use std::io::{self, Read};

use crate::error::{Error, Result};

/// The phases of create and apply, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(C)]
pub enum Phase {
    /// Reading the old image's layers to choose delta sources.
    Analyze = 0,
    /// Encoding the new image's layers.
    Encode = 1,
    /// Writing and verifying the package.
    Write = 2,
    /// Checking the package and the base image.
    Verify = 3,
    /// Rebuilding the new image's layers.
    Rebuild = 4,
    /// Loading the image into the daemon.
    Load = 5,
    /// Downloading from a registry: a delta package, or the layers of a full pull.
    Download = 6,
}

impl Phase {
    /// A short label for progress bars.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Analyze => "analyzing old image",
            Phase::Encode => "encoding layers",
            Phase::Write => "writing package",
            Phase::Verify => "verifying",
            Phase::Rebuild => "rebuilding layers",
            Phase::Load => "loading into Docker",
            Phase::Download => "downloading",
        }
    }
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The phase.
    pub phase: Phase,
    /// Bytes done in this phase.
    pub done: u64,
    /// Bytes this phase will process (0 if unknown).
    pub total: u64,
}

/// A progress sink; return `false` to cancel the operation.
pub trait Progress: Send + Sync {
    /// Called as work advances.
    fn report(&self, event: ProgressEvent) -> bool;
}

impl<F: Fn(ProgressEvent) -> bool + Send + Sync> Progress for F {
    fn report(&self, event: ProgressEvent) -> bool {
        self(event)
    }
}

/// Discards progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _: ProgressEvent) -> bool {
        true
    }
}

/// Tracks one phase's bytes and forwards them to a sink.
pub struct Tracker<'a> {
    sink: &'a dyn Progress,
    phase: Phase,
    done: u64,
    total: u64,
    last: u64,
}

impl<'a> Tracker<'a> {
    /// Starts a phase of `total` bytes.
    pub fn start(sink: &'a dyn Progress, phase: Phase, total: u64) -> Result<Tracker<'a>> {
        let t = Tracker {
            sink,
            phase,
            done: 0,
            total,
            last: 0,
        };
        t.emit()?;
        Ok(t)
    }

    fn emit(&self) -> Result<()> {
        if self.sink.report(ProgressEvent {
            phase: self.phase,
            done: self.done,
            total: self.total,
        }) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }

    /// Adds `n` bytes; reports at most every 1 MiB.
    pub fn advance(&mut self, n: u64) -> Result<()> {
        self.done += n;
        if self.done - self.last >= 1 << 20 {
            self.last = self.done;
            self.emit()?;
        }
        Ok(())
    }

    /// Reports the phase finished.
    pub fn finish(mut self) -> Result<()> {
        self.done = self.done.max(self.total);
        self.emit()
    }

    /// Wraps a reader so that reading it advances this tracker.
    pub fn reader<'t, R: Read>(&'t mut self, inner: R) -> TrackedReader<'t, 'a, R> {
        TrackedReader {
            inner,
            tracker: self,
        }
    }
}

/// A reader that advances a [`Tracker`].
pub struct TrackedReader<'t, 'a, R> {
    inner: R,
    tracker: &'t mut Tracker<'a>,
}

impl<R: Read> Read for TrackedReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tracker.advance(n as u64).map_err(Error::into_io)?;
        Ok(n)
    }
}
