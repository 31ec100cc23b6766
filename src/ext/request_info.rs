//! [`RequestInfo`]: what a request is, worked out once and read by every layer and handler.

use std::sync::Arc;

use http::{header, Extensions, HeaderMap, Method, Request, Uri};

use super::flavor::ApiFlavor;
use super::{model_from_path, ModelName, PseudoStreamed};

/// What a request asks for: its API flavour, operation, model and streaming, worked out once and
/// carried as a request extension.
///
/// The first layer that needs it computes it ([`RequestInfo::attach`]) and every other layer
/// reads that copy; a layer that rewrites the request updates it, so the layers below and your
/// handler see the request as it is now, not as the client sent it:
/// [`PseudoStream`](crate::stream::pseudo::PseudoStream) turns `streamGenerateContent` into
/// `generateContent` (and an OpenAI `"stream": true` into `false`) and says so here with
/// [`pseudo_streamed`](Self::pseudo_streamed); `openai::OpenAi` (feature `openai`) turns a chat
/// completion into a Gemini call.
///
/// **Handlers** read this extension (axum: `Extension<RequestInfo>`) and the request's own
/// [`Uri`] (path *and* query: `?alt=sse` decides between SSE and a JSON array), never axum's
/// `Path` extractor: axum captures path parameters while routing, before the layers run, so
/// `Path` still says `:streamGenerateContent` after a layer rewrote the request to
/// `:generateContent`.
///
/// The description is tied to the path it was computed for: if something that does not know
/// about it rewrites the path, [`of`](Self::of) and [`attach`](Self::attach) compute it afresh
/// (from the path and the [`ModelName`], [`ApiFlavor`] and [`PseudoStreamed`] extensions).
///
/// # Example
///
/// ```
/// use gemini_balance::api_error::ApiFlavor;
/// use gemini_balance::ext::{Operation, RequestInfo};
/// use http::Request;
///
/// let mut req = Request::post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
///     .body(())
///     .unwrap();
/// let info = RequestInfo::attach(&mut req);
/// assert_eq!(info.flavor, ApiFlavor::Gemini);
/// assert_eq!(info.operation, Operation::StreamGenerateContent);
/// assert_eq!(info.model_name(), Some("gemini-2.5-flash"));
/// assert!(info.stream && !info.pseudo_streamed);
/// // Inner layers (and handlers) read the same copy.
/// assert_eq!(req.extensions().get::<RequestInfo>(), Some(&info));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The API the client speaks: it decides the format of errors answered locally.
    pub flavor: ApiFlavor,
    /// REST (JSON over HTTP) or gRPC.
    pub protocol: Protocol,
    /// What the request asks of the layers below it (after any rewrite above them).
    pub operation: Operation,
    /// The model, when known: the [`ModelName`] extension, the Gemini path, or the JSON body's
    /// `model` once a layer has read it (OpenAI's routes).
    pub model: Option<ModelName>,
    /// The client asked for a stream: Gemini `streamGenerateContent`, or an OpenAI
    /// `"stream": true` that a [`PseudoStream`](crate::stream::pseudo::PseudoStream) above has
    /// read (no other layer sets it from the body). Stays `true` when the request is
    /// pseudo-streamed.
    pub stream: bool,
    /// A [`PseudoStream`](crate::stream::pseudo::PseudoStream) above answers the client with a
    /// stream and sent the layers below a non-streaming request.
    pub pseudo_streamed: bool,
    /// The path this was computed for: a different path means the request was rewritten by
    /// someone who did not update this.
    path: Arc<str>,
}

/// How a request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// JSON (or SSE) over HTTP: Gemini's REST API and OpenAI's.
    Rest,
    /// gRPC (`content-type: application/grpc…`).
    Grpc,
}

/// The operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Gemini `generateContent`.
    GenerateContent,
    /// Gemini `streamGenerateContent` (SSE with `?alt=sse`, else a streamed JSON array).
    StreamGenerateContent,
    /// Gemini `countTokens`.
    CountTokens,
    /// Gemini `embedContent`.
    EmbedContent,
    /// Gemini `batchEmbedContents`.
    BatchEmbedContents,
    /// OpenAI `chat/completions`.
    ChatCompletions,
    /// OpenAI `embeddings`.
    Embeddings,
    /// `GET …/models`.
    ListModels,
    /// `GET …/models/{model}`.
    GetModel,
    /// Anything else.
    Other,
}

impl Operation {
    /// The operation's name as the API spells it (`generateContent`, `chat/completions`, ...;
    /// `other` for the rest).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::GenerateContent => "generateContent",
            Operation::StreamGenerateContent => "streamGenerateContent",
            Operation::CountTokens => "countTokens",
            Operation::EmbedContent => "embedContent",
            Operation::BatchEmbedContents => "batchEmbedContents",
            Operation::ChatCompletions => "chat/completions",
            Operation::Embeddings => "embeddings",
            Operation::ListModels => "models.list",
            Operation::GetModel => "models.get",
            Operation::Other => "other",
        }
    }

    /// A Gemini REST method name (`generateContent`, ...).
    fn of_gemini_method(method: &str) -> Operation {
        match method.trim_end_matches('/') {
            "generateContent" => Operation::GenerateContent,
            "streamGenerateContent" => Operation::StreamGenerateContent,
            "countTokens" => Operation::CountTokens,
            "embedContent" => Operation::EmbedContent,
            "batchEmbedContents" => Operation::BatchEmbedContents,
            _ => Operation::Other,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestInfo {
    /// The description of `req`: its extension when it is current, else computed from the
    /// request (and not stored; see [`attach`](Self::attach)).
    pub fn of<B>(req: &Request<B>) -> RequestInfo {
        Self::current(req)
            .cloned()
            .unwrap_or_else(|| Self::compute(req))
    }

    /// The description of `req`, stored as its extension if it had none (or a stale one), so
    /// that whichever layer sees the request first works it out and the others read it.
    pub fn attach<B>(req: &mut Request<B>) -> RequestInfo {
        if let Some(info) = Self::current(req) {
            return info.clone();
        }
        let info = Self::compute(req);
        req.extensions_mut().insert(info.clone());
        info
    }

    /// [`attach`](Self::attach) for a request held in pieces (a reqwest-middleware request, whose
    /// extensions travel beside it).
    #[cfg(feature = "middleware")]
    pub(crate) fn attach_to(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        extensions: &mut Extensions,
    ) -> RequestInfo {
        if let Some(info) = extensions
            .get::<RequestInfo>()
            .filter(|info| *info.path == *path)
        {
            return info.clone();
        }
        let info = Self::compute_from(method, path, headers, extensions);
        extensions.insert(info.clone());
        info
    }

    /// The model's name, when known.
    pub fn model_name(&self) -> Option<&str> {
        self.model.as_ref().map(ModelName::as_str)
    }

    /// `true` when the layers below should get (and answer) a stream: the client asked for one
    /// and it is not being pseudo-streamed.
    pub fn streams_upstream(&self) -> bool {
        self.stream && !self.pseudo_streamed
    }

    /// The extension of `req`, if it describes the request's current path.
    pub(crate) fn current<B>(req: &Request<B>) -> Option<&RequestInfo> {
        req.extensions()
            .get::<RequestInfo>()
            .filter(|info| *info.path == *req.uri().path())
    }

    /// Works the description out from the request line, headers and extensions.
    fn compute<B>(req: &Request<B>) -> RequestInfo {
        Self::compute_from(
            req.method(),
            req.uri().path(),
            req.headers(),
            req.extensions(),
        )
    }

    fn compute_from(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> RequestInfo {
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let flavor = extensions
            .get::<ApiFlavor>()
            .copied()
            .unwrap_or_else(|| ApiFlavor::of_path(path));
        // A REST path is read as such whatever the content type says (a client may mislabel its
        // JSON); only a path that is no REST operation is read as a gRPC method.
        let operation = match rest_operation(method, path) {
            Operation::Other if grpc => grpc_operation(path),
            operation => operation,
        };
        let model = extensions
            .get::<ModelName>()
            .cloned()
            .or_else(|| model_from_path(path).map(ModelName::new));
        let pseudo_streamed = extensions.get::<PseudoStreamed>().is_some();
        RequestInfo {
            flavor,
            protocol: if grpc { Protocol::Grpc } else { Protocol::Rest },
            operation,
            model,
            stream: pseudo_streamed || operation == Operation::StreamGenerateContent,
            pseudo_streamed,
            path: path.into(),
        }
    }

    /// After a rewrite of the request's path: ties the description to `uri` and works the
    /// operation (and the model, unless one is known) out from it.
    pub(crate) fn rewritten(&mut self, method: &Method, uri: &Uri) {
        let path = uri.path();
        self.operation = rest_operation(method, path);
        if self.model.is_none() {
            self.model = model_from_path(path).map(ModelName::new);
        }
        self.path = path.into();
    }

    /// Updates the description in `parts` (computing it first if it has none, or a stale one):
    /// the one way a layer that changes the request tells the others.
    pub(crate) fn update(parts: &mut http::request::Parts, f: impl FnOnce(&mut RequestInfo)) {
        let mut info = match parts.extensions.get::<RequestInfo>() {
            Some(info) if *info.path == *parts.uri.path() => info.clone(),
            _ => Self::compute_from(
                &parts.method,
                parts.uri.path(),
                &parts.headers,
                &parts.extensions,
            ),
        };
        f(&mut info);
        parts.extensions.insert(info);
    }
}

/// The operation of a REST path.
fn rest_operation(method: &Method, path: &str) -> Operation {
    let trimmed = path.trim_end_matches('/');
    if *method == Method::POST {
        if trimmed.ends_with("/chat/completions") {
            return Operation::ChatCompletions;
        }
        if trimmed.ends_with("/embeddings") && !trimmed.contains("/models/") {
            return Operation::Embeddings;
        }
    }
    if let Some(at) = trimmed.rfind("/models/") {
        let tail = &trimmed[at + "/models/".len()..];
        let method_at = tail.find(':').map(|i| (i, 1)).or_else(|| {
            let lower = tail.to_ascii_lowercase();
            lower.find("%3a").map(|i| (i, 3))
        });
        return match method_at {
            Some((i, len)) => Operation::of_gemini_method(&tail[i + len..]),
            None if *method == Method::GET && !tail.is_empty() && !tail.contains('/') => {
                Operation::GetModel
            }
            None => Operation::Other,
        };
    }
    if *method == Method::GET && trimmed.ends_with("/models") {
        return Operation::ListModels;
    }
    Operation::Other
}

/// The operation of a gRPC path (`/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent`).
fn grpc_operation(path: &str) -> Operation {
    match path.rsplit('/').next().unwrap_or("") {
        "GenerateContent" => Operation::GenerateContent,
        "StreamGenerateContent" => Operation::StreamGenerateContent,
        "CountTokens" => Operation::CountTokens,
        "EmbedContent" => Operation::EmbedContent,
        "BatchEmbedContents" => Operation::BatchEmbedContents,
        "ListModels" => Operation::ListModels,
        "GetModel" => Operation::GetModel,
        _ => Operation::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, path: &str) -> RequestInfo {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        RequestInfo::of(&req)
    }

    #[test]
    fn operations_of_paths() {
        use Operation::*;
        let cases = [
            ("POST", "/v1beta/models/m:generateContent", GenerateContent),
            (
                "POST",
                "/v1beta/models/m%3AstreamGenerateContent?alt=sse",
                StreamGenerateContent,
            ),
            ("POST", "/v1/models/m:countTokens", CountTokens),
            ("POST", "/v1beta/models/m:embedContent", EmbedContent),
            (
                "POST",
                "/v1beta/models/m:batchEmbedContents",
                BatchEmbedContents,
            ),
            ("POST", "/v1beta/models/m:predict", Other),
            ("POST", "/hf/v1/chat/completions/", ChatCompletions),
            ("POST", "/v1/embeddings", Embeddings),
            ("GET", "/v1beta/models", ListModels),
            ("GET", "/v1/models", ListModels),
            ("GET", "/v1beta/models/gemini-2.5-pro", GetModel),
            ("GET", "/wp-login.php", Other),
            ("GET", "/v1/chat/completions", Other),
        ];
        for (method, path, op) in cases {
            assert_eq!(info(method, path).operation, op, "{method} {path}");
        }
    }

    #[test]
    fn streaming_flavour_and_model() {
        let gemini = info(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        );
        assert!(gemini.stream && gemini.streams_upstream());
        assert_eq!(gemini.flavor, ApiFlavor::Gemini);
        assert_eq!(gemini.model_name(), Some("gemini-2.5-flash"));
        let openai = info("POST", "/v1/chat/completions");
        assert_eq!(openai.flavor, ApiFlavor::OpenAi);
        assert_eq!(openai.model, None);
        assert!(!openai.stream);
    }

    #[test]
    fn grpc_calls_are_told_apart() {
        let req = Request::post(
            "/google.ai.generativelanguage.v1beta.GenerativeService/StreamGenerateContent",
        )
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        let info = RequestInfo::of(&req);
        assert_eq!(info.protocol, Protocol::Grpc);
        assert_eq!(info.operation, Operation::StreamGenerateContent);
        assert!(info.stream);
    }

    #[test]
    fn a_rest_path_labelled_grpc_keeps_its_operation() {
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        assert_eq!(RequestInfo::of(&req).operation, Operation::ChatCompletions);
    }

    #[test]
    fn a_stale_description_is_computed_afresh() {
        let mut req = Request::post("/v1beta/models/a:generateContent")
            .body(())
            .unwrap();
        RequestInfo::attach(&mut req);
        *req.uri_mut() = "/v1beta/models/b:countTokens".parse().unwrap();
        let info = RequestInfo::attach(&mut req);
        assert_eq!(info.model_name(), Some("b"));
        assert_eq!(info.operation, Operation::CountTokens);
        assert_eq!(req.extensions().get::<RequestInfo>(), Some(&info));
    }

    #[test]
    fn extensions_set_before_win() {
        let mut req = Request::post("/v1beta/models/m:generateContent")
            .body(())
            .unwrap();
        req.extensions_mut().insert(ModelName::new("named"));
        req.extensions_mut().insert(ApiFlavor::OpenAi);
        req.extensions_mut().insert(PseudoStreamed);
        let info = RequestInfo::of(&req);
        assert_eq!(info.model_name(), Some("named"));
        assert_eq!(info.flavor, ApiFlavor::OpenAi);
        assert!(info.stream && info.pseudo_streamed && !info.streams_upstream());
    }
}
