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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::state::App;

thread_local! {
    /// Which serving thread this is: `1..=threads`, or 0 on any other thread.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The serving thread the caller runs on (`1..=serving_threads()`), or 0 on any other thread:
/// per-thread state (the upstream connection pools) is indexed by it.
pub fn shard() -> usize {
    SHARD.with(std::cell::Cell::get)
}

static SERVING_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// How many threads serve connections: `TOKIO_WORKER_THREADS` when set, else one per core.
pub fn serving_threads() -> usize {
    *SERVING_THREADS.get_or_init(|| {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Serves `listener` until `shutdown` completes, then drains the open connections.
///
/// Connections are accepted here and handed round-robin to [`serving_threads`] threads, each
/// with its own single-threaded runtime and upstream connection pool: a request is served on
/// one thread from start to end, with no wake-ups across threads and no work stealing (see
/// docs/performance.md, "Proxy throughput").
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let dispatch = Dispatch {
        app,
        router,
        peer: None,
    };
    // A thread's runtime also runs the connection tasks of the upstream clients it opened
    // (reqwest's, for PROXIES and image URLs, are shared by all threads): each runtime lives on
    // until every thread has drained, so no thread's requests lose a connection under them.
    let (release, released) = tokio::sync::watch::channel(false);
    let mut shards = Vec::new();
    for index in 1..=serving_threads() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let dispatch = dispatch.clone();
        let mut released = released.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                SHARD.with(|s| s.set(index));
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(async move {
                        serve_shard(rx, dispatch).await;
                        let _ = done_tx.send(());
                        let _ = released.wait_for(|released| *released).await;
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "a serving thread could not start");
                        let _ = done_tx.send(());
                    }
                }
            });
        match spawned {
            Ok(_) => shards.push((tx, done_rx)),
            Err(e) => tracing::error!(error = %e, "a serving thread could not start"),
        }
    }
    if shards.is_empty() {
        // No thread could be started: serve on this runtime rather than not at all.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let dispatch = dispatch.clone();
        tokio::spawn(async move {
            serve_shard(rx, dispatch).await;
            let _ = done_tx.send(());
        });
        shards.push((tx, done_rx));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
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
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        // In turn; past a thread that has ended (it cannot take connections any more).
        let mut stream = stream;
        for _ in 0..shards.len() {
            next = (next + 1) % shards.len();
            match shards[next].0.send(stream) {
                Ok(()) => break,
                Err(unsent) => stream = unsent.0,
            }
        }
    }
    drop(listener);
    let mut done = Vec::new();
    for (tx, done_rx) in shards {
        drop(tx);
        done.push(done_rx);
    }
    for done_rx in done {
        let _ = done_rx.await;
    }
    let _ = release.send(true);
}

/// One serving thread: serves the connections handed to it until the sender closes, then
/// drains them.
async fn serve_shard(
    mut streams: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    dispatch: Dispatch,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    while let Some(stream) = streams.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let service = Dispatch {
            peer: stream.peer_addr().ok(),
            ..dispatch.clone()
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
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

/// One connection's service: the API routes to the handler, the rest to the router. Every
/// request carries the connection's peer as `ConnectInfo<SocketAddr>` (failed
/// authentications are counted per client address).
#[derive(Clone)]
struct Dispatch {
    app: Arc<App>,
    router: Router,
    peer: Option<SocketAddr>,
}

type DispatchFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        if crate::is_api_path(req.uri().path()) {
            let app = self.app.clone();
            Box::pin(async move { Ok(crate::handle(State(app), req).await) })
        } else {
            Box::pin(self.router.clone().oneshot(req))
        }
    }
}
