//! Step 6, callback policy: where KwikID may send the user back to (`[policy]`).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;

use super::body::JsonBody;
use super::rescue::Reject;
use super::{Answer, PassOrRefuse, refuse};
use crate::rules::policy::CallbackPolicy;
use futures_util::future::Either;

/// `422 callback_not_allowed` for a `callback_url` the policy refuses (SPEC §3 `[policy]`).
#[derive(Clone, Debug)]
pub struct PolicyLayer {
    policy: Arc<CallbackPolicy>,
}

impl PolicyLayer {
    pub fn new(policy: Arc<CallbackPolicy>) -> Self {
        Self { policy }
    }
}

impl<S> tower::Layer<S> for PolicyLayer {
    type Service = PolicyStep<S>;

    fn layer(&self, inner: S) -> PolicyStep<S> {
        PolicyStep {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PolicyStep<S> {
    inner: S,
    policy: Arc<CallbackPolicy>,
}

impl<S> tower::Service<Request<JsonBody>> for PolicyStep<S>
where
    S: tower::Service<Request<JsonBody>, Response = Answer, Error = Reject>,
{
    type Response = Answer;
    type Error = Reject;
    type Future = PassOrRefuse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<JsonBody>) -> Self::Future {
        if !self.policy.allows(request.body().callback_url.as_deref()) {
            return refuse(Reject::CallbackNotAllowed);
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::ok;
    use tower::{Layer, ServiceExt};

    async fn checked(hosts: &[&str], callback_url: Option<&str>) -> Result<Answer, Reject> {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let policy = CallbackPolicy::new(Some(&hosts), false).unwrap();
        let body = JsonBody {
            callback_url: callback_url.map(Into::into),
            ..JsonBody::default()
        };
        let layer = PolicyLayer::new(Arc::new(policy));
        layer.layer(ok()).oneshot(Request::new(body)).await
    }

    /// Guards against a callback to a host outside the list reaching KwikID.
    #[tokio::test]
    async fn callbacks_outside_the_list_get_422() {
        let hosts = ["app.example.com"];
        assert!(
            checked(&hosts, Some("https://app.example.com/cb"))
                .await
                .is_ok()
        );
        assert!(checked(&hosts, None).await.is_ok());
        for url in ["https://evil.example/cb", "http://app.example.com/cb"] {
            let refused = checked(&hosts, Some(url)).await.unwrap_err();
            assert_eq!(refused, Reject::CallbackNotAllowed, "{url}");
        }
    }
}
