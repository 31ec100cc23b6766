//! [`ApiFlavor`]: which API a request speaks, so every layer answers in its error format.

use http::Request;
/// Which API's error format a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiFlavor {
    /// Google's `google.rpc.Status` JSON.
    Gemini,
    /// OpenAI's `{"error":{"message","type","param","code"}}`.
    OpenAi,
}

impl std::fmt::Display for ApiFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiFlavor {
    /// The flavor's name, as logs and the store write it: `gemini` or `openai`.
    ///
    /// ```
    /// use gemini_balance::api_error::ApiFlavor;
    ///
    /// assert_eq!(ApiFlavor::OpenAi.as_str(), "openai");
    /// assert_eq!(ApiFlavor::Gemini.to_string(), "gemini");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFlavor::Gemini => "gemini",
            ApiFlavor::OpenAi => "openai",
        }
    }

    /// The flavor of a request: an `ApiFlavor` request extension wins; otherwise OpenAI for
    /// OpenAI-style paths (`/chat/completions`, `/embeddings`, `/images/`, `/audio/`, `/openai/`,
    /// `/hf/`), Gemini for everything else.
    /// A current [`RequestInfo`](crate::ext::RequestInfo) extension is read before the path.
    pub fn of<B>(req: &Request<B>) -> Self {
        if let Some(flavor) = req.extensions().get::<ApiFlavor>() {
            return *flavor;
        }
        match super::RequestInfo::current(req) {
            Some(info) => info.flavor,
            None => Self::of_path(req.uri().path()),
        }
    }

    /// The flavor implied by a path alone.
    pub fn of_path(path: &str) -> Self {
        // One pass from each `/`: every layer asks this of every request, and `str::contains`
        // would set up a substring search per pattern.
        const OPENAI: &[&[u8]] = &[
            b"/chat/completions",
            b"/embeddings",
            b"/images/",
            b"/audio/",
            b"/completions",
        ];
        let path = path.as_bytes();
        if path.starts_with(b"/openai/") || path.starts_with(b"/hf/") {
            return ApiFlavor::OpenAi;
        }
        let openai = (0..path.len())
            .filter(|&i| path[i] == b'/')
            .any(|i| OPENAI.iter().any(|p| path[i..].starts_with(p)));
        if openai {
            ApiFlavor::OpenAi
        } else {
            ApiFlavor::Gemini
        }
    }
}
