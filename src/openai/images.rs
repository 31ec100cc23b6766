//! Fetching the `image_url` images of OpenAI chat requests (`http://` and `https://` URLs),
//! refusing what would turn the server into a way into its own network.
//!
//! [`UrlFetcher`] is an [`ImageFetcher`] for [`OpenAiLayer::image_fetcher`](super::OpenAiLayer::image_fetcher). A naive fetch
//! (Gemini-Balance's Python server did a blocking `requests.get`) has no size or time limit and
//! reaches any address, the server's own network and cloud metadata endpoints included. Here a
//! fetch is async and bounded:
//!
//! - at most [`MAX_IMAGE_BYTES`] are read (the body is dropped as soon as it goes past them);
//! - the whole fetch, redirects and body included, must end within [`FETCH_TIMEOUT`];
//! - at most [`MAX_REDIRECTS`] redirects, each target checked like the first URL;
//! - the answer must be `2xx` with an `image/*` content type, which becomes the `mimeType`;
//! - unless [`allow_private_networks`](UrlFetcherBuilder::allow_private_networks) is set,
//!   addresses that are not public (loopback, private, link-local, unspecified, shared,
//!   multicast…) are refused. Host names are checked in the client's DNS resolver, so the
//!   address checked is the address connected to (no second lookup a DNS server could answer
//!   differently); IP literals are checked before each request and each redirect.
//!
//! Errors are short sentences the OpenAI layer puts into its 400 answer after the URL.
//! `https://` URLs need a TLS feature of reqwest enabled in your build (such as `rustls`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use gemini_balance::openai::{images::UrlFetcher, ChatOptions, ImageFetcher, OpenAiLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The workspace builds reqwest with rustls and no default crypto provider.
//! # let _ = rustls::crypto::ring::default_provider().install_default();
//! let fetcher = UrlFetcher::builder().build()?;
//! // A loopback (or private, or metadata) address is refused before anything is sent.
//! let refused = fetcher.fetch("http://127.0.0.1:8080/cat.png").await.unwrap_err();
//! assert!(refused.contains("loopback"), "{refused}");
//!
//! let openai = OpenAiLayer::new(ChatOptions::default()).image_fetcher(Arc::new(fetcher));
//! # let _ = openai;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{FetchFuture, FetchedImage, ImageFetcher};
use base64::Engine;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;

/// Largest image fetched. Gemini takes at most 20 MB of inline data per request, and base64
/// grows an image by a third, so a larger image could not be sent on anyway.
pub const MAX_IMAGE_BYTES: usize = 14 * 1024 * 1024;

/// Longest time one image fetch may take, from connecting to the last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Most redirects followed for one image.
pub const MAX_REDIRECTS: usize = 3;

/// An [`ImageFetcher`] over a pooled HTTP client with the limits above; see the
/// [module docs](self). Cheap to clone: clones share the client.
#[derive(Clone)]
pub struct UrlFetcher {
    client: reqwest::Client,
    allow_private: bool,
}

impl fmt::Debug for UrlFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlFetcher")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// Builds a [`UrlFetcher`]; see [`UrlFetcher::builder`].
#[derive(Debug, Clone)]
pub struct UrlFetcherBuilder {
    allow_private: bool,
    user_agent: HeaderValue,
}

impl UrlFetcherBuilder {
    /// Lets image URLs reach addresses that are not public (default: refused). Only for a
    /// server whose clients are trusted, or whose network holds nothing to protect.
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// The `User-Agent` of image requests (default `gemini-balance/<version>`).
    pub fn user_agent(mut self, value: HeaderValue) -> Self {
        self.user_agent = value;
        self
    }

    /// The fetcher; fails only if reqwest cannot build its client (its TLS setup).
    pub fn build(self) -> Result<UrlFetcher, reqwest::Error> {
        let allow_private = self.allow_private;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match check_url(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(Refused(format!("redirected: {refused}"))),
            }
        });
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(self.user_agent);
        if !allow_private {
            builder = builder.dns_resolver(PublicOnly);
        }
        Ok(UrlFetcher {
            client: builder.build()?,
            allow_private,
        })
    }
}

/// Why an address or URL is refused; shown to the client.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl UrlFetcher {
    /// A builder: public addresses only, the limits of the [module docs](self).
    pub fn builder() -> UrlFetcherBuilder {
        UrlFetcherBuilder {
            allow_private: false,
            user_agent: HeaderValue::from_static(concat!(
                "gemini-balance/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }

    async fn get(&self, url: &str) -> Result<FetchedImage, String> {
        let url = Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
        check_url(&url, self.allow_private).map_err(|r| r.0)?;
        let mut response = self.client.get(url).send().await.map_err(describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let mime = image_type(response.headers().get(CONTENT_TYPE))?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_IMAGE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Err("the image is empty".to_owned());
        }
        Ok(FetchedImage {
            mime_type: mime,
            base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        })
    }
}

impl ImageFetcher for UrlFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
        Box::pin(self.get(url))
    }
}

fn too_large() -> String {
    format!(
        "the image is larger than {} MiB",
        MAX_IMAGE_BYTES / (1024 * 1024)
    )
}

/// The `image/*` media type of a `Content-Type`, lower-cased, without parameters.
fn image_type(value: Option<&HeaderValue>) -> Result<String, String> {
    let raw = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix("image/") {
        Some("jpg") => Ok("image/jpeg".to_owned()),
        Some(sub) if !sub.is_empty() => Ok(essence),
        _ if raw.is_empty() => Err("the answer has no content type (expected image/*)".to_owned()),
        _ => Err(format!("the answer is {essence}, not an image")),
    }
}

/// Scheme and, for IP literals, address checks of a URL about to be requested.
fn check_url(url: &Url, allow_private: bool) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "only http and https URLs are fetched, not {}",
            url.scheme()
        )));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(Refused("the URL has no host".to_owned()));
    };
    // IP literals (IPv6 in brackets) are connected to as they are; names go to the resolver.
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    match (allow_private, non_public(ip)) {
        (false, Some(kind)) => Err(refused_address(ip, kind)),
        _ => Ok(()),
    }
}

fn refused_address(ip: IpAddr, kind: &str) -> Refused {
    Refused(format!(
        "{ip} is a {kind} address, which image URLs may not reach"
    ))
}

/// What kind of non-public address `ip` is; `None` for a public one.
fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return non_public_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xff00 == 0xff00 {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("reserved")
    } else if a == 198 && (b & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(v4()),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(v4()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4()),
        _ => None,
    }
}

/// A DNS resolver that answers only public addresses, so a host name cannot lead the fetch into
/// the server's own network.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let public: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match non_public(addr.ip()) {
                    Some(kind) => {
                        refused.get_or_insert((addr.ip(), kind));
                        false
                    }
                    None => true,
                })
                .collect();
            match refused {
                // One non-public answer is enough to refuse: a name that mixes them is a trick.
                Some((ip, kind)) => Err(Box::new(Refused(format!(
                    "{host} resolves to {}",
                    refused_address(ip, kind)
                )))
                    as Box<dyn std::error::Error + Send + Sync>),
                None if public.is_empty() => {
                    Err(Box::new(Refused(format!("{host} has no address")))
                        as Box<dyn std::error::Error + Send + Sync>)
                }
                None => Ok(Box::new(public.into_iter()) as Addrs),
            }
        })
    }
}

/// A client error as a short sentence: the refusal when there is one, else what failed.
fn describe(err: reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        source = e.source();
    }
    if err.is_timeout() {
        format!(
            "the fetch took longer than {} seconds",
            FETCH_TIMEOUT.as_secs()
        )
    } else if err.is_connect() {
        "the server could not be reached".to_owned()
    } else if err.is_body() || err.is_decode() {
        "the image could not be read".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("142.250.185.78", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("0.0.0.0", false),
            ("100.64.0.1", false),
            ("100.128.0.1", true),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("2001:4860:4860::8888", true),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::10.0.0.1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(ip).is_none(), public, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let check = |u: &str, allow| check_url(&Url::parse(u).unwrap(), allow);
        assert!(check("http://127.0.0.1:8080/a.png", false).is_err());
        assert!(check("http://[::1]/a.png", false).is_err());
        assert!(check("http://127.0.0.1:8080/a.png", true).is_ok());
        assert!(check("https://example.com/a.png", false).is_ok());
        assert!(check("file:///etc/passwd", true).is_err());
        assert!(check("ftp://example.com/a.png", true).is_err());
    }

    #[test]
    fn content_types() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(image_type(Some(&h("image/png"))).unwrap(), "image/png");
        assert_eq!(
            image_type(Some(&h("Image/JPG; charset=binary"))).unwrap(),
            "image/jpeg"
        );
        assert!(image_type(Some(&h("text/html; charset=utf-8")))
            .unwrap_err()
            .contains("text/html"));
        assert!(image_type(Some(&h("image/"))).is_err());
        assert!(image_type(None).is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fetcher = UrlFetcher::builder().build().unwrap();
        // `localhost` resolves to loopback: refused in the resolver, before any connection.
        let err = fetcher.get("http://localhost:9/a.png").await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
    }
}
