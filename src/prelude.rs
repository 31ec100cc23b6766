//! The types a typical stack needs, in one import: the layers, the key pool, the stores and the
//! classifier.
//!
//! `use gemini_balance::prelude::*;` brings types and the store traits only (no functions, no
//! constants); items behind a feature are here when the feature is on. One name is also
//! tower's: `RetryLayer` (tower's is `tower::retry::RetryLayer`, a policy-driven retry); an
//! explicit `use` of tower's wins over this glob.
//!
//! # Example
//!
//! ```
//! use gemini_balance::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let store = MemoryStore::new();
//! // The layers in their designed order (see `stack::GeminiStack`).
//! let stack = GeminiStack::new()
//!     .pseudo_stream(PseudoStreamLayer::new())
//!     .usage(UsageLayer::new(store.clone()))
//!     .filter(ParamFilterLayer::new())
//!     .retry(RetryLayer::new().classifier(Classifier::new()))
//!     .keys(pool);
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```

pub use crate::auth::{ClientAuthLayer, ClientTokens};
pub use crate::classify::{Classifier, FailureClass, Outcome};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use crate::client::ReqwestService;
#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
pub use crate::client::Upstream;
#[cfg(feature = "middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "middleware")))]
pub use crate::client::{
    ClassifiedStrategy, KeyFailoverPolicy, KeyRotationMiddleware, RetryMiddleware, UsageMiddleware,
};
pub use crate::client::{ForwardHeadersLayer, GatewayErrorsLayer};
pub use crate::decode::DecodeLayer;
pub use crate::filter::ParamFilterLayer;
pub use crate::keys::{ApiKey, KeyId, KeyPool, KeyRotationLayer, Strategy};
pub use crate::normalize_url::NormalizeUrlLayer;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub use crate::openai::OpenAiLayer;
pub use crate::retry::RetryLayer;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub use crate::rules::ModelRulesLayer;
pub use crate::stack::GeminiStack;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::store::SqliteStore;
pub use crate::store::{KeyStateStore, MemoryStore, UsageSink};
pub use crate::stream::optimizer::StreamOptimizerLayer;
pub use crate::stream::pseudo::PseudoStreamLayer;
pub use crate::usage::{RequestRecord, UsageLayer};
pub use crate::whole_answer::WholeAnswerLayer;
