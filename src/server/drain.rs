//! The drain (SPEC §7): after the first SIGTERM / SIGINT, in-flight requests finish within
//! `listen.shutdown_grace`. When the grace ends, or a second signal comes, every request still
//! in the stack is answered `503 shutting_down` ([`crate::proxy::shutdown`]) and the server
//! waits for those answers to be written (each connection ends once its answers are: HTTP/1.1
//! has keep-alive off, HTTP/2 has had GOAWAY), at most [`TIME_TO_WRITE`] or until a third
//! signal. Connections still open then are cut, and the report names every request refused
//! or cut.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::{Notify, watch};

use super::{Gateway, Signals};
use crate::access_log;

/// How long the 503s of the grace's end may take to be written: they are ~100 bytes each, so
/// only a caller that stopped reading needs more, and it is cut.
pub const TIME_TO_WRITE: Duration = Duration::from_secs(2);

/// At most this many request ids are named in the final warning (the count is exact).
const MAX_IDS_NAMED: usize = 100;

/// Where the drain is, for each connection's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Serving,
    /// Stop taking requests: HTTP/1.1 keep-alive off (idle connections close), HTTP/2 GOAWAY.
    Draining,
    /// Close now, whatever is left.
    Cut,
}

/// The drain's shared state: the phase (each connection's task holds a receiver, so the
/// receivers count the open connections), the requests not yet answered whole, and the ids
/// of those cut.
pub(super) struct Drain {
    phase: watch::Sender<Phase>,
    draining: AtomicBool,
    /// Requests in the stack or whose answer hyper has not taken whole, on every connection.
    open: AtomicUsize,
    none_open: Notify,
    cut: Mutex<Vec<HeaderValue>>,
}

impl Drain {
    pub(super) fn new() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            none_open: Notify::new(),
            cut: Mutex::default(),
        }
    }

    /// A connection's view of the phase; the connection counts as open while it is held.
    pub(super) fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(super) fn connections(&self) -> usize {
        self.phase.receiver_count()
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(super) fn is_cut(&self) -> bool {
        *self.phase.borrow() == Phase::Cut
    }

    pub(super) fn enter(&self, phase: Phase) {
        self.draining.store(true, Ordering::Relaxed);
        self.phase.send_replace(phase);
    }

    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_open.notify_waiters();
        }
    }

    /// A request whose answer did not reach hyper whole, or that hyper could not write, when
    /// its connection was cut.
    pub(super) fn note_cut(&self, id: Option<HeaderValue>) {
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.unwrap_or(HeaderValue::from_static("-")));
    }

    pub(super) fn cut_ids(&self) -> Vec<HeaderValue> {
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn all_connections_closed(&self) {
        self.phase.closed().await;
    }

    async fn all_requests_closed(&self) {
        loop {
            let notified = self.none_open.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// How the drain ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Requests answered `503 shutting_down`.
    pub refused: usize,
    /// Requests whose answer was not written whole before their connection was closed.
    pub cut: usize,
}

impl Drained {
    /// Every request in flight at the signal got its own answer.
    pub fn is_clean(&self) -> bool {
        self.refused == 0 && self.cut == 0
    }
}

/// Runs the drain to its end once the listener is closed and `/readyz` answers 503.
pub(super) async fn run(drain: &Drain, gateway: &Gateway, signals: &mut Signals) -> Drained {
    let grace = gateway.config.listen.shutdown_grace;
    drain.enter(Phase::Draining);
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        connections = drain.connections(),
        "draining: no new connections, finishing in-flight requests"
    );
    let ended_by = tokio::select! {
        () = drain.all_connections_closed() => return Drained::default(),
        () = tokio::time::sleep(grace) => "shutdown_grace",
        () = signals.recv() => {
            tracing::info!("second signal: ending the drain now");
            "second_signal"
        }
    };
    let requests = &gateway.pipeline.grace;
    requests.fire();
    tokio::select! {
        () = drain.all_connections_closed() => {}
        () = tokio::time::sleep(TIME_TO_WRITE) => {}
        () = signals.recv() => {}
    }
    drain.enter(Phase::Cut);
    // Cut connections end at once; HTTP/2 streams, on tasks of their own, a moment later.
    let _ = tokio::time::timeout(TIME_TO_WRITE, async {
        drain.all_connections_closed().await;
        drain.all_requests_closed().await;
    })
    .await;
    let refused = requests.refused();
    let cut = drain.cut_ids();
    let token = gateway.token.current();
    let named = |ids: &[HeaderValue]| {
        ids.iter()
            .take(MAX_IDS_NAMED)
            .map(|id| access_log::scrub(id.to_str().unwrap_or("-"), &token))
            .collect::<Vec<_>>()
            .join(",")
    };
    if refused.is_empty() && cut.is_empty() {
        tracing::info!(ended_by, "drain ended; no request was in flight");
    } else {
        tracing::warn!(
            ended_by,
            shutting_down = refused.len(),
            request_ids = named(&refused),
            cut = cut.len(),
            cut_request_ids = named(&cut),
            "drain ended with requests in flight: answered 503 shutting_down"
        );
    }
    Drained {
        refused: refused.len(),
        cut: cut.len(),
    }
}
