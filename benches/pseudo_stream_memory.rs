//! Memory per waiting pseudo stream: streams whose upstream never answers, each polled once so
//! that every layer (PseudoStream → Usage → ParamFilter → Retry → KeyRotation) sits in its
//! waiting state with its timer armed, measured as growth of the process's resident memory
//! (VmRSS).
//!
//! `cargo bench --bench pseudo_stream_memory` opens 1,000 streams, then 1,000 more, per
//! protocol, and prints the growth per stream for each step (the second step excludes one-time
//! costs). Under `cargo test --benches` it runs a few streams only, to check it still works.
//! Linux only (reads `/proc/self/status`). Figures go to `docs/performance.md`.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::UsageLayer;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn request(openai: bool, i: usize) -> Request<Full<Bytes>> {
    let prompt = format!("Question {i}: what is the capital of France? Please answer briefly.");
    if openai {
        let body = serde_json::json!({
            "model": "gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": prompt}], "temperature": null
        });
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default()
    } else {
        let body = serde_json::json!({
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"temperature": null, "maxOutputTokens": 256}
        });
        Request::post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default()
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1000 } else { 20 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = KeyPool::builder()
            .keys([
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "AIzaSyB1234567890abcdefghijklmnopqrstuv",
            ])
            .build()
            .expect("keys");
        // The upstream never answers: every stream waits, sending keep-alives.
        let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        });
        let service = ServiceBuilder::new()
            .layer(PseudoStreamLayer::new())
            .layer(UsageLayer::new(MemoryStore::new()))
            .layer(ParamFilterLayer::new())
            .layer(RetryLayer::new())
            .layer(KeyRotationLayer::new(pool))
            .service(upstream);

        {
            let mut probe = service.clone();
            let future = probe.call(request(false, 0));
            println!(
                "size of the response future: {} bytes; of the response body type: {} bytes",
                std::mem::size_of_val(&future),
                response_body_size(&future),
            );
        }

        // Warm up lazily initialised state (timer wheel, tracing, allocator arenas) with a few.
        let warm = open(&service, false, 10).await;
        drop(warm);

        // The pseudo-stream layer alone, straight over the upstream.
        let alone = ServiceBuilder::new()
            .layer(PseudoStreamLayer::new())
            .service(upstream);

        // Every stream stays open to the end, so no measurement reuses memory another freed.
        let mut open_streams = Vec::new();
        for openai in [false, true] {
            measure(&service, "full stack", openai, n, &mut open_streams).await;
        }
        for openai in [false, true] {
            measure(&alone, "PseudoStream alone", openai, n, &mut open_streams).await;
        }
        drop(open_streams);
    });
}

/// Opens `n` streams, then `n` more, and prints the memory growth per stream of each step.
async fn measure<S, B>(
    service: &S,
    stack: &str,
    openai: bool,
    n: usize,
    keep: &mut Vec<Vec<Box<dyn std::any::Any>>>,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body + 'static,
{
    let api = if openai {
        "OpenAI chat/completions"
    } else {
        "Gemini streamGenerateContent"
    };
    let start = rss_kib();
    let first = open(service, openai, n).await;
    let after_first = rss_kib();
    let second = open(service, openai, n).await;
    let after_second = rss_kib();
    match (start, after_first, after_second) {
        (Some(a), Some(b), Some(c)) => println!(
            "{api} ({stack}): {n} waiting streams: +{} KiB ({:.0} bytes/stream); {n} more: +{} KiB ({:.0} bytes/stream)",
            b.saturating_sub(a),
            b.saturating_sub(a) as f64 * 1024.0 / n as f64,
            c.saturating_sub(b),
            c.saturating_sub(b) as f64 * 1024.0 / n as f64,
        ),
        _ => println!("{api} ({stack}): VmRSS is not available on this platform"),
    }
    assert!(first.iter().chain(&second).all(|b| !b.is_end_stream()));
    keep.push(erase(first));
    keep.push(erase(second));
}

/// Keeps streams of any body type in one list.
fn erase<B: Body + 'static>(streams: Vec<Pin<Box<B>>>) -> Vec<Box<dyn std::any::Any>> {
    streams
        .into_iter()
        .map(|b| Box::new(b) as Box<dyn std::any::Any>)
        .collect()
}

fn response_body_size<F, B, E>(_: &F) -> usize
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    std::mem::size_of::<B>()
}

/// Opens `n` streams and polls each once, so each waits on its upstream and its keep-alive.
async fn open<S, B>(service: &S, openai: bool, n: usize) -> Vec<Pin<Box<B>>>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
{
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(res) = service.clone().oneshot(request(openai, i)).await else {
            panic!("the layer answers");
        };
        let mut body = Box::pin(res.into_body());
        poll_fn(|cx| {
            let polled = body.as_mut().poll_frame(cx);
            assert!(polled.is_pending(), "the stream waits");
            Poll::Ready(())
        })
        .await;
        streams.push(body);
    }
    streams
}
