//! The mock's answers compressed as Google's front ends and CDN relays compress them.
//!
//! By default ([`Compression::Negotiate`]) an answer is gzipped whenever the request's
//! `Accept-Encoding` lists `gzip` (else `br`, `zstd` or `deflate`, in that order), as Google's
//! front ends do: every answer, errors and streams included. A stream is compressed frame by
//! frame with a flush after each, so every event leaves the mock as soon as it is written, as a
//! flushing front end sends it. A [`Compression::Force`] relay compresses whatever the request
//! asked for, and [`Compression::Label`] sends the body unchanged under a `Content-Encoding`
//! label nobody can decode.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Frame;

/// A content coding the mock can compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib, as HTTP's `deflate` is).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// Every coding, for table tests.
    pub const ALL: [Encoding; 4] = [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Compresses `data` whole.
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        let mut encoder = Encoder::new(self);
        let mut out = encoder.write(data);
        out.extend(encoder.finish());
        out
    }
}

/// How the mock compresses its answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compression {
    /// As Google's front ends: when the request accepts it (`gzip` first).
    #[default]
    Negotiate,
    /// As a relay that compresses regardless of what was asked.
    Force(Encoding),
    /// The body unchanged, labelled with this `Content-Encoding` (one nobody can decode).
    Label(&'static str),
    /// Compressed with this coding, labelled with another spelling of it (`x-gzip`, `GZIP`).
    Spelled(Encoding, &'static str),
    /// Never.
    Off,
}

impl Compression {
    /// The coding for a request with these headers, if the answer is to be compressed.
    fn choose(&self, request: &HeaderMap) -> Option<Encoding> {
        match self {
            Compression::Negotiate => {
                let accepted: Vec<String> = request
                    .get_all(header::ACCEPT_ENCODING)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter(|item| !item.contains("q=0") || item.contains("q=0."))
                    .map(|item| item.split(';').next().unwrap_or("").trim().to_lowercase())
                    .collect();
                [
                    Encoding::Gzip,
                    Encoding::Brotli,
                    Encoding::Zstd,
                    Encoding::Deflate,
                ]
                .into_iter()
                .find(|e| accepted.iter().any(|a| a == e.token()))
            }
            Compression::Force(encoding) | Compression::Spelled(encoding, _) => Some(*encoding),
            Compression::Label(_) | Compression::Off => None,
        }
    }
}

/// `res` as the mock sends it to a request with `method` and `request` headers.
pub(crate) fn apply(
    compression: &Compression,
    method: &Method,
    request: &HeaderMap,
    res: Response,
) -> Response {
    let no_body = *method == Method::HEAD
        || res.status() == StatusCode::NO_CONTENT
        || res.status() == StatusCode::NOT_MODIFIED;
    if no_body {
        return res;
    }
    if let Compression::Label(label) = compression {
        let (mut parts, body) = res.into_parts();
        parts
            .headers
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(label));
        return Response::from_parts(parts, body);
    }
    let Some(encoding) = compression.choose(request) else {
        return res;
    };
    let (mut parts, body) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let label = match compression {
        Compression::Spelled(_, label) => label,
        _ => encoding.token(),
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static(label));
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let body = CompressedBody {
        inner: body,
        encoder: Some(Encoder::new(encoding)),
    };
    Response::from_parts(parts, Body::new(body))
}

/// One streaming encoder writing into a buffer that is emptied after each frame.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(encoding: Encoding) -> Encoder {
        let level = flate2::Compression::default();
        match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            Encoding::Deflate => {
                Encoder::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), level))
            }
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                5,
                22,
            ))),
            Encoding::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder"),
            ),
        }
    }

    /// Compresses `data` and flushes: what is returned decodes to everything written so far.
    fn write(&mut self, data: &[u8]) -> Vec<u8> {
        fn step<W: Write>(w: &mut W, data: &[u8]) {
            w.write_all(data).expect("compress into memory");
            w.flush().expect("flush into memory");
        }
        match self {
            Encoder::Gzip(e) => {
                step(e, data);
                std::mem::take(e.get_mut())
            }
            Encoder::Deflate(e) => {
                step(e, data);
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(e) => {
                step(e.as_mut(), data);
                std::mem::take(e.get_mut())
            }
            Encoder::Zstd(e) => {
                step(e, data);
                std::mem::take(e.get_mut())
            }
        }
    }

    /// Ends the compressed stream.
    fn finish(self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.finish().expect("finish gzip"),
            Encoder::Deflate(e) => e.finish().expect("finish deflate"),
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish().expect("finish zstd"),
        }
    }
}

/// A body compressed frame by frame, each frame flushed.
struct CompressedBody {
    inner: Body,
    encoder: Option<Encoder>,
}

impl http_body::Body for CompressedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if self.encoder.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let Some(encoder) = self.encoder.as_mut() else {
                        continue;
                    };
                    let out = encoder.write(&data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    let Some(encoder) = self.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    let out = encoder.finish();
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out.into()))));
                }
            }
        }
    }
}
