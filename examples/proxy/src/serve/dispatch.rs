//! One connection's service: a mistaken path fixed (URL_NORMALIZATION_ENABLED), the API routes
//! to the handler (behind CORS for a browser's request), the rest to the router; every
//! request counted in progress on its connection until its response is sent, its body read
//! under CLIENT_BODY_TIMEOUT and CLIENT_BODY_MIN_RATE, and the client's address attached.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use axum::Router;
use bytes::Bytes;
use gemini_balance::api_error::{error_response, ApiFlavor};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tower::{Layer, Service, ServiceExt};

use super::client_body::{BodyDeadlines, BodyTimedOut, ClientBody, Cut, TimeoutSlot};
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
    body_deadlines: BodyDeadlines,
}

impl Dispatch {
    /// The service of the connection from `peer`, whose requests share `conn`.
    pub fn new(
        app: Arc<App>,
        router: Router,
        conn: Arc<ConnState>,
        peer: SocketAddr,
        body_deadlines: BodyDeadlines,
    ) -> Self {
        Dispatch {
            app,
            router,
            conn,
            peer,
            body_deadlines,
        }
    }
}

type Handled = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Sending>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let in_flight = self.conn.begin();
        let (mut parts, body) = req.into_parts();
        // Handlers that need the client's address (per-address limits) read it as axum's.
        parts.extensions.insert(ConnectInfo(self.peer));
        let http2 = parts.version == Version::HTTP_2;
        let (body, watch) = watch_body(&self.conn, &parts, body, self.body_deadlines);
        let req = Request::from_parts(parts, body);
        let mut routes = Routes {
            app: self.app.clone(),
            router: self.router.clone(),
        };
        // URL_NORMALIZATION_ENABLED: a mistaken path is fixed before anything reads it.
        let handled = match &self.app.live().normalize_url {
            Some(layer) => layer.layer(routes).call(req),
            None => routes.call(req),
        };
        Answer {
            handled,
            in_flight: Some(in_flight),
            watch,
            http2,
        }
    }
}

/// Where a request goes: the API routes to the handler (with CORS for a browser's request),
/// the rest to the router (admin API, web admin, 404).
#[derive(Clone)]
struct Routes {
    app: Arc<App>,
    router: Router,
}

impl tower::Service<Request<Body>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Handled;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Handled {
        if !crate::route::is_api_path(req.uri().path()) {
            return Box::pin(self.router.clone().oneshot(req));
        }
        let app = self.app.clone();
        let head = req.method() == axum::http::Method::HEAD;
        // Only a browser sends `Origin`: every other client is served without CORS headers.
        let cors = if req.headers().contains_key(header::ORIGIN) {
            app.live().cors.clone()
        } else {
            None
        };
        Box::pin(async move {
            let res = match cors {
                // A preflight is answered by the CORS layer itself (see `crate::cors`).
                Some(cors) => {
                    let handler = tower::service_fn(move |req: Request<Body>| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(crate::handle(State(app), req).await) }
                    });
                    cors.layer(handler).oneshot(req).await?
                }
                None => crate::handle(State(app), req).await,
            };
            Ok(if head { without_body(res) } else { res })
        })
    }
}

/// The body of a request of `conn` read under `deadlines`, with what its answer needs to
/// become a 408 if the body times out. Only a body still to come can stall; a request without
/// one is left as it is.
fn watch_body<B>(
    conn: &Arc<ConnState>,
    parts: &axum::http::request::Parts,
    body: B,
    deadlines: BodyDeadlines,
) -> (Body, Option<BodyWatch>)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<gemini_balance::BoxError>,
{
    if body.is_end_stream() {
        return (Body::new(body), None);
    }
    let slot = conn.body_timeouts().claim();
    let watch = slot.map(|slot| BodyWatch {
        slot,
        flavor: ApiFlavor::of_path(parts.uri.path()),
        close: parts.version < Version::HTTP_2,
        deadlines,
    });
    let body = ClientBody::new(body, deadlines, conn.clone(), slot);
    (Body::new(body), watch)
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
    /// Where its body records a timeout.
    slot: TimeoutSlot,
    flavor: ApiFlavor,
    /// HTTP/1.x: the connection closes after the answer (the rest of the body never came).
    close: bool,
    deadlines: BodyDeadlines,
}

/// The response of [`Dispatch`]: the handler's, or a 408 if the request's body timed out
/// (whatever the handler made of the error, the client's body was cut short).
pub struct Answer {
    handled: Handled,
    in_flight: Option<InFlight>,
    watch: Option<BodyWatch>,
    http2: bool,
}

impl Future for Answer {
    type Output = Result<Response<Sending>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Ok(mut res) = ready!(this.handled.as_mut().poll(cx));
        let in_flight = this.in_flight.take();
        if let (Some(watch), Some(in_flight)) = (this.watch.take(), &in_flight) {
            let timeouts = in_flight.conn().body_timeouts();
            if let Some(cut) = timeouts.recorded(watch.slot) {
                res = body_timed_out(watch, cut);
            }
            timeouts.release_answer(watch.slot);
        }
        Poll::Ready(Ok(res.map(|body| Sending {
            body,
            in_flight,
            http2: this.http2,
            rest: Bytes::new(),
            waiting: false,
        })))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // Dropped before its handler answered (the client went away).
        if let (Some(watch), Some(in_flight)) = (self.watch, &self.in_flight) {
            in_flight.conn().body_timeouts().release_answer(watch.slot);
        }
    }
}

/// The 408 for a request whose body stalled or came too slowly.
fn body_timed_out(watch: BodyWatch, cut: Cut) -> Response<Body> {
    let message = BodyTimedOut {
        cut,
        deadlines: watch.deadlines,
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

/// The largest piece of an HTTP/2 response body handed to hyper at once: one DATA frame of
/// the default size (SETTINGS_MAX_FRAME_SIZE, 16 KiB).
///
/// hyper holds a frame until the client's flow-control window has room for it and for every
/// byte before it, then asks for the next one; it drops the body once the last frame is handed
/// over, not sent. Handed over in pieces, an answer counts as in progress (and each piece asked
/// for as send progress) while the window opens; and an answer sent whole keeps its last byte
/// for a piece of its own, so that hyper lets go of the body only once the window has room for
/// all of it. A stream's last piece cannot be held back so (its end is only known once it has
/// been handed over): it may still wait on the window once the stream has ended.
const H2_PIECE: usize = 16 * 1024;

/// A response body on its way to the client: its request counts as in progress on the
/// connection until hyper has taken all of it and drops it.
///
/// HTTP/1.1 passes frames through untouched: hyper takes the next frame once it could write the
/// previous one, so a client that takes nothing shows on the socket ([`ClientIo`]). HTTP/2 hands
/// frames over in pieces ([`H2_PIECE`]) and counts each piece hyper holds as waiting on the
/// client, until hyper asks for the next one (send progress).
pub struct Sending {
    body: Body,
    in_flight: Option<InFlight>,
    http2: bool,
    /// HTTP/2: what is left of the body's latest frame.
    rest: Bytes,
    /// HTTP/2: a piece was handed over and hyper has not asked for the next one yet.
    waiting: bool,
}

impl Sending {
    /// The next piece of `rest`: at most [`H2_PIECE`], and the last byte of a body on its own.
    fn next_piece(&mut self) -> Bytes {
        let len = self.rest.len();
        let take = if len > H2_PIECE {
            H2_PIECE
        } else if len > 1 && self.body.is_end_stream() {
            len - 1
        } else {
            len
        };
        self.rest.split_to(take)
    }
}

impl http_body::Body for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if !this.http2 {
            return Pin::new(&mut this.body).poll_frame(cx);
        }
        if std::mem::take(&mut this.waiting) {
            if let Some(in_flight) = &this.in_flight {
                in_flight.conn().send_taken();
            }
        }
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    // Trailers: no flow control.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                end_or_error => return Poll::Ready(end_or_error),
            }
        }
        let piece = this.next_piece();
        if let Some(in_flight) = &this.in_flight {
            in_flight.conn().send_waiting();
            this.waiting = true;
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        if rest > 0 {
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(rest));
            }
            hint.set_lower(hint.lower().saturating_add(rest));
        }
        hint
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        // A piece hyper held when the stream ended (reset, or the connection closed).
        if self.waiting {
            if let Some(in_flight) = &self.in_flight {
                in_flight.conn().send_dropped();
            }
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::sync::oneshot;

    use super::*;

    const DEADLINES: BodyDeadlines = BodyDeadlines {
        timeout: Duration::from_secs(1),
        min_rate: 0,
    };

    /// A request body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    /// The answer to an HTTP/2 request of `conn` with a silent body, by `handler` (which gets
    /// the body and says the status).
    fn answer<F>(conn: &Arc<ConnState>, handler: impl FnOnce(Body) -> F) -> Answer
    where
        F: Future<Output = StatusCode> + Send + 'static,
    {
        let (parts, ()) = Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        let in_flight = conn.begin();
        let (body, watch) = watch_body(conn, &parts, Silent, DEADLINES);
        let handled = handler(body);
        Answer {
            handled: Box::pin(async move {
                let status = handled.await;
                Ok(Response::builder()
                    .status(status)
                    .body(Body::empty())
                    .unwrap())
            }),
            in_flight: Some(in_flight),
            watch,
            http2: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_body_timeouts_each_make_their_own_answer_a_408() {
        let conn = Arc::new(ConnState::new());
        // The first handler answers only after the second request's body has timed out too.
        let (go, first_may_answer) = oneshot::channel::<()>();
        let first = tokio::spawn(answer(&conn, |body| async move {
            assert!(body.collect().await.is_err());
            let _ = first_may_answer.await;
            StatusCode::BAD_REQUEST
        }));
        let second = tokio::spawn(answer(&conn, |body| async move {
            assert!(body.collect().await.is_err());
            StatusCode::BAD_REQUEST
        }));
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.status(), StatusCode::REQUEST_TIMEOUT);
        go.send(()).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_body_did_not_time_out_keeps_its_answer() {
        let conn = Arc::new(ConnState::new());
        let timed_out = tokio::spawn(answer(&conn, |body| async move {
            assert!(body.collect().await.is_err());
            StatusCode::BAD_REQUEST
        }));
        // Its body was never read: a slot of its own, nothing recorded in it.
        let untouched = answer(&conn, |_body| async move { StatusCode::OK });
        assert_eq!(
            timed_out.await.unwrap().unwrap().status(),
            StatusCode::REQUEST_TIMEOUT
        );
        assert_eq!(untouched.await.unwrap().status(), StatusCode::OK);
        // Every slot is free again.
        for _ in 0..32 {
            assert!(conn.body_timeouts().claim().is_some());
        }
        assert!(conn.body_timeouts().claim().is_none());
    }

    #[tokio::test]
    async fn an_http2_answer_is_handed_over_in_pieces_with_its_last_byte_last() {
        let conn = Arc::new(ConnState::new());
        let answer = answer_of(&conn, Body::from(vec![b'x'; 40_000]));
        let mut sending = std::pin::pin!(answer.await.unwrap().into_body());
        let mut pieces = Vec::new();
        while let Some(frame) = sending.frame().await {
            pieces.push(frame.unwrap().into_data().unwrap().len());
            // Each piece waits on the client until hyper asks for the next one.
            assert_eq!(conn.waiting_sends(), 1);
        }
        assert_eq!(pieces, [16_384, 16_384, 40_000 - 32_768 - 1, 1]);
        assert_eq!(conn.waiting_sends(), 0);
    }

    /// The answer `body` to an HTTP/2 request of `conn` without a body.
    fn answer_of(conn: &Arc<ConnState>, body: Body) -> Answer {
        Answer {
            handled: Box::pin(async move { Ok(Response::new(body)) }),
            in_flight: Some(conn.begin()),
            watch: None,
            http2: true,
        }
    }
}
