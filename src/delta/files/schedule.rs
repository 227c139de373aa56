//! The parallel scheduler of the codec: jobs run on several threads and their results are
//! handed on in order, under a memory budget ([`Footprint`]); used to encode and to decode
//! chunks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use crate::error::{Error, Result};

/// Memory a job or a result of [`in_order_parallel`] holds, in bytes: an estimate that errs
/// high.
pub(super) trait Footprint {
    /// What it holds as it is: a job taken and not yet running, a result not yet sunk.
    fn held(&self) -> u64;
    /// The most a job holds while it runs (counted instead of [`held`](Self::held) from
    /// the time it starts until its result is made).
    fn running(&self) -> u64 {
        self.held()
    }
}

/// Runs jobs on `workers` threads and hands their results to `sink` in the order the jobs
/// were taken. Each worker thread calls `start` once, before it takes a job (a thread is
/// new to it, and ends with it). `take` gives the next job (`None` when there are no more);
/// it is called on the worker threads, one at a time, so it may read a stream. `work` turns
/// a job into a result, on any thread. The first error (from `take`, `work` or `sink`)
/// stops everything and is returned.
///
/// Memory stays bounded whatever the number of workers: at most `ahead` jobs are taken
/// past the result being sunk, and only while less than `memory` is held; a job starts
/// only when its [`Footprint::running`] fits in `memory` beside what the others hold (jobs
/// waiting or running, results not yet sunk), or nothing else is held (a job larger than
/// `memory` runs alone). The job whose result the sink waits for is taken and started
/// counting only the jobs running: the results held ahead of it wait for it, so it must
/// not wait for them. Jobs start in the order they were taken.
pub(super) fn in_order_parallel<J: Send + Footprint, T: Send + Footprint>(
    workers: usize,
    ahead: usize,
    memory: u64,
    start: impl Fn() + Sync,
    take: impl FnMut() -> Result<Option<J>> + Send,
    work: impl Fn(J) -> Result<T> + Sync,
    mut sink: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    struct State<F> {
        take: F,
        /// Jobs taken so far; the next job's number.
        taken: usize,
        /// The number of the next result the sink takes.
        want: usize,
        /// Bytes held by the jobs taken and not done, and by the results not yet sunk.
        held: u64,
        /// Bytes held by the jobs running.
        running: u64,
        /// Jobs started so far; the next job to start.
        started: usize,
        /// All jobs are taken (none left, or `take` failed).
        ended: bool,
        /// Stop: the sink failed or is done.
        stop: bool,
    }
    let state = (
        Mutex::new(State {
            take,
            taken: 0,
            want: 0,
            held: 0,
            running: 0,
            started: 0,
            ended: false,
            stop: false,
        }),
        Condvar::new(),
    );
    let lock = || state.0.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<T>, u64)>();
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (state, work, start) = (&state, &work, &start);
            scope.spawn(move || {
                start();
                loop {
                    let wait = |g| state.1.wait(g).unwrap_or_else(|e| e.into_inner());
                    let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
                    // A job is taken (a stream may be read for it) only while memory is left,
                    // unless it is the one the sink waits for.
                    while !g.stop
                        && !g.ended
                        && (g.taken >= g.want + ahead || (g.taken != g.want && g.held >= memory))
                    {
                        g = wait(g);
                    }
                    if g.stop || g.ended {
                        return;
                    }
                    let i = g.taken;
                    let job = match (g.take)() {
                        Ok(Some(job)) => {
                            g.taken += 1;
                            job
                        }
                        Ok(None) => {
                            g.ended = true;
                            state.1.notify_all();
                            return;
                        }
                        Err(e) => {
                            // The error is the last result.
                            g.taken += 1;
                            g.ended = true;
                            state.1.notify_all();
                            drop(g);
                            let _ = tx.send((i, Err(e), 0));
                            return;
                        }
                    };
                    let (held, run) = (job.held(), job.running());
                    g.held += held;
                    loop {
                        if g.stop {
                            g.held -= held;
                            return;
                        }
                        // Jobs start in the order taken: later jobs taking the memory as
                        // it freed kept a job too large to run beside them waiting while they
                        // ran one by one (the tools pair: the second chunk waited 29 s, and
                        // the worker that held it, and the other core, with it).
                        let fits = i == g.started
                            && if i == g.want {
                                g.running == 0 || g.running + run <= memory
                            } else {
                                g.held == held || g.held - held + run <= memory
                            };
                        if fits {
                            break;
                        }
                        g = wait(g);
                    }
                    g.held = g.held - held + run;
                    g.running += run;
                    g.started += 1;
                    state.1.notify_all();
                    drop(g);
                    // A panic becomes an error: the result must arrive, or the sink and the
                    // workers waiting for it would wait forever.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job)))
                            .unwrap_or_else(|_| {
                                Err(Error::Other("files codec: a worker thread panicked".into()))
                            });
                    let kept = result.as_ref().map_or(0, Footprint::held);
                    let mut g = state.0.lock().unwrap_or_else(|e| e.into_inner());
                    g.held = g.held - run + kept;
                    g.running -= run;
                    state.1.notify_all();
                    drop(g);
                    if tx.send((i, result, kept)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let stop = || {
            lock().stop = true;
            state.1.notify_all();
        };
        let mut waiting = BTreeMap::new();
        let mut want = 0usize;
        // Results arrive until every worker has stopped (all jobs taken and done).
        while let Ok((i, r, kept)) = rx.recv() {
            waiting.insert(i, (r, kept));
            while let Some((r, kept)) = waiting.remove(&want) {
                if let Err(e) = r.and_then(&mut sink) {
                    stop();
                    return Err(e);
                }
                want += 1;
                let mut g = lock();
                g.want = want;
                g.held -= kept;
                drop(g);
                state.1.notify_all();
            }
        }
        stop();
        let g = lock();
        if want < g.taken || !g.ended {
            return Err(Error::Other("files codec: a worker stopped early".into()));
        }
        Ok(())
    })
}

/// Runs `work(0..workers)` on as many threads and returns the results in that order.
pub(super) fn on_every_core<T: Send>(
    workers: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let work = &work;
        let threads: Vec<_> = (0..workers).map(|k| scope.spawn(move || work(k))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(Error::Other("files codec: a worker thread panicked".into()))
                })
            })
            .collect()
    })
}

/// Runs `work(i)` for every `i` in `0..count` on up to `workers` threads, each taking the
/// next `i` as soon as it is free (for items whose costs differ widely), and returns the
/// results in the order of `i`. With one worker (or one item) everything runs on the
/// calling thread.
pub(super) fn each_on_every_core<T: Send>(
    workers: usize,
    count: usize,
    work: impl Fn(usize) -> T + Sync,
) -> Result<Vec<T>> {
    let workers = workers.clamp(1, count.max(1));
    if workers == 1 {
        return Ok((0..count).map(work).collect());
    }
    let next = AtomicUsize::new(0);
    let done = on_every_core(workers, |_| {
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok(mine);
            }
            mine.push((i, work(i)));
        }
    })?;
    let mut done: Vec<(usize, T)> = done.into_iter().flatten().collect();
    done.sort_unstable_by_key(|d| d.0);
    Ok(done.into_iter().map(|d| d.1).collect())
}

impl Footprint for Vec<u8> {
    fn held(&self) -> u64 {
        self.capacity() as u64
    }
}
