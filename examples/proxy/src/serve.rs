//! The HTTP server: the API routes go straight to the proxy's handler; everything else (the
//! admin API, the web admin, unknown paths) to the axum router.
//!
//! The API routes are the hot path: skipping the router saves its route lookup, the path
//! parameters it stores in each request and a boxed service call per request (see
//! docs/performance.md). HTTP/1.1 and HTTP/2 (prior knowledge) are served on the same port, as
//! `axum::serve` serves them; on shutdown the listener closes, each connection finishes the
//! request it is serving, and `serve` returns once every connection has ended.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::state::App;

/// Serves `listener` until `shutdown` completes, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let dispatch = Dispatch { app, router };
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // TCP_NODELAY: a response goes out as several writes (head, then body frames as the
        // upstream sends them); with Nagle each later write waits for the client's delayed
        // ACK, about 40 ms per request.
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), dispatch.clone())
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An `accept` failure: a connection that went away before it was accepted is nothing; running
/// out of file descriptors (or memory) pauses accepting for a moment instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's service: the API routes to the handler, the rest to the router.
#[derive(Clone)]
struct Dispatch {
    app: Arc<App>,
    router: Router,
}

type DispatchFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let req = req.map(Body::new);
        if crate::is_api_path(req.uri().path()) {
            let app = self.app.clone();
            Box::pin(async move { Ok(crate::handle(State(app), req).await) })
        } else {
            Box::pin(self.router.clone().oneshot(req))
        }
    }
}
