//! [`Charger`]: the usage sink that counts each answer's tokens against its identity.

use std::fmt;
use std::sync::Arc;

use super::Quotas;
use crate::usage::sink::UsageSink;
use crate::usage::RequestRecord;

type IdOf = dyn Fn(&RequestRecord) -> Option<String> + Send + Sync;

/// A [`UsageSink`] that charges each record's total tokens to its identity in [`Quotas`]: by
/// default the record's client ([`ClientId`](crate::usage::ClientId), as [`ByClient`] keys
/// requests); [`Quotas::charger_by`] for another identity. Tee it with your store's sink.
///
/// [`ByClient`]: super::ByClient
#[derive(Clone)]
pub struct Charger {
    quotas: Quotas,
    id_of: Arc<IdOf>,
}

impl fmt::Debug for Charger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charger").finish_non_exhaustive()
    }
}

impl Quotas {
    /// The sink that charges each record's tokens to its client (the client token's id).
    pub fn charger(&self) -> Charger {
        self.charger_by(|record| record.client.as_ref().map(|c| c.hex()))
    }

    /// The sink that charges each record's tokens to the identity `id_of` finds in it.
    pub fn charger_by<F>(&self, id_of: F) -> Charger
    where
        F: Fn(&RequestRecord) -> Option<String> + Send + Sync + 'static,
    {
        Charger {
            quotas: self.clone(),
            id_of: Arc::new(id_of),
        }
    }
}

impl UsageSink for Charger {
    fn record(&self, record: RequestRecord) {
        if record.tokens.total == 0 {
            return;
        }
        if let Some(id) = (self.id_of)(&record) {
            self.quotas.charge(&id, record.tokens.total);
        }
    }
}
