//! The headers that belong to one connection, dropped before a request is forwarded.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe the client's connection to us, not ours to the upstream.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::HOST,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes `Host` and the hop-by-hop headers from a request about to be forwarded.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // By name, not by string: removing by a string parses it every time.
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_hop_by_hop_headers_only() {
        let mut headers = HeaderMap::new();
        for name in ["host", "connection", "keep-alive", "te", "x-goog-api-key"] {
            headers.insert(HeaderName::from_static(name), "v".parse().unwrap());
        }
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["x-goog-api-key"]);
    }
}
