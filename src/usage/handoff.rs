//! [`RecordHandoff`]: how a layer above [`Usage`](super::Usage) that answers the client itself
//! gets the last word on the record.
//!
//! [`PseudoStream`](crate::stream::pseudo::PseudoStream) answers `200` with an event stream and
//! turns the inner answer into events; when that answer fails (an error status, a body that is
//! cut off, too large or not parseable) the client reads an error event, while a `Usage` below
//! saw a JSON answer that ended well. So the outer layer puts a `RecordHandoff` in the request
//! extensions; `Usage` hands its finished record to it instead of to the sink, and the outer
//! layer amends it with what the client saw ([`Settled`]) and commits it. Whichever of the two
//! comes second commits; if the outer side goes away without a word ([`HandoffGuard`] dropped),
//! the record is committed with the outcome the guard was given for that case (the pseudo stream
//! says `client_gone`): a record is never lost.

use std::sync::{Arc, Mutex};

use http::StatusCode;

use super::record::{Completion, RequestRecord, TokenUsage};
use super::sink::UsageSink;

/// What the client saw, as told by the layer that answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The record stands as `Usage` wrote it.
    AsRecorded,
    /// The client got `status`, then the stream ended with an error event.
    ErrorEvent {
        /// The status of the answer's head.
        status: StatusCode,
    },
    /// The client got `status` and went away before the layer's answer was written.
    ClientGone {
        /// The status of the answer's head.
        status: StatusCode,
    },
    /// The layer answered the client with an error of its own, `status`, in place of the inner
    /// answer (which it could not use). Only the OpenAI conversion does.
    #[cfg_attr(not(feature = "openai"), allow(dead_code))]
    Replaced {
        /// The status the client got.
        status: StatusCode,
    },
}

struct State {
    /// The path the client sent (the layer above may have rewritten it for the layers below).
    route: String,
    /// The slot of a layer further out, which has the word after this one.
    outer: Option<RecordHandoff>,
    record: Option<Held>,
    settled: Option<Settled>,
    committed: bool,
}

/// A finished record waiting for the outer layer's word.
struct Held {
    record: RequestRecord,
    sink: Arc<dyn UsageSink>,
    /// The upstream's own token count, when a layer left one ([`UpstreamUsage`]).
    ///
    /// [`UpstreamUsage`]: super::UpstreamUsage
    upstream_tokens: Option<TokenUsage>,
}

/// The shared slot: `Usage` delivers into it, the outer layer settles it.
#[derive(Clone)]
pub(crate) struct RecordHandoff(Arc<Mutex<State>>);

impl std::fmt::Debug for RecordHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordHandoff").finish_non_exhaustive()
    }
}

impl RecordHandoff {
    /// A new slot for a request sent to `route` (whose extensions may hold the slot of a layer
    /// further out: it gets the amended record), and the guard the layer keeps. The layer puts
    /// the slot in the request extensions in place of the outer one.
    ///
    /// `on_drop` is what a guard dropped before it was settled says.
    pub(crate) fn new(
        route: &str,
        extensions: &http::Extensions,
        on_drop: Settled,
    ) -> (RecordHandoff, HandoffGuard) {
        let slot = RecordHandoff(Arc::new(Mutex::new(State {
            route: route.to_owned(),
            outer: extensions.get::<RecordHandoff>().cloned(),
            record: None,
            settled: None,
            committed: false,
        })));
        let guard = HandoffGuard {
            slot: Some(slot.clone()),
            on_drop,
        };
        (slot, guard)
    }

    /// `Usage`'s finished record (and the upstream's own token count, when a layer left one):
    /// committed now if the outer layer has settled, else held.
    pub(crate) fn deliver(
        &self,
        record: RequestRecord,
        sink: Arc<dyn UsageSink>,
        upstream_tokens: Option<TokenUsage>,
    ) {
        let held = Held {
            record,
            sink,
            upstream_tokens,
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match state.settled {
            Some(settled) if !state.committed => {
                state.committed = true;
                let route = std::mem::take(&mut state.route);
                let outer = state.outer.take();
                drop(state);
                commit(held, settled, route, outer);
            }
            // Delivered twice (not done by `Usage`): the first one stands.
            Some(_) => {}
            None => state.record = Some(held),
        }
    }

    fn settle(&self, settled: Settled) {
        let held = {
            let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if state.settled.is_some() {
                return;
            }
            state.settled = Some(settled);
            match state.record.take() {
                Some(held) => {
                    state.committed = true;
                    Some((held, std::mem::take(&mut state.route), state.outer.take()))
                }
                None => None,
            }
        };
        if let Some((held, route, outer)) = held {
            commit(held, settled, route, outer);
        }
    }
}

/// The outer layer's side of a [`RecordHandoff`]: settles it once; dropping it unsettled
/// settles it as told at its creation (the record is never lost).
#[derive(Debug)]
pub(crate) struct HandoffGuard {
    slot: Option<RecordHandoff>,
    on_drop: Settled,
}

impl HandoffGuard {
    /// Says what the client saw; later calls are ignored.
    pub(crate) fn settle(&mut self, settled: Settled) {
        if let Some(slot) = self.slot.take() {
            slot.settle(settled);
        }
    }
}

impl Drop for HandoffGuard {
    fn drop(&mut self) {
        self.settle(self.on_drop);
    }
}

/// Amends the record with what the client saw and hands it to the sink (or to the next layer
/// out that answered the client itself).
fn commit(held: Held, settled: Settled, route: String, outer: Option<RecordHandoff>) {
    let Held {
        mut record,
        sink,
        upstream_tokens,
    } = held;
    record.route = route;
    match settled {
        Settled::AsRecorded => {}
        Settled::ErrorEvent { status } => {
            record.status = status.as_u16();
            record.streamed = true;
            // Whatever the inner body did (a `Usage` below sees a body the outer layer dropped
            // as a client gone), the client read the error event.
            record.completion = Completion::ErrorEvent;
            record.success = false;
            // The client's events carried no tokens: keep only the upstream's own count, as a
            // `Usage` above the outer layer would.
            record.tokens = upstream_tokens.unwrap_or_default();
        }
        Settled::ClientGone { status } => {
            record.status = status.as_u16();
            record.streamed = true;
            record.completion = Completion::ClientGone;
            record.success = false;
            record.tokens = upstream_tokens.unwrap_or_default();
        }
        Settled::Replaced { status } => {
            record.status = status.as_u16();
            // The client got the layer's whole answer, whatever became of the inner one.
            record.completion = Completion::Complete;
            record.success = false;
            record.tokens = upstream_tokens.unwrap_or_default();
        }
    }
    if let Some(outer) = outer {
        return outer.deliver(record, sink, upstream_tokens);
    }
    if record.success {
        // Kept in case the client saw a failure; it did not.
        record.request_body = None;
    }
    sink.record(record);
}
