//! Streaming: server-sent events, pseudo streaming, and the stream optimizer.
//!
//! - [`sse`]: writing events, and a small incremental decoder.
//! - [`pseudo`]: [`PseudoStreamLayer`](pseudo::PseudoStreamLayer), which answers a streaming
//!   request at once and replays the non-streaming answer as events.
//! - [`optimizer`]: [`StreamOptimizerLayer`](optimizer::StreamOptimizerLayer), which re-emits
//!   long text deltas of real or pseudo streams as small, evenly timed pieces.

pub mod optimizer;
pub mod pseudo;
pub mod sse;
