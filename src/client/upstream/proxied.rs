//! Routes through an outbound proxy: a pooled `reqwest::Client` per proxy (reqwest speaks HTTP
//! and HTTPS proxies, forwarding plain requests and tunnelling TLS with `CONNECT`, and SOCKS5),
//! built once, so connections to a proxy are reused like direct ones.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;

use super::Timeouts;
use crate::BoxError;

/// Proxy URL schemes a route can use.
const SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// A proxy URL that cannot be used. Never holds the URL, which may carry a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxy {
    expected: String,
}

impl InvalidProxy {
    /// What a proxy URL must look like, written to follow the word "expected" in a message of
    /// your own (such as `PROXIES: expected a proxy URL with a host`).
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid proxy URL: expected {}", self.expected)
    }
}

impl std::error::Error for InvalidProxy {}

/// Checks a proxy URL the way [`Builder::proxies`](super::Builder::proxies) reads it:
/// `http://`, `https://`, `socks5://` or `socks5h://`, with a host, credentials optional
/// (`http://user:password@host:port`).
///
/// ```
/// use gemini_balance::client::upstream::check_proxy_url;
///
/// assert!(check_proxy_url("socks5h://user:pw@127.0.0.1:1080").is_ok());
/// let err = check_proxy_url("ftp://secret@host").unwrap_err();
/// assert!(!err.to_string().contains("secret"));
/// ```
pub fn check_proxy_url(url: &str) -> Result<(), InvalidProxy> {
    parse(url).map(drop)
}

/// A proxy URL as a reqwest proxy; the error never repeats the URL.
fn parse(url: &str) -> Result<reqwest::Proxy, InvalidProxy> {
    let expected = |what: String| InvalidProxy { expected: what };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !scheme.as_deref().is_some_and(|s| SCHEMES.contains(&s)) {
        return Err(expected(format!(
            "a proxy URL starting with {}",
            SCHEMES
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| expected(format!("a valid proxy URL ({e})")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(expected("a proxy URL with a host".to_owned()));
    }
    reqwest::Proxy::all(parsed).map_err(|_| expected("a proxy URL that can be used".to_owned()))
}

/// The pooled client of one proxy: the connect timeout, the idle timeout per read, the default
/// headers, and the TLS configuration the direct route uses. The error never repeats the URL.
pub(super) fn client(
    url: &str,
    headers: &HeaderMap,
    timeouts: Timeouts,
    tls: &rustls::ClientConfig,
) -> Result<reqwest::Client, String> {
    let proxy = parse(url).map_err(|e| format!("expected {}", e.expected))?;
    let mut tls = tls.clone();
    // reqwest uses a preconfigured TLS client as it is: HTTP/2 where the upstream offers it.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .default_headers(headers.clone())
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .tls_backend_preconfigured(tls)
        .proxy(proxy)
        .build()
        // reqwest's builder errors name what failed (TLS setup), not the proxy's URL.
        .map_err(|e| format!("the client could not be built ({e})"))
}

pin_project! {
    /// Any request body as reqwest takes it (`Send + Sync`): reqwest needs `Sync`, which
    /// axum's body is not; the wrapper only hands the body out by `&mut`, which makes it `Sync`.
    pub(super) struct SyncBody<B> {
        #[pin]
        inner: SyncWrapper<B>,
        // Taken when wrapped: `&self` methods cannot reach into the wrapper.
        hint: SizeHint,
        ended: bool,
    }
}

impl<B: Body> SyncBody<B> {
    pub(super) fn new(body: B) -> Self {
        SyncBody {
            hint: body.size_hint(),
            ended: body.is_end_stream(),
            inner: SyncWrapper::new(body),
        }
    }
}

impl<B> Body for SyncBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.get_pin_mut().poll_frame(cx));
        match &frame {
            None => *this.ended = true,
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    let n = data.len() as u64;
                    let lower = this.hint.lower().saturating_sub(n);
                    match this.hint.upper() {
                        Some(upper) => {
                            *this.hint = SizeHint::new();
                            this.hint.set_upper(upper.saturating_sub(n));
                            this.hint.set_lower(lower.min(upper.saturating_sub(n)));
                        }
                        None => this.hint.set_lower(lower),
                    }
                }
            }
            Some(Err(_)) => {}
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
