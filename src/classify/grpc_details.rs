//! Reading `grpc-status-details-bin`: the `google.rpc.Status` protobuf that gRPC servers (Gemini
//! among them) send with an error, carrying the same `ErrorInfo`, `RetryInfo` and `QuotaFailure`
//! details as the JSON error body.
//!
//! A small hand-written protobuf reader: the library needs five fields of four messages, not a
//! protobuf runtime (and no `protoc`).

use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;

use super::class::QuotaScope;
use super::gemini_error::{quota_scope, ErrorBody};

/// The details of a gRPC error, from `grpc-status-details-bin` and `grpc-message`, as an
/// [`ErrorBody`] (the same shape the JSON error body is read into).
pub(crate) fn error_body(code: u32, metadata: &HeaderMap, max_delay: Duration) -> ErrorBody {
    let mut out = ErrorBody {
        status: code_name(code).map(str::to_owned),
        message: metadata
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode),
        ..ErrorBody::default()
    };
    let details = metadata
        .get("grpc-status-details-bin")
        .and_then(|v| base64_decode(v.as_bytes()));
    if let Some(status) = details {
        read_status(&status, &mut out, max_delay);
    }
    out
}

/// The canonical name of a gRPC status code, as Gemini's JSON `error.status` spells it.
pub(crate) fn code_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied()
}

/// `grpc-status-details-bin` for a local answer: a `google.rpc.Status` with the code, the
/// message and, when given, a `RetryInfo`, base64-encoded without padding (as gRPC sends it).
pub(crate) fn status_details_bin(
    code: u32,
    message: &str,
    retry_after: Option<Duration>,
) -> String {
    let mut status = Vec::new();
    put_varint(&mut status, 1 << 3);
    put_varint(&mut status, u64::from(code));
    put_bytes(&mut status, 2, message.as_bytes());
    if let Some(wait) = retry_after {
        let mut duration = Vec::new();
        put_varint(&mut duration, 1 << 3);
        put_varint(&mut duration, wait.as_secs());
        let mut retry_info = Vec::new();
        put_bytes(&mut retry_info, 1, &duration);
        let mut any = Vec::new();
        put_bytes(&mut any, 1, b"type.googleapis.com/google.rpc.RetryInfo");
        put_bytes(&mut any, 2, &retry_info);
        put_bytes(&mut status, 3, &any);
    }
    base64_encode(&status)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn base64_encode(bytes: &[u8]) -> String {
    // gRPC sends `-bin` metadata unpadded.
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%`.
pub(crate) fn percent_encode(message: &str) -> String {
    /// Controls (non-ASCII is always encoded) and `%`.
    const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string()
}

/// `google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; }`
fn read_status(bytes: &[u8], out: &mut ErrorBody, max_delay: Duration) {
    for (field, value) in Fields::new(bytes) {
        match (field, value) {
            (2, Value::Bytes(message)) if out.message.is_none() => {
                out.message = Some(String::from_utf8_lossy(message).into_owned());
            }
            (3, Value::Bytes(any)) => read_any(any, out, max_delay),
            _ => {}
        }
    }
}

/// `google.protobuf.Any { string type_url = 1; bytes value = 2; }`
fn read_any(bytes: &[u8], out: &mut ErrorBody, max_delay: Duration) {
    let mut type_url: &[u8] = b"";
    let mut value: &[u8] = b"";
    for (field, v) in Fields::new(bytes) {
        match (field, v) {
            (1, Value::Bytes(b)) => type_url = b,
            (2, Value::Bytes(b)) => value = b,
            _ => {}
        }
    }
    let kind = String::from_utf8_lossy(type_url);
    if kind.ends_with("google.rpc.ErrorInfo") {
        // ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
        for (field, v) in Fields::new(value) {
            if let (1, Value::Bytes(reason)) = (field, v) {
                out.reasons
                    .push(String::from_utf8_lossy(reason).into_owned());
            }
        }
    } else if kind.ends_with("google.rpc.RetryInfo") {
        // RetryInfo { google.protobuf.Duration retry_delay = 1; }
        for (field, v) in Fields::new(value) {
            if let (1, Value::Bytes(duration)) = (field, v) {
                out.retry_delay = read_duration(duration).map(|d| d.min(max_delay));
            }
        }
    } else if kind.ends_with("google.rpc.QuotaFailure") {
        // QuotaFailure { repeated Violation violations = 1; }
        // Violation { subject = 1; description = 2; api_service = 3; quota_metric = 4; quota_id = 5; ... }
        for (field, v) in Fields::new(value) {
            let (1, Value::Bytes(violation)) = (field, v) else {
                continue;
            };
            let mut id: &[u8] = b"";
            for (field, v) in Fields::new(violation) {
                match (field, v) {
                    (5, Value::Bytes(b)) => id = b,
                    (4, Value::Bytes(b)) if id.is_empty() => id = b,
                    _ => {}
                }
            }
            let scope = quota_scope(&String::from_utf8_lossy(id));
            // A per-day violation dominates: it outlasts any per-minute one.
            if out.quota_scope != Some(QuotaScope::PerDay) && scope != QuotaScope::Unknown {
                out.quota_scope = Some(scope);
            }
        }
    }
}

/// `google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }`
fn read_duration(bytes: &[u8]) -> Option<Duration> {
    let (mut seconds, mut nanos) = (0u64, 0u64);
    for (field, v) in Fields::new(bytes) {
        match (field, v) {
            (1, Value::Varint(s)) => seconds = s,
            (2, Value::Varint(n)) => nanos = n,
            _ => {}
        }
    }
    // Negative values (two's complement varints) are not waits.
    if seconds > i64::MAX as u64 || nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(seconds, nanos as u32))
}

/// One protobuf field value; fixed-width values are skipped, not needed here.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a protobuf message, in order; stops at the first malformed byte.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => {
                self.rest = &[];
                return None;
            }
        };
        Some((key >> 3, value))
    }
}

/// Base64, standard or URL-safe, padded or not (gRPC sends `-bin` metadata unpadded).
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    const INDIFFERENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, INDIFFERENT);
    let input: Vec<u8> = input
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(&input)
        .or_else(|_| URL_SAFE.decode(&input))
        .ok()
}

/// `grpc-message` is percent-encoded.
fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding helpers for the tests (length-delimited fields only, plus varints).
    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = varint(number << 3 | 2);
        out.extend(varint(bytes.len() as u64));
        out.extend_from_slice(bytes);
        out
    }

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn any(type_url: &str, value: &[u8]) -> Vec<u8> {
        let mut out = field(1, type_url.as_bytes());
        out.extend(field(2, value));
        out
    }

    fn base64(bytes: &[u8]) -> String {
        base64_encode(bytes)
    }

    #[test]
    fn local_details_read_back() {
        let mut metadata = HeaderMap::new();
        let bin = status_details_bin(8, "no key", Some(Duration::from_secs(12)));
        metadata.insert("grpc-status-details-bin", bin.parse().unwrap());
        metadata.insert("grpc-message", percent_encode("100% über").parse().unwrap());
        let body = error_body(8, &metadata, Duration::from_secs(3600));
        assert_eq!(body.retry_delay, Some(Duration::from_secs(12)));
        assert_eq!(body.message.as_deref(), Some("100% über"));
    }

    #[test]
    fn reads_retry_info_quota_failure_and_error_info() {
        let mut duration = varint(1 << 3);
        duration.extend(varint(37));
        let retry_info = field(1, &duration);
        let violation = field(5, b"GenerateRequestsPerDayPerProjectPerModel-FreeTier");
        let quota_failure = field(1, &violation);
        let error_info = field(1, b"API_KEY_INVALID");
        let mut status = varint(1 << 3);
        status.extend(varint(8));
        status.extend(field(2, b"quota"));
        status.extend(field(
            3,
            &any("type.googleapis.com/google.rpc.RetryInfo", &retry_info),
        ));
        status.extend(field(
            3,
            &any(
                "type.googleapis.com/google.rpc.QuotaFailure",
                &quota_failure,
            ),
        ));
        status.extend(field(
            3,
            &any("type.googleapis.com/google.rpc.ErrorInfo", &error_info),
        ));

        let mut metadata = HeaderMap::new();
        metadata.insert("grpc-status-details-bin", base64(&status).parse().unwrap());
        metadata.insert("grpc-message", "Quota%20exceeded".parse().unwrap());
        let body = error_body(8, &metadata, Duration::from_secs(3600));
        assert_eq!(body.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(body.message.as_deref(), Some("Quota exceeded"));
        assert_eq!(body.retry_delay, Some(Duration::from_secs(37)));
        assert_eq!(body.quota_scope, Some(QuotaScope::PerDay));
        assert_eq!(body.reasons, ["API_KEY_INVALID"]);
    }

    #[test]
    fn malformed_details_are_ignored() {
        let mut metadata = HeaderMap::new();
        metadata.insert("grpc-status-details-bin", "!!!".parse().unwrap());
        let body = error_body(14, &metadata, Duration::from_secs(1));
        assert_eq!(body.status.as_deref(), Some("UNAVAILABLE"));
        assert_eq!(body.retry_delay, None);
        // Truncated protobuf: a length past the end.
        let mut out = ErrorBody::default();
        read_status(&[0x1a, 0x7f, 0x01], &mut out, Duration::from_secs(1));
        assert_eq!(out, ErrorBody::default());
    }

    #[test]
    fn base64_padded_and_unpadded() {
        assert_eq!(base64_decode(b"aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode(b"aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64(b"hello"), "aGVsbG8");
        assert_eq!(base64_decode(b"aGVsbG8").as_deref(), Some(&b"hello"[..]));
    }
}
