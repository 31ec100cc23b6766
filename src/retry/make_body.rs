//! [`MakeBody`]: how [`Retry`](super::Retry) rebuilds each attempt's request body.

use bytes::Bytes;
use http_body_util::Full;

/// Makes the request body of an attempt from the bytes [`Retry`](super::Retry) buffered.
///
/// The default, [`FromBytes`], takes any body with `From<Bytes>` (axum's, reqwest's,
/// `Full<Bytes>`, ...). For a body without it, such as tonic's, give
/// [`RetryLayer::replay_with`](super::RetryLayer::replay_with) the body's constructor: any
/// `Fn(Full<Bytes>) -> B` is a `MakeBody<B>`.
///
/// ```
/// use bytes::Bytes;
/// use gemini_balance::retry::RetryLayer;
/// use gemini_balance::BoxError;
/// use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// // A body type without `From<Bytes>`, as tonic's (`tonic::body::Body::new` is its maker).
/// type Opaque = UnsyncBoxBody<Bytes, BoxError>;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // Stands in for a tonic `Channel`: echoes the request body.
/// let channel = tower::service_fn(|req: http::Request<Opaque>| async move {
///     let body = req.into_body().collect().await?.to_bytes();
///     Ok::<_, BoxError>(http::Response::new(Full::new(body)))
/// });
/// let stack = ServiceBuilder::new()
///     .layer(RetryLayer::new().replay_with(|bytes: Full<Bytes>| {
///         bytes.map_err(|e| match e {}).boxed_unsync()
///     }))
///     .service(channel);
///
/// let body: Opaque = Full::new(Bytes::from("hi")).map_err(|e| match e {}).boxed_unsync();
/// let res = stack.oneshot(http::Request::new(body)).await?;
/// assert_eq!(res.into_body().collect().await?.to_bytes(), "hi");
/// # Ok(())
/// # }
/// ```
pub trait MakeBody<B> {
    /// The body of one attempt, holding `bytes`.
    fn make_body(&self, bytes: Bytes) -> B;
}

/// The default [`MakeBody`]: `B::from(bytes)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromBytes;

impl<B: From<Bytes>> MakeBody<B> for FromBytes {
    fn make_body(&self, bytes: Bytes) -> B {
        B::from(bytes)
    }
}

impl<F, B> MakeBody<B> for F
where
    F: Fn(Full<Bytes>) -> B,
{
    fn make_body(&self, bytes: Bytes) -> B {
        self(Full::new(bytes))
    }
}
