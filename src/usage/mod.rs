//! Usage recording: one [`RequestRecord`] per client request, with every upstream attempt and
//! the tokens the answer reported.
//!
//! The record types live here; the layer that fills them is [`UsageLayer`] (coming with this
//! module), and they are written by a [`UsageSink`](crate::store::UsageSink).

mod record;

pub use self::record::{AttemptRecord, ClientId, Completion, RequestRecord, TokenUsage};
