//! The batching writer: requests append their line to a shared buffer; one thread writes
//! it out.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::record::{AccessRecord, render_into};
use crate::secret::LoadedToken;

/// Past this many bytes waiting, the writer is woken at once.
const WAKE_AT: usize = 32 * 1024;
/// Otherwise waiting lines are written at most this late.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

/// The access log. Requests append their line to a shared buffer; one writer thread writes
/// it out in batches, so a busy gateway pays one `write` per batch instead of one per
/// request (or a thread wake-up per request), and never waits for the terminal. Nothing is
/// dropped: the buffer grows if the output stalls.
pub struct AccessLog {
    pending: Arc<(Mutex<Pending>, Condvar)>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    pub fn to_writer(mut output: impl Write + Send + 'static) -> Self {
        let pending = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let shared = pending.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut batch = Vec::with_capacity(2 * WAKE_AT);
                loop {
                    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while p.lines.is_empty() && !p.closed {
                        p = wake.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    if p.lines.len() < WAKE_AT && !p.closed {
                        p = wake
                            .wait_timeout(p, FLUSH_EVERY)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    std::mem::swap(&mut p.lines, &mut batch);
                    let done = p.closed && batch.is_empty();
                    drop(p);
                    if done {
                        break;
                    }
                    let _ = output.write_all(&batch);
                    let _ = output.flush();
                    batch.clear();
                }
            })
            .ok();
        Self {
            pending,
            writer: Mutex::new(writer),
        }
    }

    pub fn write(&self, record: &AccessRecord<'_>, token: &LoadedToken) {
        let (lock, wake) = &*self.pending;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.closed {
            return;
        }
        let was_empty = p.lines.is_empty();
        render_into(&mut p.lines, record, token);
        if was_empty || p.lines.len() >= WAKE_AT {
            wake.notify_one();
        }
    }

    /// Writes out every waiting line and stops the writer; later records are dropped.
    pub fn close(&self) {
        let (lock, wake) = &*self.pending;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        wake.notify_one();
        if let Ok(mut writer) = self.writer.lock()
            && let Some(handle) = writer.take()
        {
            let _ = handle.join();
        }
    }
}
