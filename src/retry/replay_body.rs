//! [`ReplayBody`]: a request body `Retry` can rebuild, around any body.

/// A request body that [`Retry`](super::Retry) can rebuild for each attempt: the caller's
/// body on the way in, the bytes `Retry` buffered on the way out (`From<Bytes>`): the
/// crate's [`ResponseBody`](crate::body::ResponseBody), which is exactly that.
///
/// `Retry` needs `From<Bytes>` of its request body; axum's and reqwest's bodies have it,
/// tonic's does not. Map the requests into a `ReplayBody` above `Retry`, and back into the
/// inner service's body type below it:
///
/// ```
/// use bytes::Bytes;
/// use gemini_balance::retry::{ReplayBody, RetryLayer};
/// use gemini_balance::BoxError;
/// use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// // A body type without `From<Bytes>`, as tonic's.
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
///     .map_request(|req: http::Request<Opaque>| req.map(ReplayBody::inner))
///     .layer(RetryLayer::new())
///     .map_request(|req: http::Request<ReplayBody<Opaque>>| req.map(|b| b.boxed_unsync()))
///     .service(channel);
///
/// let body: Opaque = Full::new(Bytes::from("hi")).map_err(|e| match e {}).boxed_unsync();
/// let res = stack.oneshot(http::Request::new(body)).await?;
/// assert_eq!(res.into_body().collect().await?.to_bytes(), "hi");
/// # Ok(())
/// # }
/// ```
pub type ReplayBody<B> = crate::body::ResponseBody<B>;
