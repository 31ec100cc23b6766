//! Request paths a gateway may put under its base URL: [`check_path`] refuses the ones that
//! would reach another resource than the route they were matched as.
//!
//! A gateway that serves `/v1beta/models/...` and appends the rest of the path to its base URL
//! sends whatever the client wrote after `/models/`. `DELETE /v1beta/models/../tunedModels/x`
//! matches the route, and Google's front end (or reqwest's URL parser, on the way out) resolves
//! the `..`: the pool key deletes a tuned model. Percent-encoding hides the same trick from a
//! prefix match (`%2e%2e`, `%2F`), a backslash is a slash to some servers, an empty segment
//! (`//`) or an escaped one (`%252e`, decoded twice) shifts what the next hop sees.
//!
//! Gemini's and OpenAI's REST paths are made of letters, digits, `-`, `.`, `_`, `~`, `:` and
//! `/` (`/v1beta/models/gemini-2.5-flash:generateContent`, `/openai/chat/completions`,
//! `/models/veo-2.0-generate-001/operations/abc123`), and the google-genai SDK percent-encodes
//! the `:` before the method (`gemini-2.5-flash%3AgenerateContent`). So the check is an
//! allowlist too: those characters, `%3A` (either case), segments that are neither `.` nor
//! `..`, and no empty segment but a trailing `/`. Anything else is an [`UnsafePath`] naming
//! what was found, for a `400` in the API's own format before anything else happens. The query
//! is not a path and is not checked.
//!
//! # Example
//!
//! ```
//! use gemini_balance::client::{check_path, UnsafePath};
//!
//! assert!(check_path("/v1beta/models/gemini-2.5-flash:generateContent").is_ok());
//! assert!(check_path("/v1beta/models/gemini-1.5-pro-002%3AstreamGenerateContent").is_ok());
//! assert_eq!(check_path("/v1beta/models/../tunedModels/x"), Err(UnsafePath::DotSegment));
//! assert_eq!(
//!     check_path("/v1beta/models/x%2Fy").unwrap_err().to_string(),
//!     "the request path holds %2F: only `:` may be percent-encoded there (as %3A)"
//! );
//! ```

use std::fmt;

/// Why a request path is refused; its `Display` is the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsafePath {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `.` or `..` segment (percent-encoded dots are refused as escapes).
    DotSegment,
    /// An empty segment (`//`) before the end of the path.
    EmptySegment,
    /// A percent-escape other than `%3A`, as sent (`%2F`, `%2e`, `%00`, or a `%` without two hex
    /// digits after it).
    Escape(String),
    /// A character outside letters, digits, `-`, `.`, `_`, `~`, `:` and `/`.
    Character(char),
}

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafePath::NotAbsolute => f.write_str("the request path must start with `/`"),
            UnsafePath::DotSegment => {
                f.write_str("the request path has a `.` or `..` segment, which is not accepted")
            }
            UnsafePath::EmptySegment => {
                f.write_str("the request path has an empty segment (`//`), which is not accepted")
            }
            UnsafePath::Escape(escape) => write!(
                f,
                "the request path holds {escape}: only `:` may be percent-encoded there (as %3A)"
            ),
            UnsafePath::Character(c) => write!(
                f,
                "the request path holds {c:?}: only letters, digits, `-`, `.`, `_`, `~`, `:` and `/` are accepted"
            ),
        }
    }
}

impl std::error::Error for UnsafePath {}

/// `Ok` when `path` (without its query) may be sent under a base URL as it is; see the
/// [module docs](self).
pub fn check_path(path: &str) -> Result<(), UnsafePath> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(UnsafePath::NotAbsolute);
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => {}
            b'%' => {
                let escape = bytes.get(i..i + 3).unwrap_or(&bytes[i..]);
                if !escape.eq_ignore_ascii_case(b"%3a") {
                    return Err(UnsafePath::Escape(
                        String::from_utf8_lossy(escape).into_owned(),
                    ));
                }
                i += 2;
            }
            _ => {
                // Everything before `i` is ASCII, so `i` starts a character.
                let c = path[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(UnsafePath::Character(c));
            }
        }
        i += 1;
    }
    // The segments after the leading `/`; the last may be empty (a trailing `/`).
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Err(UnsafePath::DotSegment),
            "" if segments.peek().is_some() => return Err(UnsafePath::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_gemini_and_openai_clients_send() {
        for path in [
            "/",
            "/v1beta/models",
            "/v1beta/models/gemini-2.5-flash",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "/v1/models/gemini-2.0-flash%3AgenerateContent",
            "/v1/models/gemini-1.5-pro-002%3astreamGenerateContent",
            "/gemini/v1beta/models/text-embedding-004:batchEmbedContents",
            "/v1beta/models/veo-2.0-generate-001/operations/abc_123",
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "/openai/v1/models/gemini-2.5-flash",
            "/v1beta/models/...",
            "/v1beta/models/.hidden",
            "/v1beta/models/..:generateContent",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn refuses_dot_segments_escapes_and_odd_characters() {
        let refused = [
            ("/v1beta/models/../tunedModels/x", UnsafePath::DotSegment),
            ("/v1beta/models/./x", UnsafePath::DotSegment),
            ("/v1beta/models/..", UnsafePath::DotSegment),
            ("/v1beta/models/.", UnsafePath::DotSegment),
            ("/v1beta/models/%2e%2e/x", UnsafePath::Escape("%2e".into())),
            ("/v1beta/models/.%2E/x", UnsafePath::Escape("%2E".into())),
            ("/v1beta/models/a%2Fb", UnsafePath::Escape("%2F".into())),
            ("/v1beta/models/a%2fb", UnsafePath::Escape("%2f".into())),
            ("/v1beta/models/a%5cb", UnsafePath::Escape("%5c".into())),
            ("/v1beta/models/a%5Cb", UnsafePath::Escape("%5C".into())),
            ("/v1beta/models/a%00", UnsafePath::Escape("%00".into())),
            (
                "/v1beta/models/%252e%252e",
                UnsafePath::Escape("%25".into()),
            ),
            (
                "/v1beta/models/gemini-1%2e5-pro",
                UnsafePath::Escape("%2e".into()),
            ),
            ("/v1beta/models/a%3", UnsafePath::Escape("%3".into())),
            ("/v1beta/models/a%", UnsafePath::Escape("%".into())),
            ("/v1beta/models/a\\..\\b", UnsafePath::Character('\\')),
            ("/v1beta/models/a;b", UnsafePath::Character(';')),
            ("/v1beta/models/é", UnsafePath::Character('é')),
            ("/v1beta/models//x", UnsafePath::EmptySegment),
            ("//v1beta/models", UnsafePath::EmptySegment),
            ("*", UnsafePath::NotAbsolute),
            ("", UnsafePath::NotAbsolute),
        ];
        for (path, why) in refused {
            assert_eq!(check_path(path), Err(why), "{path}");
        }
    }

    #[test]
    fn messages_name_what_was_found() {
        let message = check_path("/v1beta/models/a%5Cb").unwrap_err().to_string();
        assert!(message.contains("%5C"), "{message}");
        let message = check_path("/v1beta/models/a\\b").unwrap_err().to_string();
        assert!(message.contains("'\\\\'"), "{message}");
        let message = check_path("/v1beta/models/../x").unwrap_err().to_string();
        assert!(message.contains("`..`"), "{message}");
    }
}
