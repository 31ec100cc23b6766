//! The writer thread: it owns the read-write connection and drains the channel.
//!
//! It blocks for the first message, takes whatever else is queued (up to the batch size)
//! without waiting, and writes the batch in **one** transaction with cached prepared
//! statements: the raw rows, the rollup UPSERTs, new fingerprints and pending key states.
//! After a batch that was not full it sleeps while records gather (`Writer::gather_records`):
//! most of a commit's cost is per transaction, not per record, so larger batches are cheaper.
//! Control messages (flush, shutdown, a closure to run on the connection, a purge) end the
//! gathering and the batch: what was queued before them is committed first, so `flush()`
//! returns only when everything sent before it is in the database. Between batches, and when
//! idle, it runs one small retention step.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::key_state;
use super::retention::{self, Budget, BudgetStep, Due, Purge, Retention, Table};
use super::rollup::{clamp, FastSet, Rollup};
use super::time::{duration_ms, ms_of};
use crate::api_error::ApiFlavor;
use crate::keys::{KeyId, KeySnapshot};
use crate::store::logs::lone_attempt;
pub(crate) use crate::store::logs::{clean_body, clean_text, MAX_BODY_BYTES, MAX_MESSAGE_CHARS};
use crate::store::TimeZone;
use crate::usage::{ClientId, RequestRecord};

/// How long after a commit the writer checkpoints at most (see `Writer::checkpoint_step`).
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the database's size is compared with its budget (two `PRAGMA` reads): at the
/// fastest measured write rate the file grows ~13 MB in this time.
const BUDGET_CHECK: Duration = Duration::from_secs(5);
/// How long after finding nothing left to delete the budget is looked at again (the rollups
/// and key state alone exceed it: a warning each time, so not every few seconds).
const BUDGET_STUCK: Duration = Duration::from_secs(600);

/// How often a gathering writer looks whether it should stop early (a full batch waiting, a
/// control message): the longest it oversleeps either.
const GATHER_STEP: Duration = Duration::from_millis(5);

/// Times a batch is retried when another connection holds the write lock past the busy
/// timeout (5 s by default, so about half a minute in all) before it is given up as lost.
const BUSY_RETRIES: u32 = 5;

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What the request path and the handle send to the writer.
pub(crate) enum Msg {
    /// A usage record (boxed: a channel slot stays small).
    Record(Box<RequestRecord>),
    /// Key states are pending in [`Shared::pending_keys`].
    Wake,
    /// Reply once everything queued before is committed.
    Flush(SyncSender<()>),
    /// Run on the connection once everything queued before is committed.
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Delete old rows in small steps; the purge replies when done.
    Purge(Box<Purge>),
    /// Replace the retention; the log purge runs again at once with it.
    Retention(Box<Retention>),
    /// Commit everything, checkpoint, reply, stop.
    Shutdown(SyncSender<()>),
}

/// Counters and pending key states shared by the handle and the writer.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Records offered to `record()` (accepted or dropped).
    pub offered: AtomicU64,
    /// Records dropped because the channel was full or the store shut down.
    pub dropped: AtomicU64,
    /// Records committed (counted after the commit, with `Release`).
    pub written: AtomicU64,
    /// Records in batches that failed to commit.
    pub lost: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Set when shutdown starts: later records are dropped.
    pub closed: AtomicBool,
    /// Control messages sent and not yet received by the writer: a gathering writer stops
    /// waiting when this is not zero (the sender also unparks it).
    pub controls: AtomicUsize,
    /// The latest state of each changed key (`None`: forget it), coalesced.
    pub pending_keys: Mutex<HashMap<KeyId, Option<KeySnapshot>>>,
}

impl Shared {
    /// Records accepted and not yet committed (in the channel or in the writer's hands).
    pub(crate) fn queued(&self) -> u64 {
        self.offered
            .load(Ordering::Relaxed)
            .saturating_sub(self.dropped.load(Ordering::Relaxed))
            .saturating_sub(self.written.load(Ordering::Relaxed))
            .saturating_sub(self.lost.load(Ordering::Relaxed))
    }

    pub(crate) fn take_pending_keys(&self) -> HashMap<KeyId, Option<KeySnapshot>> {
        std::mem::take(&mut *self.pending_keys.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts states back after a failed write, unless newer ones arrived meanwhile.
    fn restore_pending_keys(&self, states: HashMap<KeyId, Option<KeySnapshot>>) {
        let mut pending = self.pending_keys.lock().unwrap_or_else(|e| e.into_inner());
        for (id, state) in states {
            pending.entry(id).or_insert(state);
        }
    }
}

/// Logs at most once per interval (the first time at once).
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    /// Milliseconds since `start` of the last log; `u64::MAX` before the first.
    last: AtomicU64,
    interval_ms: u64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            start: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// `true` when the caller should log now.
    pub(crate) fn ready(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX || now >= last.saturating_add(self.interval_ms);
        due && self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub rx: Receiver<Msg>,
    pub shared: Arc<Shared>,
    pub batch_size: usize,
    /// How long records gather at most after a batch that was not full (see the builder's
    /// `gather`).
    pub gather: Duration,
    /// Records waiting that end the gathering early: a full batch, or half the channel.
    pub gather_until: u64,
    pub retention: Retention,
    pub next_retention: Instant,
    /// The next midnight log purge, with `retention.logs_at_midnight` (`None`: at startup).
    pub next_log_purge: Option<Instant>,
    pub time_zone: TimeZone,
    /// Commits not yet checkpointed (synced) into the database file.
    pub dirty: bool,
    /// When the writer last checkpointed.
    pub last_checkpoint: Instant,
    pub jobs: VecDeque<Purge>,
    /// Deleting the oldest log rows while the database is over `retention.max_bytes`.
    pub budget: Option<Budget>,
    /// When the database's size is next compared with `retention.max_bytes`.
    pub next_budget_check: Instant,
    /// Keys and clients known to be in the `fingerprint` table.
    pub known_keys: FastSet<KeyId>,
    pub known_clients: FastSet<ClientId>,
    pub error_log: Throttle,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch: Vec<RequestRecord> = Vec::with_capacity(self.batch_size);
        loop {
            let mut wait = if self.jobs.is_empty() && self.budget.is_none() {
                self.next_retention
                    .min(self.next_log_purge.unwrap_or(self.next_retention))
                    .saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if self.dirty {
                wait = wait.min(CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed()));
            }
            let mut control = None;
            match self.rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Record(record) => batch.push(*record),
                            Msg::Wake => {}
                            other => {
                                self.shared.controls.fetch_sub(1, Ordering::SeqCst);
                                control = Some(other);
                                break;
                            }
                        }
                        if batch.len() >= self.batch_size {
                            break;
                        }
                        next = self.rx.try_recv().ok();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish(&mut batch);
                    return;
                }
            }
            // Under load, wait for the next records instead of being woken for each one.
            let gather = control.is_none() && !batch.is_empty() && batch.len() < self.batch_size;
            self.write_batch(&mut batch);
            match control {
                None | Some(Msg::Record(_)) | Some(Msg::Wake) => {}
                Some(Msg::Flush(reply)) => {
                    let _ = reply.send(());
                }
                Some(Msg::Exec(f)) => f(&mut self.conn),
                Some(Msg::Purge(purge)) => self.jobs.push_back(*purge),
                Some(Msg::Retention(retention)) => self.set_retention(*retention),
                Some(Msg::Shutdown(reply)) => {
                    self.finish(&mut batch);
                    let _ = reply.send(());
                    return;
                }
            }
            self.retention_step();
            self.checkpoint_step();
            if gather && !self.gather.is_zero() {
                self.gather_records();
            }
        }
    }

    /// Sleeps while records queue: up to `gather`, until `gather_until` records wait, or until
    /// a control message is sent (its sender unparks this thread). A sleeping writer is never
    /// woken by `record()`, which only queues (waking a thread blocked on the channel costs a
    /// futex call and two context switches per request); and one commit of many records costs
    /// much less per record than many small ones (`docs/performance.md`, "SQLite store").
    /// While a purge is under way it gathers one step at most, so the purge keeps its pace
    /// (one step per batch).
    fn gather_records(&self) {
        let start = Instant::now();
        let gather = if self.jobs.is_empty() && self.budget.is_none() {
            self.gather
        } else {
            self.gather.min(GATHER_STEP)
        };
        loop {
            if self.shared.controls.load(Ordering::SeqCst) > 0
                || self.shared.queued() >= self.gather_until
            {
                return;
            }
            let left = gather.saturating_sub(start.elapsed());
            if left.is_zero() {
                return;
            }
            std::thread::park_timeout(left.min(GATHER_STEP));
        }
    }

    /// At most once per [`CHECKPOINT_INTERVAL`] after a commit: a passive checkpoint, which
    /// syncs the WAL and copies it into the database file. It bounds what a power loss can
    /// take to about that interval (SQLite's own checkpoint every 1,000 WAL pages only runs
    /// after ~85 single-record commits, which at low traffic can span hours).
    fn checkpoint_step(&mut self) {
        if !self.dirty || self.last_checkpoint.elapsed() < CHECKPOINT_INTERVAL {
            return;
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "checkpoint failed; retrying later");
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
    }

    /// Replaces the retention: scheduled log purges still queued under the old one are dropped
    /// (a purge someone waits for is kept), and the log purge runs at the next step with the
    /// new limits, as at startup; then on its schedule.
    fn set_retention(&mut self, retention: Retention) {
        self.jobs.retain(|job| {
            job.has_reply()
                || !(job.covers(Table::Errors)
                    || job.covers(Table::Requests)
                    || job.covers(Table::Attempts))
        });
        self.retention = retention;
        // A budget purge under way stops; the new budget is checked at the next step.
        self.budget = None;
        self.next_budget_check = Instant::now();
        if self.retention.logs_at_midnight {
            self.next_log_purge = None;
        } else {
            self.next_retention = Instant::now();
        }
    }

    /// Queues the retention purges when due, then runs one step of the first purge.
    fn retention_step(&mut self) {
        let now = Instant::now();
        let rollups = now >= self.next_retention;
        let logs = if self.retention.logs_at_midnight {
            self.next_log_purge.is_none_or(|at| now >= at)
        } else {
            rollups
        };
        if rollups {
            self.next_retention = now + self.retention.interval.max(Duration::from_secs(1));
        }
        if logs && self.retention.logs_at_midnight {
            let wall = SystemTime::now();
            let until = self
                .time_zone
                .next_midnight(wall)
                .duration_since(wall)
                .unwrap_or(Duration::from_secs(3600));
            self.next_log_purge = Some(now + until.max(Duration::from_secs(1)));
        }
        if logs || rollups {
            let now_ms = ms_of(SystemTime::now());
            for (tables, cutoff) in retention::due(&self.retention, now_ms, Due { logs, rollups }) {
                let queued = self
                    .jobs
                    .iter()
                    .any(|job| tables.iter().any(|t| job.covers(*t)));
                if !queued {
                    self.jobs.push_back(Purge::new(tables, cutoff, None));
                }
            }
        }
        if let Some(job) = self.jobs.front_mut() {
            if job.step(&self.conn, self.retention.batch_rows.max(1)) {
                self.jobs.pop_front();
            }
        }
        self.budget_step(now);
    }

    /// Every [`BUDGET_CHECK`], compares the database's size with `retention.max_bytes`; while
    /// over it, deletes one step of the oldest log rows per batch.
    fn budget_step(&mut self, now: Instant) {
        let Some(max_bytes) = self.retention.max_bytes else {
            self.budget = None;
            return;
        };
        if self.budget.is_none() && now >= self.next_budget_check {
            self.next_budget_check = now + BUDGET_CHECK;
            self.budget = Budget::over(&self.conn, max_bytes);
        }
        if let Some(budget) = &mut self.budget {
            // Deletions are commits: checkpointed like the writer's own.
            self.dirty = true;
            match budget.step(&self.conn, self.retention.batch_rows.max(1)) {
                BudgetStep::More => {}
                BudgetStep::Under => {
                    self.budget = None;
                    self.next_budget_check = now + BUDGET_CHECK;
                }
                BudgetStep::NothingLeft => {
                    // Said once; looked at again much later.
                    self.budget = None;
                    self.next_budget_check = now + BUDGET_STUCK;
                }
            }
        }
    }

    /// Writes everything still queued, then checkpoints the WAL into the database.
    fn finish(&mut self, batch: &mut Vec<RequestRecord>) {
        self.shared.closed.store(true, Ordering::Relaxed);
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Record(record) => {
                    batch.push(*record);
                    if batch.len() >= self.batch_size {
                        self.write_batch(batch);
                    }
                }
                Msg::Wake => {}
                // What was queued before a control message is committed before it is answered.
                Msg::Flush(reply) | Msg::Shutdown(reply) => {
                    self.write_batch(batch);
                    let _ = reply.send(());
                }
                Msg::Exec(f) => {
                    self.write_batch(batch);
                    f(&mut self.conn);
                }
                Msg::Purge(mut purge) => {
                    self.write_batch(batch);
                    while !purge.step(&self.conn, u32::MAX) {}
                }
                // No purge runs any more: nothing to change.
                Msg::Retention(_) => {}
            }
        }
        self.write_batch(batch);
        for mut job in self.jobs.drain(..) {
            // Answer waiting callers; scheduled purges resume at the next start.
            if let Some(reply) = job.take_reply() {
                let _ = reply.send(Err(crate::store::StoreError::new(
                    "the store shut down before the deletion finished",
                )));
            }
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "checkpoint at shutdown failed (the WAL is replayed at the next open)");
        }
        let _ = self.conn.execute_batch("PRAGMA optimize");
    }

    /// Commits the batch and the pending key states in one transaction.
    fn write_batch(&mut self, batch: &mut Vec<RequestRecord>) {
        let keys = self.shared.take_pending_keys();
        if batch.is_empty() && keys.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut new_keys: FastSet<&KeyId> = FastSet::default();
        let mut new_clients: FastSet<&ClientId> = FastSet::default();
        for record in batch.iter() {
            let keys = record
                .key
                .iter()
                .chain(record.attempt_log.iter().map(|a| &a.key));
            for key in keys {
                if !self.known_keys.contains(key) {
                    new_keys.insert(key);
                }
            }
            if let Some(client) = &record.client {
                if !self.known_clients.contains(client) {
                    new_clients.insert(client);
                }
            }
        }
        let new_fingerprints: Vec<(&'static str, String, &str)> = new_keys
            .iter()
            .map(|k| ("key", k.hex(), k.mask()))
            .chain(new_clients.iter().map(|c| ("client", c.hex(), c.mask())))
            .collect();
        let mut retries = 0;
        let result = loop {
            match write(&mut self.conn, batch, &keys, &new_fingerprints) {
                // Another connection held the write lock for the whole busy timeout: keep the
                // batch and wait again (records meanwhile queue, then drop, and are counted).
                Err(e) if is_busy(&e) && retries < BUSY_RETRIES => {
                    retries += 1;
                    tracing::warn!(
                        records = n,
                        retries,
                        "the database is locked by another connection; retrying the batch"
                    );
                }
                other => break other,
            }
        };
        match result {
            Ok(()) => {
                self.dirty = true;
                // Release: whoever sees the count sees the commit (`SqliteStore::summary`).
                self.shared.written.fetch_add(n, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.known_keys.extend(new_keys.into_iter().cloned());
                self.known_clients.extend(new_clients.into_iter().cloned());
            }
            Err(e) => {
                self.shared.lost.fetch_add(n, Ordering::Relaxed);
                self.shared.restore_pending_keys(keys);
                if self.error_log.ready() {
                    tracing::error!(error = %e, records = n, lost_total = self.shared.lost.load(Ordering::Relaxed),
                        "writing usage records failed; the batch is lost");
                }
            }
        }
        batch.clear();
    }
}

const INSERT_REQUEST: &str = "INSERT INTO request_log (request_id, at_ms, protocol, route, \
    model, key_id, key_mask, client_id, client_mask, status, success, attempts, latency_ms, \
    ttfb_ms, streamed, completion, prompt_tokens, candidates_tokens, thoughts_tokens, \
    cached_tokens, tool_use_prompt_tokens, total_tokens, lone_attempt_latency_ms) VALUES (?1, ?2, \
    ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
    ?23)";

const INSERT_ATTEMPT: &str = "INSERT INTO attempt_log (request_id, at_ms, key_id, key_mask, \
    model, status, class, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

pub(crate) const INSERT_ERROR: &str =
    "INSERT INTO error_log (at_ms, request_id, key_id, key_mask, model, \
    status, class, message, request_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

pub(crate) const INSERT_FINGERPRINT: &str =
    "INSERT OR IGNORE INTO fingerprint (kind, id, mask) VALUES (?1, ?2, ?3)";

/// The protocol as stored.
pub(crate) fn protocol_name(protocol: ApiFlavor) -> &'static str {
    protocol.as_str()
}

/// `KeyId::hex` on the stack: the writer makes one or two per record, and SQLite copies
/// the text it binds anyway.
struct Hex16([u8; 16]);

impl Hex16 {
    fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn hex_of(key: &KeyId) -> Hex16 {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = key.digest();
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((digest >> (60 - 4 * i)) & 0xf) as usize];
    }
    Hex16(out)
}

fn write(
    conn: &mut Connection,
    batch: &[RequestRecord],
    keys: &HashMap<KeyId, Option<KeySnapshot>>,
    fingerprints: &[(&'static str, String, &str)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_records(&tx, batch, true)?;
    let mut rollup = Rollup::default();
    for record in batch {
        rollup.add(record);
    }
    super::rollup::write(rollup, &tx)?;
    if !fingerprints.is_empty() {
        let mut stmt = tx.prepare_cached(INSERT_FINGERPRINT)?;
        for (kind, hex, mask) in fingerprints {
            stmt.execute(params![kind, hex, mask])?;
        }
    }
    let now_ms = ms_of(SystemTime::now());
    for (id, state) in keys {
        match state {
            Some(state) => key_state::save(&tx, state, now_ms)?,
            None => key_state::forget(&tx, id)?,
        }
    }
    tx.commit()
}

/// Writes the rows of `batch`; `errors_from_attempts`: each failed attempt also gets an
/// `error_log` row (an import brings its error rows separately, see `super::import`).
pub(crate) fn insert_records(
    tx: &Transaction<'_>,
    batch: &[RequestRecord],
    errors_from_attempts: bool,
) -> rusqlite::Result<()> {
    let mut request = tx.prepare_cached(INSERT_REQUEST)?;
    let mut attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
    let mut error = tx.prepare_cached(INSERT_ERROR)?;
    for r in batch {
        // Stored as the same 64 bits, read as a signed integer.
        let request_id = r.id.get() as i64;
        let key_hex = r.key.as_ref().map(hex_of);
        let key_hex = key_hex.as_ref().map(Hex16::as_str);
        let client_hex = r.client.as_ref().map(|c| c.hex());
        let t = &r.tokens;
        let lone = lone_attempt(r);
        request.execute(params![
            request_id,
            ms_of(r.at),
            protocol_name(r.protocol),
            clean_text(&r.route, MAX_MESSAGE_CHARS),
            r.model.as_deref().map(model_text),
            key_hex,
            r.key.as_ref().map(|k| k.mask()),
            client_hex,
            r.client.as_ref().map(|c| c.mask()),
            r.status,
            r.success,
            r.attempts,
            duration_ms(r.latency),
            r.time_to_first_byte.map(duration_ms),
            r.streamed,
            r.completion.as_str(),
            clamp(t.prompt),
            clamp(t.candidates),
            clamp(t.thoughts),
            clamp(t.cached),
            clamp(t.tool_use_prompt),
            clamp(t.total),
            lone.map(|a| duration_ms(a.latency)),
        ])?;
        let mut body = None;
        let written = if lone.is_some() {
            &[][..]
        } else {
            &r.attempt_log[..]
        };
        for a in written {
            let at = ms_of(a.at);
            let key_hex = hex_of(&a.key);
            let key_hex = key_hex.as_str();
            let model = a.model.as_deref().or(r.model.as_deref()).map(model_text);
            attempt.execute(params![
                request_id,
                at,
                key_hex,
                a.key.mask(),
                model,
                a.status,
                a.class,
                duration_ms(a.latency),
            ])?;
            if let Some(class) = a.class.filter(|_| errors_from_attempts) {
                if body.is_none() {
                    body = Some(
                        r.request_body
                            .as_deref()
                            .map(|b| clean_body(b, MAX_BODY_BYTES)),
                    );
                }
                error.execute(params![
                    at,
                    request_id,
                    key_hex,
                    a.key.mask(),
                    model,
                    a.status,
                    class,
                    a.error_message
                        .as_deref()
                        .map(|m| clean_text(m, MAX_MESSAGE_CHARS)),
                    body.as_ref().and_then(|b| b.as_deref()),
                ])?;
            }
        }
    }
    Ok(())
}

/// A model name as stored: NUL characters become U+FFFD, as in the rollups and the other
/// stores.
fn model_text(model: &str) -> std::borrow::Cow<'_, str> {
    crate::store::logs::without_nul(std::borrow::Cow::Borrowed(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_redacted_and_cut() {
        let key = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
        let message = format!("key {key} is bad");
        assert_eq!(clean_text(&message, 100), "key AIza…stuv is bad");
        assert_eq!(clean_text("ééééé", 3), "ééé…");
        assert_eq!(clean_body("ééé", 5), "é…");
        assert_eq!(clean_body("ééé", 6), "ééé");
        assert_eq!(clean_text("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(clean_body("a\0b", 10), "a\u{FFFD}b");
        let long = format!("{}{key}", "x".repeat(10));
        assert!(!clean_body(&long, 20).contains("AIzaSyA"));
    }

    #[test]
    fn channel_slots_stay_small() {
        // The channel allocates `capacity` slots up front.
        assert!(
            std::mem::size_of::<Msg>() <= 24,
            "{}",
            std::mem::size_of::<Msg>()
        );
    }

    #[test]
    fn key_hex_is_the_key_ids_hex() {
        for key in ["AIzaSyA1234567890abcdefghijklmnopqrstuv", "x"] {
            let id = KeyId::of(key);
            assert_eq!(hex_of(&id).as_str(), id.hex());
        }
        assert_eq!(
            hex_of(&KeyId::from_parts(0x0a, "m")).as_str(),
            "000000000000000a"
        );
        assert_eq!(
            hex_of(&KeyId::from_parts(u64::MAX, "m")).as_str(),
            "ffffffffffffffff"
        );
    }

    #[test]
    fn throttle_logs_first_then_waits() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert!(t.ready());
        assert!(!t.ready());
        let t = Throttle::new(Duration::ZERO);
        assert!(t.ready());
        assert!(t.ready());
    }
}
