//! The request pipeline as a tower stack. Read top to bottom, it is the whole life of one
//! request: every step refuses what it must before the next one looks, and nothing is sent to
//! KwikID until every check has passed (pingora's phase order: trust, route, callers, body,
//! limits, then forward). Each step is a `Layer` + `Service` in its own file.

pub mod access_log;
pub mod body;
pub mod callers;
pub mod exchange;
pub mod forward;
pub mod limits;
pub mod policy;
pub mod reject;
pub mod rescue;
pub mod route;
pub mod shutdown;
pub mod trust;

use std::convert::Infallible;
use std::future::Future;
use std::future::Ready;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{Service, ServiceBuilder};

use crate::rules::callers::Callers;
use crate::rules::policy::CallbackPolicy;
use crate::rules::route::Route;
pub use exchange::Peer;
pub use rescue::Reject;

/// Every answer, the gateway's own or KwikID's: small, whole, known length.
pub type Answer = Response<Full<Bytes>>;

/// What a step below the rescue returns: an answer, or a refusal for the rescue to render.
pub type Step = Pin<Box<dyn Future<Output = Result<Answer, Reject>> + Send>>;

/// What a step that only passes a request on or refuses it returns: the next step's own
/// future, or its refusal, ready. Nothing is allocated on the way through.
pub type PassOrRefuse<F> = Either<F, Ready<Result<Answer, Reject>>>;

/// The refusal as a [`PassOrRefuse`].
pub(crate) fn refuse<F>(reject: Reject) -> PassOrRefuse<F> {
    Either::Right(std::future::ready(Err(reject)))
}

pub(crate) use crate::rules::headers::X_REQUEST_ID;

/// What the steps share across connections; each step takes only the pieces it needs.
pub struct Pipeline {
    pub recorder: Arc<access_log::Recorder>,
    pub routes: Arc<[Route]>,
    pub callers: Arc<Callers>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub policy: Arc<CallbackPolicy>,
    pub limits: limits::LimitsLayer,
    pub forward: forward::Forward,
    /// Fired by the server when the drain's grace ends.
    pub grace: Arc<shutdown::GraceOver>,
}

impl Pipeline {
    /// The stack for one caller connection.
    pub fn stack<B>(
        &self,
        peer: Peer,
    ) -> impl Service<Request<B>, Response = Answer, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        ServiceBuilder::new()
            // 1. Request id and access log: outermost, so every answer below gets its line
            //    and `x-request-id`, and a request dropped mid-way its 499.
            .layer(access_log::AccessLogLayer::new(self.recorder.clone(), peer))
            // Every refusal below becomes the gateway's JSON answer here, in one place.
            .layer(rescue::RescueLayer)
            //    Shutdown: once the drain's grace is over, a request still below is answered
            //    503 here, so it gets an answer and its line instead of vanishing.
            .layer(shutdown::ShutdownLayer::new(self.grace.clone()))
            // 2. Trust: the peer, decided at accept, before anything the caller wrote.
            .layer(trust::TrustLayer)
            // 3. Route: exact method and path; the caller never picks the upstream.
            .layer(route::RouteLayer::new(self.routes.clone()))
            // 4. Callers: a named caller keeps to its routes, and an unnamed one may be
            //    refused; before the body, so a refused caller's body is never read.
            .layer(callers::CallersLayer::new(self.callers.clone()))
            // 5. Body: limited while it streams, then checked as init JSON.
            .layer(body::BodyLayer::new(self.max_body_bytes, self.body_timeout))
            // 6. Callback policy: where KwikID may send the user back to.
            .layer(policy::PolicyLayer::new(self.policy.clone()))
            // 7. Limits: the caller's share (its own when it is named), then the account's
            //    ceiling.
            .layer(self.limits.clone())
            // 8. Forward: strip, inject the token, send, KwikID's 429 hold and 401 count.
            .service(self.forward.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! What the steps' own tests share: stand-ins for the rest of the stack.

    use super::*;

    /// An inner service that answers 200 to anything.
    pub(crate) fn ok<R: Send + 'static>()
    -> impl Service<R, Response = Answer, Error = Reject, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        tower::service_fn(|_: R| async { Ok(Response::new(Full::new(Bytes::from_static(b"ok")))) })
    }

    /// An inner service that must never be reached.
    pub(crate) fn refused_by<R: Send + 'static>()
    -> impl Service<R, Response = Answer, Error = Reject, Future: Send + 'static>
    + Clone
    + Send
    + 'static {
        tower::service_fn(|_: R| async { panic!("a refused request reached the next step") })
    }

    /// The default route table.
    pub(crate) fn routes() -> Arc<[Route]> {
        config("").routes.into()
    }

    /// A validated config from `extra` TOML over a minimal one.
    pub(crate) fn config(extra: &str) -> crate::config::Config {
        let text = format!(
            "[upstream]\nbase_url = \"https://kwikid.example\"\n[token]\nenv = \"KWIKID_TEST_TOKEN_UNUSED\"\n{extra}"
        );
        crate::config::Config::parse(std::path::Path::new("test.toml"), &text).unwrap()
    }
}
