//! Progress bars on a terminal, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use docker_delta::progress::{Phase, Progress, ProgressEvent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws one bar per phase on stderr when it is a terminal and not `--quiet`.
pub struct Bars {
    enabled: bool,
    current: Mutex<Option<(Phase, ProgressBar)>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars {
            enabled: !quiet && std::io::stderr().is_terminal(),
            current: Mutex::new(None),
        }
    }

    pub fn finish(&self) {
        if let Ok(mut cur) = self.current.lock() {
            if let Some((_, bar)) = cur.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for Bars {
    fn report(&self, e: ProgressEvent) -> bool {
        if !self.enabled {
            return true;
        }
        let Ok(mut cur) = self.current.lock() else {
            return true;
        };
        let same = matches!(&*cur, Some((p, _)) if *p == e.phase);
        if !same {
            if let Some((_, bar)) = cur.take() {
                bar.finish_and_clear();
            }
            let bar =
                ProgressBar::with_draw_target(Some(e.total.max(1)), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg:22} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(e.phase.label());
            *cur = Some((e.phase, bar));
        }
        if let Some((_, bar)) = &*cur {
            if e.total > 0 {
                bar.set_length(e.total);
            }
            bar.set_position(e.done);
        }
        true
    }
}
