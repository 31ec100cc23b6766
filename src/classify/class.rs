//! The failure classes and what each one means for retries and keys.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// Which quota window a rate-limit answer refers to.
///
/// Gemini names the exhausted quota in `QuotaFailure.violations[].quotaId`, for example
/// `GenerateRequestsPerMinutePerProjectPerModel-FreeTier` or
/// `GenerateRequestsPerDayPerProjectPerModel-FreeTier`. A per-day quota only comes back when the
/// daily window resets, so it is treated very differently from a per-minute one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaScope {
    /// A per-minute quota (requests or tokens per minute).
    PerMinute,
    /// A per-day quota: it resets at midnight Pacific time.
    PerDay,
    /// The answer did not say which quota it was.
    Unknown,
}

/// What went wrong with one attempt, as decided by the [`Classifier`](super::Classifier).
///
/// Every layer of this crate (retry, key rotation, usage recording, tracing) reads this one type,
/// so there is exactly one place that knows what a status code or a Gemini error body means.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureClass {
    /// 429 / `RESOURCE_EXHAUSTED`: this key's quota for this model is used up.
    RateLimited {
        /// How long the upstream asked us to wait (`RetryInfo.retryDelay` or `Retry-After`).
        retry_after: Option<Duration>,
        /// Which quota window ran out.
        scope: QuotaScope,
    },
    /// 503 / `UNAVAILABLE`: the model is overloaded; no key is at fault.
    Overloaded {
        /// How long the upstream asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Any other 5xx.
    ServerError {
        /// The upstream status.
        status: StatusCode,
    },
    /// The upstream (or a timeout layer) gave up waiting: 504, 408, `DEADLINE_EXCEEDED`, elapsed timers.
    Timeout,
    /// The connection failed: refused, reset, closed early, DNS, TLS.
    Transport {
        /// A short description of the transport failure (never contains request data).
        detail: String,
    },
    /// The key itself was refused: invalid, expired, revoked, suspended, or without permission
    /// (400 `API_KEY_INVALID`, 401, 403 `PERMISSION_DENIED`).
    KeyRejected {
        /// The upstream status.
        status: StatusCode,
        /// Gemini's `ErrorInfo.reason` (such as `API_KEY_INVALID`) or `error.status`.
        reason: String,
    },
    /// Any other 4xx: the caller's request is at fault, never the key.
    ClientError {
        /// The upstream status.
        status: StatusCode,
    },
    /// We answered locally without a useful upstream answer (no key available, body too large, ...).
    Local {
        /// The status we answered with.
        status: StatusCode,
        /// Why.
        reason: &'static str,
    },
}

/// Whether and how a failed attempt should be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAdvice {
    /// Do not retry: the same request would fail the same way.
    Never,
    /// Retry; the same key is as good as any other (the fault was on the way, not the key).
    SameKey,
    /// Retry with a different key.
    AnotherKey,
}

/// How long a key×model cooldown lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cooldown {
    /// For a fixed duration from now.
    For(Duration),
    /// Until Gemini's daily quota resets (midnight America/Los_Angeles).
    UntilDailyReset,
}

/// What a failure does to the key that was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyEffect {
    /// Nothing: the key is not at fault.
    Nothing,
    /// Count one consecutive failure (`MAX_FAILURES` of them take the key out; a success resets).
    CountFailure,
    /// Cool the key down for the requested model.
    CoolDown(Cooldown),
    /// Disable the key until it is reset or a probe succeeds.
    Disable,
}

/// The complete answer for one failure class: retry or not, on which key, and what happens to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// Retry or not, and on which key.
    pub retry: RetryAdvice,
    /// What happens to the key that served the attempt.
    pub key: KeyEffect,
}

/// Cooldown used when a 429 does not say how long to wait.
pub const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(60);

impl FailureClass {
    /// The retry decision and key effect of this class. `docs/classification.md` is this table.
    pub fn action(&self) -> Action {
        use FailureClass::*;
        let (retry, key) = match self {
            RateLimited { retry_after, scope } => {
                let cooldown = match (scope, retry_after) {
                    (QuotaScope::PerDay, _) => Cooldown::UntilDailyReset,
                    (_, Some(d)) => Cooldown::For(*d),
                    (_, None) => Cooldown::For(DEFAULT_RATE_LIMIT_COOLDOWN),
                };
                (RetryAdvice::AnotherKey, KeyEffect::CoolDown(cooldown))
            }
            Overloaded { .. } => (RetryAdvice::AnotherKey, KeyEffect::Nothing),
            ServerError { .. } => (RetryAdvice::AnotherKey, KeyEffect::CountFailure),
            Timeout => (RetryAdvice::AnotherKey, KeyEffect::CountFailure),
            Transport { .. } => (RetryAdvice::SameKey, KeyEffect::Nothing),
            KeyRejected { .. } => (RetryAdvice::AnotherKey, KeyEffect::Disable),
            ClientError { .. } => (RetryAdvice::Never, KeyEffect::Nothing),
            Local { .. } => (RetryAdvice::Never, KeyEffect::Nothing),
        };
        Action { retry, key }
    }

    /// `true` when another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.action().retry != RetryAdvice::Never
    }

    /// `true` when the failure is tied to the key that was used (so switching keys is the cure and
    /// waiting is not needed). Such an answer says nothing about the request: the retry loops of
    /// this crate move to another key after it without spending an attempt (see
    /// [`RetryLayer::max_key_failovers`](crate::retry::RetryLayer::max_key_failovers)).
    pub fn is_key_scoped(&self) -> bool {
        matches!(
            self,
            FailureClass::RateLimited { .. } | FailureClass::KeyRejected { .. }
        )
    }

    /// `true` when the answer names the key as the cause: a quota of the key's (429 /
    /// `RESOURCE_EXHAUSTED`), or a rejection whose reason is about the key (`API_KEY_INVALID`,
    /// `CONSUMER_SUSPENDED`, `SERVICE_DISABLED`, ...). A bare 401 or 403 may be the request's
    /// doing (an OAuth token in its query, a file of another project), so it does not.
    pub fn names_the_key(&self) -> bool {
        match self {
            FailureClass::RateLimited { .. } => true,
            FailureClass::KeyRejected { reason, .. } => {
                super::KEY_REASONS.contains(&reason.as_str())
            }
            _ => false,
        }
    }

    /// The wait the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FailureClass::RateLimited { retry_after, .. }
            | FailureClass::Overloaded { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status this class stands for (for gRPC answers, the HTTP equivalent).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            FailureClass::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            FailureClass::Overloaded { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            FailureClass::ServerError { status }
            | FailureClass::KeyRejected { status, .. }
            | FailureClass::ClientError { status }
            | FailureClass::Local { status, .. } => Some(*status),
            FailureClass::Timeout => Some(StatusCode::GATEWAY_TIMEOUT),
            FailureClass::Transport { .. } => None,
        }
    }

    /// Rebuilds a class from what a store kept of it ([`name`](Self::name) and
    /// [`status`](Self::status)); details such as the retry delay are not kept. `None` for an
    /// unknown name.
    pub fn from_stored(name: &str, status: Option<u16>, detail: &str) -> Option<FailureClass> {
        let status_or = |default: StatusCode| {
            status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(default)
        };
        Some(match name {
            "rate_limited" => FailureClass::RateLimited {
                retry_after: None,
                scope: QuotaScope::Unknown,
            },
            "overloaded" => FailureClass::Overloaded { retry_after: None },
            "server_error" => FailureClass::ServerError {
                status: status_or(StatusCode::INTERNAL_SERVER_ERROR),
            },
            "timeout" => FailureClass::Timeout,
            "transport" => FailureClass::Transport {
                detail: detail.to_owned(),
            },
            "key_rejected" => FailureClass::KeyRejected {
                status: status_or(StatusCode::FORBIDDEN),
                reason: detail.to_owned(),
            },
            "client_error" => FailureClass::ClientError {
                status: status_or(StatusCode::BAD_REQUEST),
            },
            "local" => FailureClass::Local {
                status: status_or(StatusCode::SERVICE_UNAVAILABLE),
                reason: "restored",
            },
            _ => return None,
        })
    }

    /// The detail a store keeps next to the name: the transport detail or the rejection reason.
    pub fn detail(&self) -> &str {
        match self {
            FailureClass::Transport { detail } => detail,
            FailureClass::KeyRejected { reason, .. } => reason,
            FailureClass::Local { reason, .. } => reason,
            _ => "",
        }
    }

    /// A short stable name, for logs, metrics and the database (`rate_limited`, `key_rejected`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            FailureClass::RateLimited { .. } => "rate_limited",
            FailureClass::Overloaded { .. } => "overloaded",
            FailureClass::ServerError { .. } => "server_error",
            FailureClass::Timeout => "timeout",
            FailureClass::Transport { .. } => "transport",
            FailureClass::KeyRejected { .. } => "key_rejected",
            FailureClass::ClientError { .. } => "client_error",
            FailureClass::Local { .. } => "local",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureClass::RateLimited { retry_after, scope } => {
                write!(f, "rate limited ({scope:?} quota")?;
                if let Some(d) = retry_after {
                    write!(f, ", retry after {:.1}s", d.as_secs_f64())?;
                }
                f.write_str(")")
            }
            FailureClass::Overloaded { .. } => f.write_str("upstream overloaded"),
            FailureClass::ServerError { status } => write!(f, "upstream server error {status}"),
            FailureClass::Timeout => f.write_str("timed out"),
            FailureClass::Transport { detail } => write!(f, "transport error: {detail}"),
            FailureClass::KeyRejected { status, reason } => {
                write!(f, "key rejected ({status}, {reason})")
            }
            FailureClass::ClientError { status } => write!(f, "client error {status}"),
            FailureClass::Local { status, reason } => write!(f, "local {status}: {reason}"),
        }
    }
}

impl std::error::Error for FailureClass {}

/// The classified result of one attempt, carried in the response extensions so that outer
/// layers (retry, usage, tracing) reuse the decision instead of classifying again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt succeeded.
    Success,
    /// The attempt failed.
    Failure(FailureClass),
}

impl Outcome {
    /// The failure class, if the attempt failed.
    pub fn failure(&self) -> Option<&FailureClass> {
        match self {
            Outcome::Success => None,
            Outcome::Failure(class) => Some(class),
        }
    }

    /// `true` for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

impl From<Result<(), FailureClass>> for Outcome {
    fn from(r: Result<(), FailureClass>) -> Self {
        match r {
            Ok(()) => Outcome::Success,
            Err(c) => Outcome::Failure(c),
        }
    }
}
