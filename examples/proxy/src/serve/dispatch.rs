//! One connection's service: the API routes to the handler, the rest to the router; every
//! request counted in progress on its connection until its response is sent, its body read
//! under CLIENT_BODY_TIMEOUT, and the client's address attached.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use axum::Router;
use bytes::Bytes;
use gemini_balance::api_error::{error_response, ApiFlavor};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::client_body::{BodyTimedOut, ClientBody};
use super::connection::{ConnState, Graceful, InFlight};
use super::parse_errors::ClientIo;
use crate::state::App;

/// The service of one connection.
#[derive(Clone)]
pub struct Dispatch {
    app: Arc<App>,
    router: Router,
    conn: Arc<ConnState>,
    /// The client's address, known per connection and given to each of its requests.
    peer: SocketAddr,
    body_timeout: Duration,
}

impl Dispatch {
    /// The service of the connection from `peer`, whose requests share `conn`.
    pub fn new(
        app: Arc<App>,
        router: Router,
        conn: Arc<ConnState>,
        peer: SocketAddr,
        body_timeout: Duration,
    ) -> Self {
        Dispatch {
            app,
            router,
            conn,
            peer,
            body_timeout,
        }
    }
}

type Handled = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Sending>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let (in_flight, seq) = self.conn.begin();
        let (mut parts, body) = req.into_parts();
        // Handlers that need the client's address (per-address limits) read it as axum's.
        parts.extensions.insert(ConnectInfo(self.peer));
        // Only a body still to come can stall; a request without one is left as it is.
        let (body, watch) = if body.is_end_stream() {
            (Body::new(body), None)
        } else {
            let watch = BodyWatch {
                seq,
                flavor: ApiFlavor::of_path(parts.uri.path()),
                close: parts.version < Version::HTTP_2,
                timeout: self.body_timeout,
            };
            let body = ClientBody::new(body, self.body_timeout, self.conn.clone(), seq);
            (Body::new(body), Some(watch))
        };
        let req = Request::from_parts(parts, body);
        let handled: Handled = if crate::route::is_api_path(req.uri().path()) {
            let app = self.app.clone();
            let head = req.method() == axum::http::Method::HEAD;
            Box::pin(async move {
                let res = crate::handle(State(app), req).await;
                Ok(if head { without_body(res) } else { res })
            })
        } else {
            Box::pin(self.router.clone().oneshot(req))
        };
        Answer {
            handled,
            in_flight: Some(in_flight),
            watch,
        }
    }
}

/// An answer to `HEAD`: its headers, no body. hyper drops the body of such an answer over
/// HTTP/1.1 but sends it over HTTP/2, where the client's h2 library resets the stream as a
/// protocol error; axum's routes drop it themselves, the API routes served here did not.
fn without_body(res: Response<Body>) -> Response<Body> {
    let (parts, _) = res.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// What is needed to answer 408 if a request's body times out.
#[derive(Debug, Clone, Copy)]
struct BodyWatch {
    seq: u64,
    flavor: ApiFlavor,
    /// HTTP/1.x: the connection closes after the answer (the rest of the body never came).
    close: bool,
    timeout: Duration,
}

/// The response of [`Dispatch`]: the handler's, or a 408 if the request's body timed out
/// (whatever the handler made of the error, the client's body was cut short).
pub struct Answer {
    handled: Handled,
    in_flight: Option<InFlight>,
    watch: Option<BodyWatch>,
}

impl Future for Answer {
    type Output = Result<Response<Sending>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(mut res) = ready!(this.handled.as_mut().poll(cx));
        let in_flight = this.in_flight.take();
        if let (Some(watch), Some(in_flight)) = (this.watch, &in_flight) {
            if in_flight.conn().did_body_time_out(watch.seq) {
                res = body_timed_out(watch);
            }
        }
        Poll::Ready(Ok(res.map(|body| Sending {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// The 408 for a request whose body stalled.
fn body_timed_out(watch: BodyWatch) -> Response<Body> {
    let message = BodyTimedOut {
        waited: watch.timeout,
    }
    .to_string();
    tracing::info!(status = 408, "request refused: {message}");
    let mut res =
        error_response(watch.flavor, StatusCode::REQUEST_TIMEOUT, &message).map(Body::from);
    if watch.close {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// A response body on its way to the client: its request counts as in progress on the
/// connection until hyper has sent it and drops it.
pub struct Sending {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl http_body::Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection type served: stops through hyper-util's graceful shutdown.
pub type Served = hyper_util::server::conn::auto::UpgradeableConnection<
    'static,
    ClientIo,
    Dispatch,
    hyper_util::rt::TokioExecutor,
>;

impl Graceful for Served {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        Served::graceful_shutdown(self);
    }
}
