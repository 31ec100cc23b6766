//! What a request path asks the mock for.
//!
//! Paths are parsed by hand rather than by axum's router, because Gemini's `models/{model}:action`
//! puts a `:` inside a path segment and SDKs may send it URL-encoded as `%3A`.

use http::Method;

/// A Gemini method called on a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `:generateContent`.
    Generate,
    /// `:streamGenerateContent`.
    Stream,
    /// `:countTokens`.
    CountTokens,
    /// `:embedContent`.
    Embed,
    /// `:batchEmbedContents`.
    BatchEmbed,
    /// Anything else (answered 404).
    Other(String),
}

impl Action {
    fn parse(name: &str) -> Action {
        match name {
            "generateContent" => Action::Generate,
            "streamGenerateContent" => Action::Stream,
            "countTokens" => Action::CountTokens,
            "embedContent" => Action::Embed,
            "batchEmbedContents" => Action::BatchEmbed,
            other => Action::Other(other.to_owned()),
        }
    }

    /// The method name as Gemini spells it.
    pub fn name(&self) -> &str {
        match self {
            Action::Generate => "generateContent",
            Action::Stream => "streamGenerateContent",
            Action::CountTokens => "countTokens",
            Action::Embed => "embedContent",
            Action::BatchEmbed => "batchEmbedContents",
            Action::Other(name) => name,
        }
    }
}

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET` (or `HEAD`) `/{version}/models`.
    ListModels {
        /// `v1beta` or `v1`.
        version: String,
    },
    /// `GET` (or `HEAD`) `/{version}/models/{model}`.
    GetModel {
        /// `v1beta` or `v1`.
        version: String,
        /// The model id.
        model: String,
    },
    /// `GET` (or `HEAD`) `/{version}/openai/models`: the OpenAI-compatible endpoint's list.
    OpenAiModels,
    /// `POST /{version}/models/{model}:{action}`.
    Call {
        /// `v1beta` or `v1`.
        version: String,
        /// The model id.
        model: String,
        /// The method.
        action: Action,
    },
    /// Anything else.
    Unknown,
}

impl Route {
    /// Parses a method and a path (`%3A` accepted for `:`).
    pub fn parse(method: &Method, path: &str) -> Route {
        let path = decode_colon(path);
        let Some((version, rest)) = ["v1beta", "v1"].iter().find_map(|v| {
            path.strip_prefix('/')
                .and_then(|p| p.strip_prefix(v))
                .and_then(|p| p.strip_prefix('/'))
                .map(|rest| (v.to_string(), rest.trim_end_matches('/').to_owned()))
        }) else {
            return Route::Unknown;
        };
        // HEAD is answered as GET (without the body), as Google's front ends do.
        let read = *method == Method::GET || *method == Method::HEAD;
        if rest == "openai/models" && read {
            return Route::OpenAiModels;
        }
        if rest == "models" {
            return if read {
                Route::ListModels { version }
            } else {
                Route::Unknown
            };
        }
        let Some(target) = rest.strip_prefix("models/") else {
            return Route::Unknown;
        };
        if target.is_empty() || target.contains('/') {
            return Route::Unknown;
        }
        match (target.split_once(':'), method) {
            (Some((model, action)), &Method::POST) if !model.is_empty() => Route::Call {
                version,
                model: model.to_owned(),
                action: Action::parse(action),
            },
            (None, _) if read => Route::GetModel {
                version,
                model: target.to_owned(),
            },
            _ => Route::Unknown,
        }
    }

    /// The model the request is for, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            Route::GetModel { model, .. } | Route::Call { model, .. } => Some(model),
            _ => None,
        }
    }
}

fn decode_colon(path: &str) -> String {
    path.replace("%3A", ":").replace("%3a", ":")
}
