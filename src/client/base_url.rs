//! Where upstream requests go: a base URL that every request is pinned to, and the headers that
//! belong to the client's hop rather than to the upstream's.
//!
//! A request carrying a pool key must reach only the configured upstream: with a base URL set,
//! only the request's path and query are kept, so an absolute-form request
//! (`POST http://elsewhere/...`) cannot carry a key to another host.
//!
//! ```
//! use gemini_balance::client::BaseUrl;
//!
//! let base = BaseUrl::parse("https://generativelanguage.googleapis.com/v1beta/")?;
//! let uri = base.join(&"http://elsewhere.example/models?x=1".parse()?)?;
//! assert_eq!(uri, "https://generativelanguage.googleapis.com/v1beta/models?x=1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// An absolute `http`/`https` URL that requests are sent under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// The base's path without a trailing `/` (`/v1beta`); empty for none.
    prefix: String,
}

/// The base URL is not an absolute `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBaseUrl(String);

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid base URL {:?}: expected http(s)://host[:port][/path]",
            self.0
        )
    }
}

impl std::error::Error for InvalidBaseUrl {}

impl BaseUrl {
    /// Parses `http(s)://host[:port][/path]`; a trailing `/` is ignored.
    pub fn parse(base: &str) -> Result<BaseUrl, InvalidBaseUrl> {
        let invalid = || InvalidBaseUrl(base.to_owned());
        let uri: Uri = base.trim_end_matches('/').parse().map_err(|_| invalid())?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(invalid());
        };
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid());
        }
        let prefix = parts
            .path_and_query
            .map(|pq| pq.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// The base's scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The base's host and port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `uri`'s path and query under the base (the base's path first); `uri`'s own scheme and
    /// host, if any, are ignored.
    pub fn join(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = match uri.path_and_query() {
            Some(pq) if self.prefix.is_empty() => pq.clone(),
            Some(pq) => PathAndQuery::from_maybe_shared(Bytes::from(format!(
                "{}{}",
                self.prefix,
                pq.as_str()
            )))?,
            None if self.prefix.is_empty() => PathAndQuery::from_static("/"),
            None => PathAndQuery::from_maybe_shared(Bytes::from(self.prefix.clone()))?,
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_relative_and_absolute_form_uris_onto_the_base() {
        let base = BaseUrl::parse("http://127.0.0.1:9/prefix/").unwrap();
        let join = |uri: &str| base.join(&uri.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            join("/v1beta/models?x=1"),
            "http://127.0.0.1:9/prefix/v1beta/models?x=1"
        );
        assert_eq!(
            join("http://other/x?y=1"),
            "http://127.0.0.1:9/prefix/x?y=1"
        );
        let bare = BaseUrl::parse("https://generativelanguage.googleapis.com").unwrap();
        assert_eq!(
            bare.join(&"/v1beta/models".parse().unwrap()).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models"
        );
    }

    #[test]
    fn refuses_what_is_not_an_http_url() {
        for bad in ["ftp://x", "/relative", "127.0.0.1:9", ""] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
