//! One request's record, from its head to its access-log line: who sent it, under which
//! request id, and what each step learned on the way. The access-log step creates it and puts
//! it in the request's extensions; the steps below note what they did; the access-log step
//! reads it once the answer is sent, or the caller left.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderValue, Request};

use crate::secret::LoadedToken;

/// What the server knows about the connection a request came on, decided once per
/// connection, before anything the caller wrote is read.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `addr` is in `listen.allow_cidrs` and, with mTLS, a verified certificate was presented.
    pub trusted: bool,
    /// With mTLS, the caller's name from its certificate; it replaces the caller header.
    pub certificate_name: Option<Arc<str>>,
}

/// One request's record; shared (`Arc`) between the access-log step and the steps below.
#[derive(Debug)]
pub struct Exchange {
    /// The caller's sane `x-request-id`, else a new ULID; sent to KwikID and returned.
    pub request_id: HeaderValue,
    /// As the per-caller bucket keys it: the mTLS name, else the caller header, else the IP.
    pub caller: Arc<str>,
    /// The caller's index in `[[callers]]`, if it is listed there (SPEC §10).
    pub listed: Option<usize>,
    pub trusted: bool,
    trail: Mutex<Trail>,
}

/// What the steps learned, for the access log and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Trail {
    /// The matched route's index in the config (its path is a bounded metric label).
    pub route: Option<usize>,
    pub bytes_in: usize,
    pub handshake_id: Option<Box<str>>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
    /// The token this request was sent with, so `token_id` names it even across a reload.
    pub token: Option<Arc<LoadedToken>>,
    /// The refusal's code when the gateway answered itself.
    pub outcome: Option<&'static str>,
}

impl Exchange {
    pub fn new(
        request_id: HeaderValue,
        caller: Arc<str>,
        listed: Option<usize>,
        trusted: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            request_id,
            caller,
            listed,
            trusted,
            trail: Mutex::new(Trail::default()),
        })
    }

    /// The record the access-log step put on `request`, if any.
    pub fn of<B>(request: &Request<B>) -> Option<Arc<Self>> {
        request.extensions().get::<Arc<Self>>().cloned()
    }

    /// The record on `request`, borrowed: for a step that looks without keeping it.
    pub fn on<B>(request: &Request<B>) -> Option<&Self> {
        request.extensions().get::<Arc<Self>>().map(|e| &**e)
    }

    /// Notes what a step learned.
    pub fn note(&self, step: impl FnOnce(&mut Trail)) {
        step(&mut self.trail.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn refused(&self, code: &'static str) {
        self.note(|trail| trail.outcome = Some(code));
    }

    /// A copy of what the steps learned so far.
    pub fn trail(&self) -> Trail {
        self.trail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the steps learned, taken out once the answer is known (the access log's line
    /// is written once).
    pub(crate) fn take_trail(&self) -> Trail {
        std::mem::take(&mut *self.trail.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The matched route's index, once the route step has noted it.
    pub fn route(&self) -> Option<usize> {
        self.trail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .route
    }

    pub fn outcome(&self) -> Option<&'static str> {
        self.trail().outcome
    }

    /// A request carrying a trusted record, for the steps' own tests.
    #[cfg(test)]
    pub(crate) fn for_test<B>(mut request: Request<B>) -> (Request<B>, Arc<Self>) {
        let exchange = Self::new(
            HeaderValue::from_static("req-1"),
            "test-caller".into(),
            None,
            true,
        );
        request.extensions_mut().insert(exchange.clone());
        (request, exchange)
    }
}
