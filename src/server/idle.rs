//! What a caller connection is waiting for, and how long it may: the first byte of a head
//! (`listen.idle_timeout`, between requests), the rest of a head once it started
//! (`listen.header_read_timeout`, the slowloris guard), or nothing while a request is being
//! handled. hyper's own `header_read_timeout` starts as soon as hyper looks for the next head,
//! so it would also cut idle keep-alive connections (hyper 1.12, `proto/h1/conn.rs`
//! `poll_read_head`); it is off, and this watchdog keeps both bounds.
//!
//! [`Activity`] is what the connection's IO ([`Watched`]) and its requests
//! ([`super::track`]) report; [`Watchdog`] reads it after each poll of the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one caller connection has been doing; shared by its IO, its requests (on HTTP/2,
/// each on a task of its own) and its watchdog.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests in the stack or whose answer hyper has not yet taken whole.
    pub(super) in_flight: AtomicUsize,
    /// Requests ever started: one can come and go within a single poll of the connection
    /// (an HTTP/2 stream on its own task, an HTTP/1.1 refusal), unseen by `in_flight`.
    pub(super) started: AtomicUsize,
    /// Bytes arrived since the watchdog last looked.
    read: AtomicBool,
    /// The last write or flush could not complete: the caller is not reading.
    write_blocked: AtomicBool,
    /// HTTP/1.1: the id of the last answer handed to hyper, named in the drain's report if
    /// the connection is cut before it is written.
    pub(super) last_answered: Mutex<Option<HeaderValue>>,
    /// HTTP/2: the last stream ended, on its own task; the connection's task looks again.
    pub(super) went_idle: tokio::sync::Notify,
}

impl Activity {
    pub(super) fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    pub(super) fn last_answered(&self) -> Option<HeaderValue> {
        self.last_answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A caller connection's IO, reporting reads and blocked writes to its [`Activity`].
pub(super) struct Watched<I> {
    io: I,
    activity: std::sync::Arc<Activity>,
}

impl<I> Watched<I> {
    pub(super) fn new(io: I, activity: std::sync::Arc<Activity>) -> Self {
        Self { io, activity }
    }

    fn blocked<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.blocked(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.blocked(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.blocked(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the connection waits for; the watchdog's timer runs in `Head` and `Idle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// The first request, or the rest of a head whose first bytes came: `header_read_timeout`.
    Head,
    /// A request is being handled or its answer written: no timer (the body and KwikID have
    /// their own).
    Busy,
    /// Nothing, between requests: `idle_timeout`.
    Idle,
}

/// One connection's timer over [`Activity`]: a new deadline when what the connection waits
/// for changes, never by a caller's pings or stray bytes while idle on HTTP/2.
///
/// The tokio timer is moved only to an *earlier* deadline. A later one (the idle wait after
/// each answer on a kept connection, nearly every request) is only written down: when the
/// timer fires before it, [`Watchdog::due`] moves the timer there instead of timing out. So a
/// busy keep-alive connection does not re-arm tokio's timer after every answer.
pub(super) struct Watchdog {
    pub(super) wait: Wait,
    /// When the current wait ends; the timer fires at or before it.
    deadline: Instant,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// HTTP/1.1 reads heads byte by byte; an HTTP/2 HEADERS frame arrives whole, so bytes
    /// on an idle HTTP/2 connection (pings, settings) start nothing.
    http1: bool,
    /// The idle close has begun: the timer is done.
    closing: bool,
    /// `Activity::started` when last observed.
    seen_started: usize,
}

impl Watchdog {
    /// Waiting for the first request, which must come within `header_read_timeout` of now.
    pub(super) fn new(
        header_read_timeout: Duration,
        idle_timeout: Duration,
        http1: bool,
        timer: Pin<&mut Sleep>,
    ) -> Self {
        let deadline = Instant::now() + header_read_timeout;
        timer.reset(deadline);
        Self {
            wait: Wait::Head,
            deadline,
            header_read_timeout,
            idle_timeout,
            http1,
            closing: false,
            seen_started: 0,
        }
    }

    /// Reads what happened during the last poll of the connection, and re-arms `timer` when
    /// what the connection waits for changed.
    pub(super) fn observe(&mut self, activity: &Activity, timer: Pin<&mut Sleep>) {
        let started = activity.started.load(Ordering::Acquire);
        // A request ended since the last look (it may also have begun since then).
        let ended = std::mem::replace(&mut self.seen_started, started) != started
            || self.wait == Wait::Busy;
        let now = if activity.in_flight.load(Ordering::Acquire) > 0 {
            Wait::Busy
        } else if ended {
            // Bytes read meanwhile were the body, or a pipelined head that hyper now holds:
            // from here, the connection is idle until more arrive.
            activity.read.store(false, Ordering::Relaxed);
            Wait::Idle
        } else if self.wait == Wait::Idle
            && self.http1
            && activity.read.swap(false, Ordering::Relaxed)
        {
            Wait::Head
        } else {
            self.wait
        };
        if now == self.wait && !(now == Wait::Idle && ended) {
            return;
        }
        self.wait = now;
        let timeout = match now {
            Wait::Head => self.header_read_timeout,
            Wait::Idle => self.idle_timeout,
            Wait::Busy => return,
        };
        self.deadline = Instant::now() + timeout;
        if self.deadline < timer.deadline() || timer.is_elapsed() {
            timer.reset(self.deadline);
        }
    }

    /// When the current wait ends (meaningless while [`Wait::Busy`]).
    #[cfg(test)]
    fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Called when `timer` fired: whether the wait is over. If not, the deadline was moved
    /// later since the timer was set, and the timer is moved there.
    pub(super) fn due(&self, timer: Pin<&mut Sleep>) -> bool {
        if Instant::now() >= self.deadline {
            return true;
        }
        timer.reset(self.deadline);
        false
    }

    /// Whether the timer counts: not while busy, nor once the idle close has begun.
    pub(super) fn armed(&self) -> bool {
        match self.wait {
            Wait::Busy => false,
            Wait::Idle => !self.closing,
            Wait::Head => true,
        }
    }

    pub(super) fn closing(&mut self) {
        self.closing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dog(http1: bool) -> (Watchdog, Pin<Box<Sleep>>) {
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        let dog = Watchdog::new(
            Duration::from_secs(2),
            Duration::from_secs(75),
            http1,
            timer.as_mut(),
        );
        (dog, timer)
    }

    /// `observe`, checking that a new deadline is `after` from the moment it ran and that
    /// the timer fires no later than the deadline.
    fn observe(dog: &mut Watchdog, activity: &Activity, timer: &mut Pin<Box<Sleep>>) -> Wait {
        let was = dog.deadline();
        let before = Instant::now();
        dog.observe(activity, timer.as_mut());
        let after = Instant::now();
        let expected = match dog.wait {
            Wait::Head => Some(Duration::from_secs(2)),
            Wait::Idle => Some(Duration::from_secs(75)),
            Wait::Busy => None,
        };
        if let Some(after_by) = expected.filter(|_| dog.deadline() != was) {
            assert!(dog.deadline() >= before + after_by && dog.deadline() <= after + after_by);
        }
        if dog.armed() {
            assert!(
                timer.deadline() <= dog.deadline(),
                "the timer fires in time"
            );
        }
        dog.wait
    }

    /// Guards against an idle keep-alive connection being held to `header_read_timeout`, a
    /// head that started on an idle connection escaping it, and a busy connection timing
    /// out while KwikID answers.
    #[tokio::test]
    async fn http1_waits_head_busy_idle_head() {
        let activity = Activity::default();
        let (mut dog, mut timer) = dog(true);
        assert_eq!((dog.wait, dog.armed()), (Wait::Head, true));

        activity.read.store(true, Ordering::Relaxed);
        activity.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Busy);
        assert!(!dog.armed());

        activity.in_flight.store(0, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        let idle_until = dog.deadline();
        assert!(idle_until > Instant::now() + Duration::from_secs(70));
        assert_eq!(
            observe(&mut dog, &activity, &mut timer),
            Wait::Idle,
            "nothing arrived: still idle"
        );
        assert_eq!(dog.deadline(), idle_until, "and the wait runs on");

        activity.read.store(true, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Head);
        assert!(timer.deadline() < Instant::now() + Duration::from_secs(3));
        assert!(dog.armed());
    }

    /// Guards against a request that came and went between two looks (an HTTP/2 stream on
    /// its own task, an HTTP/1.1 refusal answered in the same poll) leaving the first
    /// request's deadline, or an old idle deadline, running.
    #[tokio::test]
    async fn a_request_unseen_in_flight_still_restarts_the_idle_wait() {
        let activity = Activity::default();
        let (mut dog, mut timer) = dog(false);
        activity.started.store(1, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        let first = dog.deadline();
        std::thread::sleep(Duration::from_millis(5));
        activity.started.store(2, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        assert!(dog.deadline() > first, "the idle wait starts again");
    }

    /// Guards against a timer that was left at an earlier deadline (the first head's, while
    /// the idle wait after an answer is later) closing the connection before its wait is over,
    /// and against one that fired being left unarmed.
    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_before_the_deadline_moves_to_it() {
        let activity = Activity::default();
        let (mut dog, mut timer) = dog(true);
        let head_until = timer.deadline();
        activity.in_flight.store(1, Ordering::Relaxed);
        observe(&mut dog, &activity, &mut timer);
        activity.in_flight.store(0, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        assert_eq!(
            timer.deadline(),
            head_until,
            "a later deadline leaves the timer"
        );

        timer.as_mut().await;
        assert!(
            !dog.due(timer.as_mut()),
            "fired at the head's deadline, 73 s early"
        );
        assert_eq!(
            timer.deadline(),
            dog.deadline(),
            "and moved to the idle one"
        );
        timer.as_mut().await;
        assert!(dog.due(timer.as_mut()));

        // A fired timer is set again even for a later deadline.
        activity.started.store(1, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        assert_eq!(timer.deadline(), dog.deadline());
        assert!(!timer.is_elapsed());
    }

    /// Guards against HTTP/2 pings (bytes on an idle connection) keeping it open or being
    /// taken for a head, and against the timer firing again once the idle close began.
    #[tokio::test]
    async fn http2_bytes_while_idle_start_nothing() {
        let activity = Activity::default();
        let (mut dog, mut timer) = dog(false);
        activity.in_flight.store(1, Ordering::Relaxed);
        observe(&mut dog, &activity, &mut timer);
        activity.in_flight.store(0, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        let idle_until = dog.deadline();
        activity.read.store(true, Ordering::Relaxed);
        assert_eq!(observe(&mut dog, &activity, &mut timer), Wait::Idle);
        assert_eq!(dog.deadline(), idle_until);
        dog.closing();
        assert!(!dog.armed());
    }
}
