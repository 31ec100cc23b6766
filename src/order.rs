//! Misordered stacks, detected: each layer that must sit above [`Retry`](crate::retry::Retry)
//! or [`KeyRotation`](crate::keys::KeyRotation) looks for the mark those layers leave on the
//! requests they pass inward, and warns once per process (per mistake) when it finds one.
//!
//! The marks already travel for other reasons: `Retry` puts an [`AttemptContext`] on every
//! attempt, `KeyRotation` the injected key's [`KeyId`]. Looking one up is a probe of a small map,
//! and the warning is a relaxed atomic load once it has been given.

use std::sync::atomic::{AtomicBool, Ordering};

use http::Extensions;

use crate::ext::AttemptContext;
use crate::fingerprint::KeyId;

/// A layer found below a layer it belongs above.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Misorder {
    RetryInsideKeyRotation,
    UsageInsideRetry,
    UsageInsideKeyRotation,
    PseudoStreamInsideRetry,
    PseudoStreamInsideKeyRotation,
    FilterInsideRetry,
    FilterInsideKeyRotation,
    ForwardHeadersInsideKeyRotation,
}

const KINDS: usize = 8;

static WARNED: [AtomicBool; KINDS] = [const { AtomicBool::new(false) }; KINDS];

impl Misorder {
    fn message(self) -> &'static str {
        match self {
            Misorder::RetryInsideKeyRotation => {
                "RetryLayer is inside KeyRotationLayer: every retry reuses the failed key, and a \
                 bad key's error reaches the client; put RetryLayer above KeyRotationLayer"
            }
            Misorder::UsageInsideRetry => {
                "UsageLayer is inside RetryLayer: one usage record per attempt instead of one per \
                 request; put UsageLayer above RetryLayer"
            }
            Misorder::UsageInsideKeyRotation => {
                "UsageLayer is inside KeyRotationLayer: records miss the attempts and the key; \
                 put UsageLayer above RetryLayer and KeyRotationLayer"
            }
            Misorder::PseudoStreamInsideRetry => {
                "PseudoStreamLayer is inside RetryLayer: its 200 hides every failure from the \
                 retry loop, nothing is retried; put PseudoStreamLayer above RetryLayer"
            }
            Misorder::PseudoStreamInsideKeyRotation => {
                "PseudoStreamLayer is inside KeyRotationLayer: every key is reported successful \
                 before its answer exists; put PseudoStreamLayer above KeyRotationLayer"
            }
            Misorder::FilterInsideRetry => {
                "ParamFilterLayer is inside RetryLayer: the body is checked again on every \
                 attempt; put ParamFilterLayer above RetryLayer"
            }
            Misorder::FilterInsideKeyRotation => {
                "ParamFilterLayer is inside KeyRotationLayer: a refused request takes a key, and \
                 gets 429/503 instead of its 400 when no key is free; put ParamFilterLayer above \
                 KeyRotationLayer"
            }
            Misorder::ForwardHeadersInsideKeyRotation => {
                "ForwardHeadersLayer is inside KeyRotationLayer: it removes the pool key the \
                 key layer injected; put ForwardHeadersLayer above KeyRotationLayer"
            }
        }
    }

    /// Logs the mistake's warning, the first time only.
    fn warn_once(self) {
        let warned = &WARNED[self as usize];
        if !warned.load(Ordering::Relaxed) && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "gemini_balance::order", "misordered stack: {}", self.message());
        }
    }
}

/// Warns when `Retry` already marked this request ([`AttemptContext`]): the caller is below
/// it. `true` when it did.
pub(crate) fn below_retry(extensions: &Extensions, mistake: Misorder) -> bool {
    let below = extensions.get::<AttemptContext>().is_some();
    if below {
        mistake.warn_once();
    }
    below
}

/// Warns when `KeyRotation` already marked this request ([`KeyId`]): the caller is below it.
/// `true` when it did.
pub(crate) fn below_key_rotation(extensions: &Extensions, mistake: Misorder) -> bool {
    let below = extensions.get::<KeyId>().is_some();
    if below {
        mistake.warn_once();
    }
    below
}

/// For a layer that belongs above both `Retry` and `KeyRotation`: one warning, the one about
/// `Retry` when it is below both.
pub(crate) fn check_above_retry(
    extensions: &Extensions,
    inside_retry: Misorder,
    inside_keys: Misorder,
) {
    if !below_retry(extensions, inside_retry) {
        below_key_rotation(extensions, inside_keys);
    }
}
