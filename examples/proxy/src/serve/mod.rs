//! The HTTP server: the API routes go straight to the proxy's handler; everything else (the
//! admin API, the web admin, unknown paths) to the axum router.
//!
//! The API routes are the hot path: skipping the router saves its route lookup, the path
//! parameters it stores in each request and a boxed service call per request (see
//! docs/performance.md). HTTP/1.1 and HTTP/2 (prior knowledge) are served on the same port, as
//! `axum::serve` serves them.
//!
//! Every connection is bounded (docs/proxy.md, "What the server guarantees"): a deadline for
//! its first request head, between requests and for the client to take what is sent
//! ([`connection`]), between the frames of a request body and on its average rate
//! ([`client_body`]), a cap on open connections ([`limits`]) and on HTTP/2 streams per
//! connection, and a bounded shutdown: the listener closes, connections with nothing in
//! progress close at once, the others finish their requests until SHUTDOWN_TIMEOUT, and then
//! everything is closed.

mod client_body;
mod connection;
mod dispatch;
mod limits;
mod parse_errors;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::client_body::BodyDeadlines;
use self::connection::{ConnState, Ended, Timeouts, Watched};
use self::dispatch::Dispatch;
use self::limits::{FileLimit, OpenConnections, Refusals, Slot};
use self::parse_errors::{ClientIo, MAX_HEAD_BYTES};
use crate::settings::Settings;
use crate::state::App;

/// HTTP/2: a PING after this long without a frame from the client...
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// ...and the connection is closed if the answer takes longer than this: a client that
/// vanished without closing its connection is noticed even while a stream is open.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes of a response the kernel may hold unsent for a client (TCP_NOTSENT_LOWAT, Linux).
///
/// The send timeout counts a client as taking what is sent each time the socket takes a write
/// after refusing one, and the kernel only says so once the unsent bytes fall below half this
/// mark. Without it, the mark is a third of the send buffer, which Linux grows to 4 MiB: a
/// client reading 20 KB/s could then take nothing visible for a minute. With it, each 32 KiB
/// the client takes is seen, and the rest of a large answer waits in hyper's buffer, where
/// the connection counts it as still being sent. Small answers go out in one write as before.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 64 * 1024;
/// HTTP/2: streams a client may have open at once on one connection (hyper's default is 200).
///
/// Each stream's request body may be buffered whole by the retry layer (up to 20 MiB), so this
/// bounds what one connection can make the proxy hold: 32 × 20 MiB instead of 200 × 20 MiB.
/// Thirty-two is more than the SDKs and reverse proxies in front of the proxy use on one
/// connection; a client that wants more waits for a stream to end or opens another connection,
/// as HTTP/2 clients do (nginx advertises 128, Go 250: they hold no request body whole).
const H2_MAX_CONCURRENT_STREAMS: u32 = 32;

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

/// The bounds kept on client connections (startup settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CLIENT_HEADER_TIMEOUT: for a new connection's first complete request head.
    pub header_timeout: Duration,
    /// CLIENT_IDLE_TIMEOUT: for the next request, from the end of the previous response.
    pub idle_timeout: Duration,
    /// CLIENT_SEND_TIMEOUT: for the client to take more of what is sent to it.
    pub send_timeout: Duration,
    /// CLIENT_BODY_TIMEOUT: for each wait on the client while reading a request body.
    pub body_timeout: Duration,
    /// CLIENT_BODY_MIN_RATE: bytes a second a request body must average after the first
    /// CLIENT_BODY_TIMEOUT (0: no minimum).
    pub body_min_rate: u64,
    /// MAX_CONNECTIONS, or its default from the open-file limit.
    pub max_connections: usize,
    /// SHUTDOWN_TIMEOUT: how long requests in progress get to finish on shutdown.
    pub shutdown_timeout: Duration,
}

impl Limits {
    /// The limits `settings` set. MAX_CONNECTIONS=0 takes what the open-file limit leaves
    /// room for; a larger value than that is kept, with a warning.
    pub fn from_settings(settings: &Settings) -> Limits {
        let seconds =
            |name: &str| Duration::from_secs(u64::try_from(settings.int(name)).unwrap_or(0));
        let files = FileLimit::current();
        let room = files.connections();
        let max_connections = match usize::try_from(settings.int("MAX_CONNECTIONS")) {
            Ok(0) | Err(_) => room,
            Ok(n) => {
                if n > room {
                    tracing::warn!(
                        max_connections = n,
                        open_file_limit = ?files,
                        "MAX_CONNECTIONS is more than the open-file limit leaves room for (about {room} connections, two files each): past that, connections fail to be accepted and upstream calls fail; raise the limit (ulimit -n, LimitNOFILE=) or lower MAX_CONNECTIONS"
                    );
                }
                n
            }
        };
        Limits {
            header_timeout: seconds("CLIENT_HEADER_TIMEOUT"),
            idle_timeout: seconds("CLIENT_IDLE_TIMEOUT"),
            send_timeout: seconds("CLIENT_SEND_TIMEOUT"),
            body_timeout: seconds("CLIENT_BODY_TIMEOUT"),
            body_min_rate: u64::try_from(settings.int("CLIENT_BODY_MIN_RATE")).unwrap_or(0),
            max_connections,
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT"),
        }
    }
}

/// What a serving thread needs to serve a connection.
#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    router: Router,
    limits: Limits,
}

/// A connection accepted on the main thread, on its way to a serving thread.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

/// Serves `listener` until `shutdown` completes, then drains the open connections (at most
/// SHUTDOWN_TIMEOUT).
///
/// Connections are accepted here and handed round-robin to [`serving_threads`] threads, each
/// with its own single-threaded runtime and upstream connection pool: a request is served on
/// one thread from start to end, with no wake-ups across threads and no work stealing (see
/// docs/performance.md, "Proxy throughput").
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Shared {
        app,
        router,
        limits,
    };
    let open = OpenConnections::new(limits.max_connections);
    let mut refusals = Refusals::new(open.max());
    // A thread's runtime also runs the connection tasks of the upstream clients it opened
    // (reqwest's, for PROXIES and image URLs, are shared by all threads): each runtime lives on
    // until every thread has drained, so no thread's requests lose a connection under them.
    let (release, released) = tokio::sync::watch::channel(false);
    let mut shards = Vec::new();
    for index in 1..=serving_threads() {
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let shared = shared.clone();
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
                        serve_shard(rx, shared).await;
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
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_shard(rx, shared).await;
            let _ = done_tx.send(());
        });
        shards.push((tx, done_rx));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = open.try_open() else {
            refusals.refuse(stream);
            continue;
        };
        // TCP_NODELAY: a response goes out as several writes (head, then body frames as the
        // upstream sends them); with Nagle each later write waits for the client's delayed
        // ACK, about 40 ms per request.
        let _ = stream.set_nodelay(true);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        // In turn; past a thread that has ended (it cannot take connections any more).
        let mut accepted = Accepted { stream, peer, slot };
        for _ in 0..shards.len() {
            next = (next + 1) % shards.len();
            match shards[next].0.send(accepted) {
                Ok(()) => break,
                Err(unsent) => accepted = unsent.0,
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
/// drains them: those with no request in progress close at once, the others get until
/// SHUTDOWN_TIMEOUT.
async fn serve_shard(mut accepted: mpsc::UnboundedReceiver<Accepted>, shared: Shared) {
    let limits = shared.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Bounds the memory a slow or hostile head can take (hyper's default is ~400 KiB).
        .max_buf_size(MAX_HEAD_BYTES)
        // The connection's own watchdog keeps the deadlines (see `connection`): hyper's would
        // also box a new timer per request.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
    };
    let body_deadlines = BodyDeadlines {
        timeout: limits.body_timeout,
        min_rate: limits.body_min_rate,
    };
    // One stop signal per connection; those of ended connections are dropped as the list
    // grows.
    let mut stops: Vec<oneshot::Sender<Instant>> = Vec::new();
    // Each connection task holds a sender: `recv` returns `None` once all have ended.
    let (alive, mut all_ended) = mpsc::channel::<Infallible>(1);
    while let Some(Accepted { stream, peer, slot }) = accepted.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let conn = Arc::new(ConnState::new());
        // `open_connections` of /metrics, until the connection's task ends.
        let open = shared.app.metrics.connection_opened();
        let (stop, stopped) = oneshot::channel();
        if stops.len() == stops.capacity() {
            stops.retain(|stop| !stop.is_closed());
        }
        stops.push(stop);
        let service = Dispatch::new(
            shared.app.clone(),
            shared.router.clone(),
            conn.clone(),
            peer,
            body_deadlines,
        );
        let served = builder
            .serve_connection_with_upgrades(ClientIo::new(stream, conn.clone()), service)
            .into_owned();
        let watched = Watched::new(served, conn, timeouts, stopped);
        let alive = alive.clone();
        tokio::spawn(async move {
            match watched.await {
                Ended::Served(Err(e)) => {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                Ended::TimedOut => tracing::debug!(
                    %peer,
                    "closed a connection that waited too long with no request in progress"
                ),
                Ended::SendTimedOut => tracing::debug!(
                    %peer,
                    "closed a connection whose client took nothing of what was sent to it for CLIENT_SEND_TIMEOUT"
                ),
                Ended::Served(Ok(())) | Ended::Stopped => {}
            }
            drop((slot, alive, open));
        });
    }
    let deadline = Instant::now() + limits.shutdown_timeout;
    for stop in stops {
        let _ = stop.send(deadline);
    }
    drop(alive);
    let _ = all_ended.recv().await;
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
