//! Progress and log callbacks.
//!
//! Progress: the library's [`Progress`] sink forwards each event to a C function; the
//! function returns false to cancel, and the operation then fails with
//! `DD_STATUS_CANCELLED`, leaving nothing behind.
//!
//! Logs: the library logs through `tracing`. While a call with a log callback runs, a
//! subscriber scoped to that call (`tracing::subscriber::with_default`, on the calling
//! thread) formats each event and hands it to the callback. No global subscriber is
//! installed, so a host application's own logging is not disturbed.

use std::ffi::{c_char, c_void};
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::cstring;
use docker_delta::progress::{Phase, Progress, ProgressEvent};

/// The phases of create and apply, in the order they happen. Create goes through
/// ANALYZE (only with an old image and a delta method), ENCODE, WRITE; apply through
/// VERIFY, REBUILD, and LOAD when loading into the daemon; pull through DOWNLOAD first.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dd_phase {
    /// Reading the old image's layers (and the changed new ones) to choose delta sources.
    Analyze = 0,
    /// Encoding the new image's layers.
    Encode = 1,
    /// Writing and verifying the package.
    Write = 2,
    /// Checking the package's payload.
    Verify = 3,
    /// Rebuilding the new image's layers.
    Rebuild = 4,
    /// Sending the rebuilt image to the Docker daemon.
    Load = 5,
    /// Downloading from a registry: a delta package (then VERIFY, REBUILD, LOAD), or the
    /// layers of a full pull (then LOAD).
    Download = 6,
}

impl From<Phase> for dd_phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Analyze => dd_phase::Analyze,
            Phase::Encode => dd_phase::Encode,
            Phase::Write => dd_phase::Write,
            Phase::Verify => dd_phase::Verify,
            Phase::Rebuild => dd_phase::Rebuild,
            Phase::Load => dd_phase::Load,
            Phase::Download => dd_phase::Download,
        }
    }
}

/// Log levels, most severe first.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum dd_log_level {
    /// Errors.
    Error = 1,
    /// Warnings (e.g. a base image that is not the recorded one but has every layer).
    Warn = 2,
    /// Each major step (package written, image rebuilt, image loaded).
    Info = 3,
    /// Details: paths, digests, per-layer decisions.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl dd_log_level {
    /// The level for a raw value, if valid.
    pub fn from_u32(v: u32) -> Option<dd_log_level> {
        [
            dd_log_level::Error,
            dd_log_level::Warn,
            dd_log_level::Info,
            dd_log_level::Debug,
            dd_log_level::Trace,
        ]
        .into_iter()
        .find(|l| *l as u32 == v)
    }

    fn of(level: &Level) -> dd_log_level {
        match *level {
            Level::ERROR => dd_log_level::Error,
            Level::WARN => dd_log_level::Warn,
            Level::INFO => dd_log_level::Info,
            Level::DEBUG => dd_log_level::Debug,
            _ => dd_log_level::Trace,
        }
    }
}

/// Progress callback: `phase`, bytes `done` in this phase out of `total` (0 if unknown).
/// Within one call, phases arrive in order and `done` never decreases within a phase;
/// each phase starts with `done == 0` and ends with `done == total`. Return true to go on,
/// false to cancel the operation.
pub type dd_progress_cb = Option<
    unsafe extern "C" fn(userdata: *mut c_void, phase: dd_phase, done: u64, total: u64) -> bool,
>;

/// Log callback: one formatted message (`message key=value ...`, UTF-8, borrowed for the
/// duration of the callback).
pub type dd_log_cb = Option<
    unsafe extern "C" fn(userdata: *mut c_void, level: dd_log_level, message: *const c_char),
>;

/// The callbacks an options object carries.
#[derive(Clone, Copy, Default)]
pub struct Callbacks {
    /// Progress callback and its userdata.
    pub progress: Option<(
        unsafe extern "C" fn(*mut c_void, dd_phase, u64, u64) -> bool,
        *mut c_void,
    )>,
    /// Log callback, its userdata and the most detailed level passed to it.
    pub log: Option<(
        unsafe extern "C" fn(*mut c_void, dd_log_level, *const c_char),
        *mut c_void,
        dd_log_level,
    )>,
}

/// Forwards progress to the C callback.
pub struct ProgressAdapter {
    cb: Option<(
        unsafe extern "C" fn(*mut c_void, dd_phase, u64, u64) -> bool,
        *mut c_void,
    )>,
}

// SAFETY: the adapter lives only for the duration of one exported call and the library
// reports progress from the calling thread only; the userdata pointer is never
// dereferenced by Rust, only passed back to the caller's function.
unsafe impl Send for ProgressAdapter {}
// SAFETY: as above.
unsafe impl Sync for ProgressAdapter {}

impl Progress for ProgressAdapter {
    fn report(&self, e: ProgressEvent) -> bool {
        match self.cb {
            // SAFETY: the caller registered this function and userdata together.
            Some((f, ud)) => unsafe { f(ud, e.phase.into(), e.done, e.total) },
            None => true,
        }
    }
}

impl Callbacks {
    /// The progress sink for one call.
    pub fn progress(&self) -> ProgressAdapter {
        ProgressAdapter { cb: self.progress }
    }

    /// Runs `f` with the log callback (if any) receiving the library's log events on this
    /// thread.
    pub fn with_logs<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.log {
            None => f(),
            Some((cb, userdata, max)) => {
                let subscriber =
                    tracing_subscriber::registry().with(LogLayer { cb, userdata, max });
                tracing::subscriber::with_default(subscriber, f)
            }
        }
    }
}

struct LogLayer {
    cb: unsafe extern "C" fn(*mut c_void, dd_log_level, *const c_char),
    userdata: *mut c_void,
    max: dd_log_level,
}

// SAFETY: the subscriber is the thread-local default of the calling thread for the
// duration of one exported call only (`with_default`), so the callback runs on the
// caller's thread; userdata is only passed back.
unsafe impl Send for LogLayer {}
// SAFETY: as above.
unsafe impl Sync for LogLayer {}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        dd_log_level::of(metadata.level()) <= self.max
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = dd_log_level::of(event.metadata().level());
        if level > self.max {
            return;
        }
        let mut v = Formatter::default();
        event.record(&mut v);
        let mut text = v.message;
        if !v.fields.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&v.fields);
        }
        let c = cstring(text);
        // SAFETY: the caller registered this function and userdata together; the message
        // stays valid for the duration of the call.
        unsafe { (self.cb)(self.userdata, level, c.as_ptr()) };
    }
}

#[derive(Default)]
struct Formatter {
    message: String,
    fields: String,
}

impl Visit for Formatter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.sep();
            let _ = write!(self.fields, "{}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.sep();
            let _ = write!(self.fields, "{}={:?}", field.name(), value);
        }
    }
}

impl Formatter {
    fn sep(&mut self) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
    }
}
