//! Removing API keys from text before it leaves our hands (error bodies, log lines).
//!
//! Gemini error messages can quote the key that was used (`Consumer 'api_key:AIza…' has been
//! suspended`). Such bodies are forwarded to clients and written to logs, so every buffered
//! error body passes through [`redact_keys`] first.
//!
//! # Example
//!
//! ```
//! use gemini_balance::redact::redact_keys;
//!
//! let text = "Consumer 'api_key:AIzaSyA1234567890abcdefghijklmnopqrstuv' has been suspended.";
//! assert_eq!(redact_keys(text), "Consumer 'api_key:AIza…stuv' has been suspended.");
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

use crate::fingerprint::mask;

/// Length of a Google API key: `AIza` and 35 characters of `[0-9A-Za-z_-]`.
const GOOGLE_KEY_LEN: usize = 39;

/// Replaces every Google API key (`AIza` followed by 35 URL-safe characters) with its
/// fingerprint (`AIza…x4Fq`).
pub fn redact_keys(text: &str) -> Cow<'_, str> {
    match redact_keys_in_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Only ASCII runs were replaced, by valid UTF-8: the text is still UTF-8.
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// [`redact_keys`] on bytes in any encoding that writes ASCII as ASCII (UTF-8, Latin-1,
/// Windows-1252...): a body need not be valid UTF-8 to have its keys removed.
pub(crate) fn redact_keys_in_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    redact_google_keys(bytes, std::str::from_utf8(bytes).is_err())
}

/// Google keys replaced by their fingerprint; with `ascii`, spelled `AIza...x4Fq`, for bodies
/// in another encoding than UTF-8 (where `…` would not read as one).
fn redact_google_keys(bytes: &[u8], ascii: bool) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut last = 0;
    for start in memmem::find_iter(bytes, b"AIza") {
        if start < last {
            continue;
        }
        let end = start + GOOGLE_KEY_LEN;
        let is_key = end <= bytes.len()
            && bytes[start + 4..end].iter().all(|b| is_key_char(*b))
            && (end == bytes.len() || !is_key_char(bytes[end]));
        if is_key {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[last..start]);
            let fingerprint = mask(&String::from_utf8_lossy(&bytes[start..end]));
            if ascii {
                out.extend_from_slice(fingerprint.replace('…', "...").as_bytes());
            } else {
                out.extend_from_slice(fingerprint.as_bytes());
            }
            last = end;
        }
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut out) => {
            out.extend_from_slice(&bytes[last..]);
            Cow::Owned(out)
        }
    }
}

/// Shortest run of token characters after `sk-` that [`redact_sk_tokens`] takes for a token.
const SK_TOKEN_MIN: usize = 20;

/// Replaces every `sk-` token (`sk-` followed by at least 20 characters of `[0-9A-Za-z_-]`, not
/// inside a longer word) with its fingerprint (`sk-a…9f3c`): the pattern of OpenAI keys and of
/// the client tokens Gemini-Balance deployments use, which its logs can hold in clear.
///
/// Not applied to answers (a model may well write `sk-…` in one): for logs and records that
/// come from elsewhere, such as an imported error log.
///
/// ```
/// use gemini_balance::redact::redact_sk_tokens;
///
/// let line = "Using allowed token: sk-proj-0123456789abcdefghij";
/// assert_eq!(redact_sk_tokens(line), "Using allowed token: sk-p…ghij");
/// assert_eq!(redact_sk_tokens("task-0123456789abcdefghijkl"), "task-0123456789abcdefghijkl");
/// ```
pub fn redact_sk_tokens(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut last = 0;
    for start in memmem::find_iter(bytes, b"sk-") {
        if start < last || (start > 0 && is_key_char(bytes[start - 1])) {
            continue;
        }
        let run = bytes[start + 3..]
            .iter()
            .take_while(|b| is_key_char(**b))
            .count();
        if run < SK_TOKEN_MIN {
            continue;
        }
        let end = start + 3 + run;
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        // Token characters are ASCII: the cuts are on character boundaries.
        out.push_str(&text[last..start]);
        out.push_str(&mask(&text[start..end]));
        last = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[last..]);
            Cow::Owned(out)
        }
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The forms one secret takes in the bodies of answers, each with what replaces it: the
/// secret as is (UTF-8, Latin-1 and every ASCII-compatible encoding), JSON-escaped and
/// percent-encoded (when those differ), and as UTF-16 (both byte orders).
///
/// Built once per key ([`ApiKey::secret_forms`](crate::keys::ApiKey::secret_forms)); cloning
/// shares it.
///
/// ```
/// use gemini_balance::redact::SecretForms;
///
/// let forms = SecretForms::new("sk-live-0123456789abcdef", "sk-l…cdef");
/// let body = "<p>key sk-live-0123456789abcdef refused</p>".as_bytes();
/// assert_eq!(&*forms.redact(body), "<p>key sk-l…cdef refused</p>".as_bytes());
/// // Latin-1, not UTF-8: ASCII stand-ins.
/// let body = b"<p>cl\xe9 sk-live-0123456789abcdef refus\xe9e</p>";
/// assert_eq!(&*forms.redact(body), b"<p>cl\xe9 sk-l****************cdef refus\xe9e</p>");
/// ```
#[derive(Clone)]
pub struct SecretForms {
    forms: Arc<[Form]>,
}

struct Form {
    finder: memmem::Finder<'static>,
    /// The form holds a NUL byte (UTF-16): it cannot be in bytes without one, as text rarely is.
    wide: bool,
    /// The fingerprint, in the form's encoding: for bodies read whole.
    short: Box<[u8]>,
    /// As long as the form (`*` between the first and last four characters): for bodies that
    /// stream, whose length was announced before they were read.
    padded: Box<[u8]>,
}

impl std::fmt::Debug for SecretForms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretForms")
            .field("forms", &self.forms.len())
            .finish()
    }
}

impl SecretForms {
    /// The forms of `secret`, replaced by `fingerprint` (such as `AIza…x4Fq`).
    pub fn new(secret: &str, fingerprint: &str) -> SecretForms {
        let mut texts: Vec<String> = vec![secret.to_owned()];
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json.trim_start_matches('"').trim_end_matches('"');
        if json != secret && !json.is_empty() {
            texts.push(json.to_owned());
        }
        // Some JSON writers also escape `/`.
        let slashed = json.replace('/', "\\/");
        if slashed != json {
            texts.push(slashed);
        }
        let percent = percent_encode(secret);
        if percent != secret {
            texts.push(percent);
        }
        let padded_text = |text: &str| -> String {
            let n = text.chars().count();
            if n < 12 {
                "*".repeat(n)
            } else {
                let chars: Vec<char> = text.chars().collect();
                let mut out: String = chars[..4].iter().collect();
                out.push_str(&"*".repeat(n - 8));
                out.extend(&chars[n - 4..]);
                out
            }
        };
        let mut forms = Vec::new();
        for text in &texts {
            forms.push(Form::new(
                text.as_bytes().to_vec(),
                fingerprint.as_bytes().to_vec(),
                padded_text(text).into_bytes(),
            ));
        }
        let utf16 = |text: &str, le: bool| -> Vec<u8> {
            text.encode_utf16()
                .flat_map(|unit| {
                    if le {
                        unit.to_le_bytes()
                    } else {
                        unit.to_be_bytes()
                    }
                })
                .collect()
        };
        for le in [true, false] {
            forms.push(Form::new(
                utf16(secret, le),
                utf16(fingerprint, le),
                utf16(&padded_text(secret), le),
            ));
        }
        forms.retain(|form| !form.finder.needle().is_empty());
        SecretForms {
            forms: forms.into(),
        }
    }

    /// `bytes` with every form of the secret replaced by the fingerprint, then every Google API
    /// key (as `redact_keys` does for text): for a body read whole, such as an error answer.
    ///
    /// A body that is not UTF-8 gets ASCII stand-ins (`*` in place of the hidden characters),
    /// so that its own encoding still reads.
    pub fn redact<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let ascii = std::str::from_utf8(bytes).is_err();
        let mut current = Cow::Borrowed(bytes);
        for form in self.forms.iter() {
            if form.finder.find(&current).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(current.len());
            let mut last = 0;
            for start in form.finder.find_iter(&current) {
                if start < last {
                    continue;
                }
                out.extend_from_slice(&current[last..start]);
                out.extend_from_slice(if ascii { &form.padded } else { &form.short });
                last = start + form.finder.needle().len();
            }
            out.extend_from_slice(&current[last..]);
            current = Cow::Owned(out);
        }
        match current {
            Cow::Borrowed(b) => redact_google_keys(b, ascii),
            Cow::Owned(owned) => Cow::Owned(redact_google_keys(&owned, ascii).into_owned()),
        }
    }

    /// The forms that can be in `bytes`: the UTF-16 ones only where there is a NUL byte.
    fn candidates<'a>(&'a self, bytes: &[u8]) -> impl Iterator<Item = &'a Form> + 'a {
        let wide = memchr::memchr(0, bytes).is_some();
        self.forms.iter().filter(move |form| wide || !form.wide)
    }

    /// The length to cut `bytes` to when they were cut short (a body read up to a cap): an end
    /// that may begin this secret, or any Google API key, is dropped, since redaction cannot
    /// recognise a key of which only the start is there.
    pub fn cut_partial_end(&self, bytes: &[u8]) -> usize {
        let mut keep = bytes.len() - self.partial_at_end(bytes);
        // `AIza` and up to 34 more key characters at the very end: the start of a Google key.
        let from = keep.saturating_sub(GOOGLE_KEY_LEN - 1);
        for at in from..keep {
            let tail = &bytes[at..keep];
            let prefix = &b"AIza"[..tail.len().min(4)];
            if tail.starts_with(prefix) && tail[prefix.len()..].iter().all(|b| is_key_char(*b)) {
                keep = at;
                break;
            }
        }
        keep
    }

    /// Overwrites every form of the secret in `buf` with its padded stand-in (same length).
    fn overwrite(&self, buf: &mut [u8]) {
        let forms: Vec<&Form> = self.candidates(buf).collect();
        for form in forms {
            let len = form.finder.needle().len();
            let mut from = 0;
            while let Some(found) = form.finder.find(&buf[from..]) {
                let at = from + found;
                buf[at..at + len].copy_from_slice(&form.padded);
                from = at + len;
            }
        }
    }

    /// `true` when some form of the secret is in `bytes`.
    fn is_in(&self, bytes: &[u8]) -> bool {
        self.candidates(bytes)
            .any(|form| form.finder.find(bytes).is_some())
    }

    /// The length of the longest end of `bytes` that begins some form of the secret (and may
    /// be completed by the next frame).
    fn partial_at_end(&self, bytes: &[u8]) -> usize {
        let mut longest = 0;
        // Every form, the UTF-16 ones too: the frame may end where a UTF-16 key begins (`A`)
        // without holding a NUL byte itself.
        for form in self.forms.iter() {
            let needle = form.finder.needle();
            let from = bytes.len().saturating_sub(needle.len() - 1);
            let tail = &bytes[from..];
            // Only where the form's first byte is can a form begin.
            for at in memchr::memchr_iter(needle[0], tail) {
                let end = &tail[at..];
                if end.len() <= longest {
                    break;
                }
                if needle.starts_with(end) {
                    longest = end.len();
                    break;
                }
            }
        }
        longest
    }
}

impl Form {
    fn new(needle: Vec<u8>, short: Vec<u8>, padded: Vec<u8>) -> Form {
        debug_assert_eq!(needle.len(), padded.len());
        Form {
            wide: needle.contains(&0),
            finder: memmem::Finder::new(&needle).into_owned(),
            short: short.into(),
            padded: padded.into(),
        }
    }
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes a secret from a body as it streams: every form of it is overwritten with a stand-in
/// of the same length (the body's announced length stays true), and a frame that ends with the
/// beginning of a form is held back until the next frame says whether the secret follows.
///
/// A frame that holds nothing of the secret is passed on as it is, without a copy.
#[derive(Debug)]
pub(crate) struct StreamRedactor {
    forms: SecretForms,
    carry: BytesMut,
}

impl StreamRedactor {
    /// A redactor for the forms of one secret.
    pub fn new(forms: SecretForms) -> StreamRedactor {
        StreamRedactor {
            forms,
            carry: BytesMut::new(),
        }
    }

    /// The part of the stream so far that can be passed on (possibly empty).
    pub fn push(&mut self, data: Bytes) -> Bytes {
        if self.carry.is_empty()
            && !self.forms.is_in(&data)
            && self.forms.partial_at_end(&data) == 0
        {
            return data;
        }
        self.carry.extend_from_slice(&data);
        self.forms.overwrite(&mut self.carry);
        let hold = self.forms.partial_at_end(&self.carry);
        let ready = self.carry.len() - hold;
        self.carry.split_to(ready).freeze()
    }

    /// What was held back, at the end of the stream (it cannot complete a secret any more).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.carry.is_empty()).then(|| self.carry.split().freeze())
    }

    /// Bytes held back.
    pub fn held(&self) -> usize {
        self.carry.len()
    }
}

pin_project_lite::pin_project! {
    /// A body passed on frame by frame through a redactor (which holds back what may be the
    /// start of a secret until the next frame says): the secret never leaves in it, whatever
    /// frames it is split across, and its length stays what was announced.
    pub struct RedactBody<B> {
        #[pin]
        inner: B,
        redactor: StreamRedactor,
        // Trailers that came while bytes were held back: sent after them.
        trailers: Option<http::HeaderMap>,
        ended: bool,
    }
}

impl<B> std::fmt::Debug for RedactBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactBody").finish_non_exhaustive()
    }
}

impl<B> RedactBody<B> {
    /// `inner`, with every form of the secret overwritten.
    pub fn new(inner: B, forms: SecretForms) -> RedactBody<B> {
        RedactBody {
            inner,
            redactor: StreamRedactor::new(forms),
            trailers: None,
            ended: false,
        }
    }
}

impl<B> http_body::Body for RedactBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        loop {
            if *this.ended {
                if let Some(rest) = this.redactor.finish() {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(rest))));
                }
                return Poll::Ready(
                    this.trailers
                        .take()
                        .map(|t| Ok(http_body::Frame::trailers(t))),
                );
            }
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.redactor.push(data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
                        }
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) if this.redactor.held() > 0 => {
                            *this.trailers = Some(trailers);
                            *this.ended = true;
                        }
                        Ok(trailers) => {
                            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
                        }
                        Err(_) => {}
                    },
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => *this.ended = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let nothing_held = self.redactor.held() == 0;
        if self.ended {
            nothing_held && self.trailers.is_none()
        } else {
            nothing_held && self.inner.is_end_stream()
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Stand-ins are as long as what they replace: what is held back is still to come.
        let inner = if self.ended {
            http_body::SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        };
        let held = self.redactor.held() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sk_tokens_are_redacted_where_they_stand_alone() {
        let token = "sk-abcdefghij0123456789";
        assert_eq!(redact_sk_tokens(token), "sk-a…6789");
        assert_eq!(
            redact_sk_tokens(&format!("key={token}&x=1,{token}")),
            "key=sk-a…6789&x=1,sk-a…6789"
        );
        // Too short, or part of a longer word: left alone.
        for text in ["sk-short", "task-abcdefghij0123456789", "sk-", "ask-"] {
            assert_eq!(redact_sk_tokens(text), text);
        }
        assert!(matches!(redact_sk_tokens("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            redact_sk_tokens("é sk-abcdefghij0123456789 é"),
            "é sk-a…6789 é"
        );
    }

    #[test]
    fn redacts_keys_and_keeps_the_rest() {
        let key = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
        assert_eq!(redact_keys("no key here"), "no key here");
        assert_eq!(redact_keys("AIza short"), "AIza short");
        let two = format!("{key} and {key}.");
        assert_eq!(redact_keys(&two), "AIza…stuv and AIza…stuv.");
        // One character longer is not a Gemini key: left alone.
        let longer = format!("{key}x");
        assert_eq!(redact_keys(&longer), longer);
    }

    const KEY: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";

    fn forms() -> SecretForms {
        SecretForms::new(KEY, &mask(KEY))
    }

    #[test]
    fn redacts_every_form_of_the_secret_in_bytes_that_are_not_utf8() {
        let latin1: Vec<u8> = [
            b"<html>\xe9chec: cl\xe9 ".as_slice(),
            KEY.as_bytes(),
            b"</html>",
        ]
        .concat();
        assert_eq!(
            &*forms().redact(&latin1),
            [
                b"<html>\xe9chec: cl\xe9 ".as_slice(),
                b"AIza*******************************stuv",
                b"</html>"
            ]
            .concat()
        );
        let utf16: Vec<u8> = format!("key={KEY}!")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let redacted = forms().redact(&utf16).into_owned();
        let text = String::from_utf16_lossy(
            &redacted
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        );
        assert_eq!(text, "key=AIza…stuv!");
        // Another Google key in a non-UTF-8 body goes too.
        let other = b"\xff AIzaSyB1234567890abcdefghijklmnopqrstuw \xfe";
        assert_eq!(&*forms().redact(other), b"\xff AIza...stuw \xfe".as_slice());
        // A secret that JSON or a URL would escape is found escaped too.
        let odd = SecretForms::new("sk/abc+def\"ghi", "sk/a…");
        for json in [
            br#"{"m":"sk/abc+def\"ghi"}"#.as_slice(),
            br#"{"m":"sk\/abc+def\"ghi"}"#,
        ] {
            assert_eq!(&*odd.redact(json), r#"{"m":"sk/a…"}"#.as_bytes());
        }
        assert_eq!(
            &*odd.redact(b"?key=sk%2Fabc%2Bdef%22ghi&x"),
            "?key=sk/a…&x".as_bytes()
        );
    }

    #[test]
    fn a_stream_is_redacted_across_frame_boundaries_keeping_its_length() {
        let body = format!("data: {{\"error\":\"Consumer api_key:{KEY} suspended\"}}\r\n\r\n");
        for cut in 1..body.len() {
            let mut redactor = StreamRedactor::new(forms());
            let mut out = Vec::new();
            out.extend_from_slice(&redactor.push(Bytes::copy_from_slice(&body.as_bytes()[..cut])));
            out.extend_from_slice(&redactor.push(Bytes::copy_from_slice(&body.as_bytes()[cut..])));
            if let Some(rest) = redactor.finish() {
                out.extend_from_slice(&rest);
            }
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out.len(), body.len(), "cut at {cut}");
            assert!(!out.contains(KEY), "cut at {cut}: {out}");
            assert!(
                out.contains("AIza*******************************stuv"),
                "{out}"
            );
        }
    }

    #[test]
    fn a_body_cut_short_loses_any_start_of_a_key() {
        let forms = forms();
        for cut in 0..KEY.len() {
            let body = format!("{{\"message\":\"key {}", &KEY[..cut]);
            let keep = forms.cut_partial_end(body.as_bytes());
            assert_eq!(&body[..keep], "{\"message\":\"key ", "cut at {cut}");
        }
        // Another Google key's start goes too; text that cannot begin one stays.
        let other = "see AIzaSyB1234567890abc";
        assert_eq!(forms.cut_partial_end(other.as_bytes()), 4);
        assert_eq!(forms.cut_partial_end(b"all done."), 9);
        // A UTF-16 key's first byte at the end of a frame without a NUL: held back too.
        let mut redactor = StreamRedactor::new(forms.clone());
        assert_eq!(
            redactor.push(Bytes::from_static(b"xyz A")).as_ref(),
            b"xyz "
        );
    }

    #[test]
    fn a_stream_without_the_secret_passes_without_copies_or_delay() {
        let mut redactor = StreamRedactor::new(forms());
        let frame = Bytes::from_static(b"data: {\"text\":\"AIz\"}\r\n\r\n");
        let out = redactor.push(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr());
        // A frame ending in the first characters of the key waits for the next one.
        assert!(redactor.push(Bytes::from_static(b"text AIza")).as_ref() == b"text ");
        assert_eq!(redactor.held(), 4);
        assert_eq!(
            redactor.push(Bytes::from_static(b" end")).as_ref(),
            b"AIza end"
        );
        assert_eq!(redactor.finish(), None);
    }
}
