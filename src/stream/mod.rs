//! Streaming: server-sent events, pseudo streaming, and the stream optimizer.

pub mod sse;
