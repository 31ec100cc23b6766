//! The writer task: it drains the bounded record channel and writes batches with multi-row
//! statements, one transaction per batch: the raw rows, the rollup upserts, new fingerprints
//! and the pending key states.
//!
//! When the database cannot be reached (or a deadlock with another instance aborts the
//! transaction), the batch is kept and retried with backoff (100 ms doubling to 5 s);
//! meanwhile `record()` keeps queuing, and once the channel is full records are dropped and
//! counted. A write attempt that gets no answer within 30 s counts as the database being away.
//! When the database refuses a batch for another reason, its records and key states are
//! written apart, the records in halves until the refused ones are alone: only those are
//! counted as lost, and a key state still refused alone is dropped (logged). At shutdown a
//! batch that still cannot be written after the shutdown timeout is counted as lost, and
//! records sent meanwhile as dropped: every record ends up written, dropped or lost, never
//! silently gone.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sqlx_core::any::{Any, AnyPool};
use sqlx_core::query::{query, Query};
use sqlx_core::transaction::Transaction;
use tokio::sync::{mpsc, oneshot};

use super::dialect::Engine;
use super::schema::COUNTER_COLUMNS;
use super::Shared;
use crate::keys::{KeyId, KeySnapshot};
use crate::sql_error::transient;
use crate::store::key_row::KeyRow;
use crate::store::logs::{clean_body, clean_text, lone_attempt, MAX_BODY_BYTES, MAX_MESSAGE_CHARS};
use crate::store::rollup::{clamp, Counters, FastSet, Rollup, RollupRows};
use crate::store::time::{duration_ms, ms_of};
use crate::usage::{ClientId, RequestRecord};

/// What `record()` sends.
pub(crate) enum Msg {
    Record(Box<RequestRecord>),
    /// Key states are pending in `Shared::pending_keys`.
    Wake,
}

/// What the handle asks of the writer (an unbounded channel beside the records).
pub(crate) enum Control {
    /// Reply once everything sent before is written (or given up).
    Flush(Reply),
    /// Write everything, reply, stop.
    Shutdown(Reply),
}

/// Where the writer answers: a thread blocked on a std channel, or a future.
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::SyncSender<()>),
    Async(oneshot::Sender<()>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.try_send(());
            }
            Reply::Async(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

type Args<'q> = Query<'q, Any, sqlx_core::any::AnyArguments<'q>>;

pub(crate) struct Writer {
    pub pool: AnyPool,
    pub engine: Engine,
    pub rx: mpsc::Receiver<Msg>,
    pub control: mpsc::UnboundedReceiver<Control>,
    /// The record channel, to wake the writer itself when key states are put back.
    pub wake: mpsc::WeakSender<Msg>,
    pub shared: Arc<Shared>,
    pub batch_size: usize,
    pub gather: Duration,
    pub shutdown_timeout: Duration,
    pub known_keys: FastSet<KeyId>,
    pub known_clients: FastSet<ClientId>,
    pub last_error_log: Option<Instant>,
    /// Controls received and not yet answered.
    pub controls: VecDeque<Control>,
    /// This writer's name in `writer_mark` (random per process), and the number of its last
    /// batch with records.
    pub mark: WriterMark,
}

/// Longest one write attempt may take before it counts as the database being away (and is
/// retried; at shutdown, the deadline bounds it too).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time an attempt gets at shutdown.
const LAST_ATTEMPT: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Writer {
    pub(crate) async fn run(mut self) {
        self.write_until_shutdown().await;
        // A record sent while the shutdown was being written is counted as dropped, not left
        // in the channel uncounted; later ones fail to send (and are counted by `record()`).
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Record(_) = msg {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn write_until_shutdown(&mut self) {
        let mut batch: Vec<RequestRecord> = Vec::with_capacity(self.batch_size);
        loop {
            if self.controls.is_empty() {
                tokio::select! {
                    biased;
                    c = self.control.recv() => match c {
                        Some(c) => self.controls.push_back(c),
                        None => {
                            self.drain_all(&mut batch, None).await;
                            return;
                        }
                    },
                    m = self.rx.recv() => match m {
                        Some(Msg::Record(r)) => batch.push(*r),
                        Some(Msg::Wake) => {}
                        None => {
                            self.write_batch(&mut batch, None).await;
                            return;
                        }
                    },
                }
            }
            if let Some(control) = self.controls.pop_front() {
                match control {
                    Control::Flush(reply) => {
                        self.drain_all(&mut batch, None).await;
                        reply.send();
                    }
                    Control::Shutdown(reply) => {
                        self.shared.closed.store(true, Ordering::Relaxed);
                        let deadline = Instant::now() + self.shutdown_timeout;
                        self.drain_all(&mut batch, Some(deadline)).await;
                        reply.send();
                        return;
                    }
                }
                continue;
            }
            self.take_ready(&mut batch);
            let gather = !batch.is_empty() && batch.len() < self.batch_size;
            self.write_batch(&mut batch, None).await;
            if gather && !self.gather.is_zero() {
                // Let records gather instead of waking for each; a control ends the wait.
                let sleep = tokio::time::sleep(self.gather);
                tokio::select! {
                    biased;
                    Some(c) = self.control.recv() => self.controls.push_back(c),
                    _ = sleep => {}
                }
            }
        }
    }

    /// Takes what is queued, up to a batch, without waiting.
    fn take_ready(&mut self, batch: &mut Vec<RequestRecord>) {
        while batch.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(Msg::Record(r)) => batch.push(*r),
                Ok(Msg::Wake) => {}
                Err(_) => break,
            }
        }
    }

    /// Writes everything queued now.
    async fn drain_all(&mut self, batch: &mut Vec<RequestRecord>, deadline: Option<Instant>) {
        loop {
            self.take_ready(batch);
            let more = batch.len() >= self.batch_size;
            self.write_batch(batch, deadline).await;
            if !more {
                break;
            }
        }
    }

    fn log_error(&mut self, message: &str, error: &sqlx_core::Error, records: u64) {
        let due = self
            .last_error_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            self.last_error_log = Some(Instant::now());
            tracing::error!(error = %error, records, engine = self.engine.name(), "{message}");
        }
    }

    /// Commits the batch and the pending key states; retries while the database is away.
    async fn write_batch(&mut self, batch: &mut Vec<RequestRecord>, deadline: Option<Instant>) {
        let keys = self.shared.take_pending_keys();
        if batch.is_empty() && keys.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut new_keys: FastSet<&KeyId> = FastSet::default();
        let mut new_clients: FastSet<&ClientId> = FastSet::default();
        for record in batch.iter() {
            for key in record
                .key
                .iter()
                .chain(record.attempt_log.iter().map(|a| &a.key))
            {
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
        let fingerprints: Vec<(&'static str, String, String)> = new_keys
            .iter()
            .map(|k| ("key", k.hex(), k.mask().to_owned()))
            .chain(
                new_clients
                    .iter()
                    .map(|c| ("client", c.hex(), c.mask().to_owned())),
            )
            .collect();
        let mut deadline = deadline;
        let result = self
            .write_retrying(batch, &keys, &fingerprints, &mut deadline)
            .await;
        let lost = match result {
            Ok(()) => 0,
            Err(e) if transient(&e) => {
                // Out of time (shutdown) with the database away.
                self.shared.restore_pending_keys(keys);
                self.wake();
                self.log_error("writing usage records failed; the batch is lost", &e, n);
                n
            }
            Err(e) => {
                // One bad row must not take the others with it, nor every later batch: the
                // records and the key states apart, then the records in halves.
                self.log_error(
                    "the database refused the batch; writing its rows apart to find the bad ones",
                    &e,
                    n,
                );
                let lost = if batch.is_empty() {
                    0
                } else {
                    self.isolate_records(batch, &fingerprints, &mut deadline, keys.is_empty())
                        .await
                };
                if !keys.is_empty() {
                    self.write_keys_apart(keys, &mut deadline).await;
                }
                lost
            }
        };
        if lost < n {
            self.shared.written.fetch_add(n - lost, Ordering::Release);
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.known_keys.extend(new_keys.into_iter().cloned());
            self.known_clients.extend(new_clients.into_iter().cloned());
        } else if n == 0 && lost == 0 {
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.lost.fetch_add(lost, Ordering::Relaxed);
        batch.clear();
    }

    /// One transaction of `records` and `keys`, tried again while the database is away (until
    /// the deadline, which a shutdown arriving meanwhile sets).
    async fn write_retrying(
        &mut self,
        records: &[RequestRecord],
        keys: &HashMap<KeyId, Option<KeySnapshot>>,
        fingerprints: &[(&'static str, String, String)],
        deadline: &mut Option<Instant>,
    ) -> Result<(), sqlx_core::Error> {
        let mut backoff = BACKOFF_START;
        // Batches with records are numbered; a retry first asks whether the number was
        // committed (key states alone are upserts: writing them twice is harmless).
        let mut mark = (!records.is_empty()).then(|| self.mark.next());
        let result = loop {
            // A database that stops answering (no reset, no error) must not hold the writer
            // forever, nor a shutdown past its deadline (one arriving during the attempt
            // included); past the deadline, an attempt still gets a moment, so a healthy
            // database writes what is left.
            let started = Instant::now();
            let attempt = {
                let attempt = write(
                    &self.pool,
                    self.engine,
                    records,
                    keys,
                    fingerprints,
                    mark.as_ref(),
                );
                tokio::pin!(attempt);
                loop {
                    let give_up = match *deadline {
                        Some(d) => d.max(started + LAST_ATTEMPT).min(started + WRITE_TIMEOUT),
                        None => started + WRITE_TIMEOUT,
                    };
                    tokio::select! {
                        biased;
                        result = &mut attempt => break result,
                        _ = tokio::time::sleep_until(give_up.into()) => {
                            break Err(sqlx_core::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("the database did not answer within {:?}", give_up - started),
                            )));
                        }
                        Some(c) = self.control.recv(), if deadline.is_none() => {
                            if matches!(c, Control::Shutdown(_)) {
                                self.shared.closed.store(true, Ordering::Relaxed);
                                *deadline = Some(Instant::now() + self.shutdown_timeout);
                            }
                            // Answered by the main loop once this batch is done.
                            self.controls.push_back(c);
                        }
                    }
                }
            };
            match attempt {
                Ok(()) => {
                    if mark.is_some() {
                        self.mark.created = true;
                    }
                    break Ok(());
                }
                Err(e) if transient(&e) && deadline.is_none_or(|d| Instant::now() < d) => {
                    if let Some(mark) = &mut mark {
                        // The commit may have gone through with its answer lost.
                        mark.in_doubt = true;
                    }
                    self.shared.retrying.store(true, Ordering::Relaxed);
                    self.log_error(
                        "the database is unreachable; keeping the batch and retrying",
                        &e,
                        records.len() as u64,
                    );
                    // A shutdown while waiting bounds the retries.
                    tokio::select! {
                        biased;
                        Some(c) = self.control.recv(), if deadline.is_none() => {
                            if matches!(c, Control::Shutdown(_)) {
                                self.shared.closed.store(true, Ordering::Relaxed);
                                *deadline = Some(Instant::now() + self.shutdown_timeout);
                            }
                            // Answered by the main loop once this batch is done.
                            self.controls.push_back(c);
                        }
                        _ = tokio::time::sleep(deadline.map_or(backoff, |d| {
                            d.saturating_duration_since(Instant::now()).min(backoff)
                        })) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => break Err(e),
            }
        };
        self.shared.retrying.store(false, Ordering::Relaxed);
        result
    }

    /// Writes `records` in ever smaller parts until the rows the database refuses are alone;
    /// returns how many records are lost (those, or the rest when the database goes away past
    /// the deadline). `split` skips writing the whole first (it was just refused), unless it is
    /// one record (written again, so its refusal is logged by its id).
    async fn isolate_records(
        &mut self,
        records: &[RequestRecord],
        fingerprints: &[(&'static str, String, String)],
        deadline: &mut Option<Instant>,
        split: bool,
    ) -> u64 {
        let no_keys = HashMap::new();
        let mut lost = 0;
        let mut parts = vec![(0, records.len())];
        if split && records.len() > 1 {
            parts = halves(0, records.len());
        }
        while let Some((start, end)) = parts.pop() {
            let part = &records[start..end];
            match self
                .write_retrying(part, &no_keys, fingerprints, deadline)
                .await
            {
                Ok(()) => {}
                Err(e) if transient(&e) || part.len() == 1 => {
                    let n = part.len() as u64;
                    lost += n;
                    if part.len() == 1 {
                        // The record's id and time only: no text of it.
                        tracing::error!(
                            error = %e,
                            request_id = part[0].id.get(),
                            engine = self.engine.name(),
                            "the database refused a usage record; it is lost"
                        );
                    } else {
                        self.log_error("writing usage records failed; they are lost", &e, n);
                    }
                }
                Err(_) => parts.extend(halves(start, end)),
            }
        }
        lost
    }

    /// Writes key states in a transaction of their own, then one by one; a state the database
    /// still refuses is dropped (logged by its fingerprint), so it cannot fail every later
    /// batch. States not written because the database is away are kept for the next batch.
    async fn write_keys_apart(
        &mut self,
        keys: HashMap<KeyId, Option<KeySnapshot>>,
        deadline: &mut Option<Instant>,
    ) {
        match self.write_retrying(&[], &keys, &[], deadline).await {
            Ok(()) => return,
            Err(e) if transient(&e) => {
                self.shared.restore_pending_keys(keys);
                self.wake();
                return;
            }
            Err(_) => {}
        }
        let mut away = HashMap::new();
        for (id, state) in keys {
            let one = HashMap::from([(id, state)]);
            match self.write_retrying(&[], &one, &[], deadline).await {
                Ok(()) => {}
                Err(e) if transient(&e) => away.extend(one),
                Err(e) => {
                    for id in one.keys() {
                        tracing::error!(
                            error = %e,
                            key = %id,
                            engine = self.engine.name(),
                            "the database refused a key's state; dropping it"
                        );
                    }
                }
            }
        }
        if !away.is_empty() {
            self.shared.restore_pending_keys(away);
            self.wake();
        }
    }

    /// Wakes the writer for key states put back, without waiting for the next record.
    fn wake(&self) {
        if let Some(tx) = self.wake.upgrade() {
            let _ = tx.try_send(Msg::Wake);
        }
    }
}

/// `start..end` in two halves, the first to be written first (popped last).
fn halves(start: usize, end: usize) -> Vec<(usize, usize)> {
    let mid = start + (end - start) / 2;
    vec![(mid, end), (start, mid)]
}

/// Rows per multi-row statement: well under the 65,535 placeholders both engines allow, and
/// (for error rows, whose bodies can be 64 KiB) under MySQL's default packet size.
const REQUEST_ROWS: usize = 512;
const ATTEMPT_ROWS: usize = 1_024;
const ERROR_ROWS: usize = 32;
const ROLLUP_ROWS: usize = 1_024;

const REQUEST_COLUMNS: &str = "request_id, at_ms, protocol, route, model, key_id, key_mask, \
    client_id, client_mask, status, success, attempts, latency_ms, ttfb_ms, streamed, \
    completion, prompt_tokens, candidates_tokens, thoughts_tokens, cached_tokens, \
    tool_use_prompt_tokens, total_tokens, lone_attempt_latency_ms";
const ATTEMPT_COLUMNS: &str =
    "request_id, at_ms, key_id, key_mask, model, status, class, latency_ms";
const ERROR_COLUMNS: &str =
    "at_ms, request_id, key_id, key_mask, model, status, class, message, request_body";

/// `items` in chunks of at most `max`, each a power of two long (the binary digits of the
/// length): a multi-row statement per chunk size is prepared once per connection and then
/// cached, instead of one statement text per batch length.
fn pow2_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = max.max(1);
    let top = 1usize << (usize::BITS - 1 - max.leading_zeros());
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = if rest.len() >= top {
            top
        } else {
            1usize << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// A model name as stored (the column holds 255 characters).
fn name(text: &str) -> String {
    let cleaned = clean_text(text, 250);
    cleaned.into_owned()
}

/// Names the batches of one writer, so that a batch retried after its commit's answer was lost
/// is not written twice: each transaction with records sets the writer's row of `writer_mark`
/// to the batch's number, and a retry first reads it.
#[derive(Debug)]
pub(crate) struct WriterMark {
    writer: String,
    seq: i64,
    /// The writer's row is committed (made by its first batch).
    created: bool,
}

impl WriterMark {
    /// A writer name no other process uses (128 random bits from the OS's hasher seeds).
    pub(crate) fn new() -> Self {
        use std::hash::BuildHasher;
        let random = |n: u64| std::collections::hash_map::RandomState::new().hash_one(n);
        WriterMark {
            writer: format!("{:016x}{:016x}", random(1), random(2)),
            seq: 0,
            created: false,
        }
    }

    fn next(&mut self) -> Batch {
        self.seq += 1;
        Batch {
            writer: self.writer.clone(),
            seq: self.seq,
            in_doubt: false,
            create: !self.created,
        }
    }
}

/// One numbered batch; `in_doubt` once an attempt failed (it may have committed); `create`
/// while the writer's row may not exist yet.
#[derive(Debug)]
struct Batch {
    writer: String,
    seq: i64,
    in_doubt: bool,
    create: bool,
}

async fn write(
    pool: &AnyPool,
    engine: Engine,
    batch: &[RequestRecord],
    keys: &HashMap<KeyId, Option<KeySnapshot>>,
    fingerprints: &[(&'static str, String, String)],
    mark: Option<&Batch>,
) -> Result<(), sqlx_core::Error> {
    let mut tx = pool.begin().await?;
    if let Some(mark) = mark {
        if mark.create {
            // The writer's row, made by its first batch. A retry of that batch waits here for
            // the first attempt's transaction, if it is still committing.
            let (start, end) = engine.insert_ignore();
            let sql =
                format!("{start} writer_mark (writer, seq, updated_ms) VALUES (?, 0, ?){end}");
            query(&engine.sql(&sql))
                .bind(mark.writer.clone())
                .bind(ms_of(SystemTime::now()))
                .execute(&mut *tx)
                .await?;
        }
        if mark.in_doubt {
            // Locked: a first attempt still committing (its answer lost, or late past the
            // write timeout) is waited for, then its number is read.
            let sql = engine.sql("SELECT seq FROM writer_mark WHERE writer = ? FOR UPDATE");
            let committed: Option<i64> = sqlx_core::query_scalar::query_scalar(&sql)
                .bind(mark.writer.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if committed.is_some_and(|seq| seq >= mark.seq) {
                // Written by the attempt whose answer was lost.
                return tx.commit().await;
            }
        }
    }
    insert_records(&mut tx, engine, batch).await?;
    if let Some(mark) = mark {
        let sql = engine.sql("UPDATE writer_mark SET seq = ?, updated_ms = ? WHERE writer = ?");
        let updated = query(&sql)
            .bind(mark.seq)
            .bind(ms_of(SystemTime::now()))
            .bind(mark.writer.clone())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            // The row of a writer idle for a week went with the retention: made again.
            let (start, end) = engine.insert_ignore();
            let sql =
                format!("{start} writer_mark (writer, seq, updated_ms) VALUES (?, ?, ?){end}");
            query(&engine.sql(&sql))
                .bind(mark.writer.clone())
                .bind(mark.seq)
                .bind(ms_of(SystemTime::now()))
                .execute(&mut *tx)
                .await?;
        }
    }
    let mut rollup = Rollup::default();
    for record in batch {
        rollup.add(record);
    }
    let (minutes, hours) = rollup.into_rows();
    upsert_rollup(&mut tx, engine, "usage_minute", "minute_ms", &minutes).await?;
    upsert_rollup(&mut tx, engine, "usage_hour", "hour_ms", &hours).await?;
    if !fingerprints.is_empty() {
        let (start, end) = engine.insert_ignore();
        for chunk in pow2_chunks(fingerprints, ROLLUP_ROWS) {
            let sql = format!(
                "{start} fingerprint (kind, id, mask) VALUES {}{end}",
                Engine::values(chunk.len(), 3)
            );
            let sql = engine.sql(&sql);
            let mut q = query(&sql);
            for (kind, hex, mask) in chunk {
                q = q.bind(*kind).bind(hex.clone()).bind(name(mask));
            }
            q.execute(&mut *tx).await?;
        }
    }
    let now_ms = ms_of(SystemTime::now());
    let mut ids: Vec<&KeyId> = keys.keys().collect();
    ids.sort_by_key(|id| id.digest());
    for id in ids {
        match &keys[id] {
            Some(state) => save_key(&mut tx, engine, state, now_ms).await?,
            None => {
                let sql = engine.sql("DELETE FROM key_state WHERE key_id = ?");
                query(&sql).bind(id.hex()).execute(&mut *tx).await?;
            }
        }
    }
    tx.commit().await
}

const KEY_COLUMNS: [&str; 19] = [
    "key_id",
    "key_mask",
    "status",
    "disabled_kind",
    "disabled_status",
    "disabled_detail",
    "disabled_count",
    "consecutive_failures",
    "cooldowns",
    "requests",
    "successes",
    "failures",
    "weight",
    "last_used_ms",
    "last_error_class",
    "last_error_status",
    "last_error_detail",
    "last_error_ms",
    "updated_ms",
];

async fn save_key(
    tx: &mut Transaction<'static, Any>,
    engine: Engine,
    state: &KeySnapshot,
    now_ms: i64,
) -> Result<(), sqlx_core::Error> {
    let r = KeyRow::of(state);
    let sql = format!(
        "{} ({}) VALUES {}{}",
        engine.insert_into("key_state"),
        KEY_COLUMNS.join(", "),
        Engine::values(1, KEY_COLUMNS.len()),
        engine.on_conflict(&["key_id"], &[], &KEY_COLUMNS[1..])
    );
    let sql = engine.sql(&sql);
    query(&sql)
        .bind(r.key_id)
        .bind(r.key_mask)
        .bind(r.status)
        .bind(r.disabled_kind)
        .bind(r.disabled_status)
        .bind(r.disabled_detail)
        .bind(r.disabled_count)
        .bind(r.consecutive_failures)
        .bind(r.cooldowns)
        .bind(r.requests)
        .bind(r.successes)
        .bind(r.failures)
        .bind(r.weight)
        .bind(r.last_used_ms)
        .bind(r.last_error_class)
        .bind(r.last_error_status)
        .bind(r.last_error_detail)
        .bind(r.last_error_ms)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_rollup(
    tx: &mut Transaction<'static, Any>,
    engine: Engine,
    table: &str,
    bucket: &str,
    rows: &RollupRows<'_>,
) -> Result<(), sqlx_core::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // Rows are merged by the value as stored: values that differ in the batch can be stored
    // alike (no model and the model "", names cut or redacted), and PostgreSQL refuses a
    // statement that updates one row twice. Sorted: the same order in every instance, so
    // concurrent batches lock rows in one order.
    let mut merged: BTreeMap<(i64, &'static str, String), Counters> = BTreeMap::new();
    for ((b, dim, value), c) in rows {
        merged
            .entry((*b, dim.as_str(), name(&value.render())))
            .or_default()
            .add(c);
    }
    let rows: Vec<((i64, &'static str, String), Counters)> = merged.into_iter().collect();
    for chunk in pow2_chunks(&rows, ROLLUP_ROWS) {
        let sql = format!(
            "{} (dim, {bucket}, value, {}) VALUES {}{}",
            engine.insert_into(table),
            COUNTER_COLUMNS.join(", "),
            Engine::values(chunk.len(), 16),
            engine.on_conflict(&["dim", bucket, "value"], &COUNTER_COLUMNS, &[])
        );
        let sql = engine.sql(&sql);
        let mut q: Args<'_> = query(&sql);
        for ((b, dim, value), c) in chunk {
            q = q
                .bind(*dim)
                .bind(*b)
                .bind(value.clone())
                .bind(c.calls)
                .bind(c.successes)
                .bind(c.failures)
                .bind(c.prompt)
                .bind(c.candidates)
                .bind(c.thoughts)
                .bind(c.cached)
                .bind(c.tool_use_prompt)
                .bind(c.total)
                .bind(c.latency_ms)
                .bind(c.attempts)
                .bind(c.failed_attempts)
                .bind(c.rate_limited_attempts);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_records(
    tx: &mut Transaction<'static, Any>,
    engine: Engine,
    batch: &[RequestRecord],
) -> Result<(), sqlx_core::Error> {
    for chunk in pow2_chunks(batch, REQUEST_ROWS) {
        let sql = format!(
            "INSERT INTO request_log ({REQUEST_COLUMNS}) VALUES {}",
            Engine::values(chunk.len(), 23)
        );
        let sql = engine.sql(&sql);
        let mut q: Args<'_> = query(&sql);
        for r in chunk {
            let t = &r.tokens;
            q = q
                .bind(r.id.get() as i64)
                .bind(ms_of(r.at))
                .bind(r.protocol.as_str())
                .bind(clean_text(&r.route, MAX_MESSAGE_CHARS).into_owned())
                .bind(r.model.as_deref().map(name))
                .bind(r.key.as_ref().map(KeyId::hex))
                .bind(r.key.as_ref().map(|k| k.mask().to_owned()))
                .bind(r.client.as_ref().map(ClientId::hex))
                .bind(r.client.as_ref().map(|c| c.mask().to_owned()))
                .bind(i64::from(r.status))
                .bind(i64::from(r.success))
                .bind(i64::from(r.attempts))
                .bind(duration_ms(r.latency))
                .bind(r.time_to_first_byte.map(duration_ms))
                .bind(i64::from(r.streamed))
                .bind(r.completion.as_str())
                .bind(clamp(t.prompt))
                .bind(clamp(t.candidates))
                .bind(clamp(t.thoughts))
                .bind(clamp(t.cached))
                .bind(clamp(t.tool_use_prompt))
                .bind(clamp(t.total))
                .bind(lone_attempt(r).map(|a| duration_ms(a.latency)));
        }
        q.execute(&mut **tx).await?;
    }
    // Attempts, and an error row per failed attempt.
    struct Attempt<'a> {
        request_id: i64,
        at: i64,
        key: &'a KeyId,
        model: Option<&'a str>,
        status: Option<u16>,
        class: Option<&'static str>,
        latency_ms: i64,
        message: Option<&'a str>,
        body: Option<&'a str>,
    }
    let attempts: Vec<Attempt<'_>> = batch
        .iter()
        .flat_map(|r| {
            let written = if lone_attempt(r).is_some() {
                &[][..]
            } else {
                &r.attempt_log[..]
            };
            written.iter().map(move |a| Attempt {
                request_id: r.id.get() as i64,
                at: ms_of(a.at),
                key: &a.key,
                model: a.model.as_deref().or(r.model.as_deref()),
                status: a.status,
                class: a.class,
                latency_ms: duration_ms(a.latency),
                message: a.error_message.as_deref(),
                body: r.request_body.as_deref(),
            })
        })
        .collect();
    for chunk in pow2_chunks(&attempts, ATTEMPT_ROWS) {
        let sql = format!(
            "INSERT INTO attempt_log ({ATTEMPT_COLUMNS}) VALUES {}",
            Engine::values(chunk.len(), 8)
        );
        let sql = engine.sql(&sql);
        let mut q: Args<'_> = query(&sql);
        for a in chunk {
            q = q
                .bind(a.request_id)
                .bind(a.at)
                .bind(a.key.hex())
                .bind(a.key.mask().to_owned())
                .bind(a.model.map(name))
                .bind(a.status.map(i64::from))
                .bind(a.class)
                .bind(a.latency_ms);
        }
        q.execute(&mut **tx).await?;
    }
    let failed: Vec<&Attempt<'_>> = attempts.iter().filter(|a| a.class.is_some()).collect();
    for chunk in pow2_chunks(&failed, ERROR_ROWS) {
        let sql = format!(
            "INSERT INTO error_log ({ERROR_COLUMNS}) VALUES {}",
            Engine::values(chunk.len(), 9)
        );
        let sql = engine.sql(&sql);
        let mut q: Args<'_> = query(&sql);
        for a in chunk {
            q = q
                .bind(a.at)
                .bind(a.request_id)
                .bind(a.key.hex())
                .bind(a.key.mask().to_owned())
                .bind(a.model.map(name))
                .bind(a.status.map(i64::from))
                .bind(a.class.unwrap_or_default())
                .bind(
                    a.message
                        .map(|m| clean_text(m, MAX_MESSAGE_CHARS).into_owned()),
                )
                .bind(a.body.map(|b| clean_body(b, MAX_BODY_BYTES)));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pow2_chunks;

    #[test]
    fn chunks_are_powers_of_two_up_to_the_limit() {
        let items: Vec<u32> = (0..1_300).collect();
        let lens: Vec<usize> = pow2_chunks(&items, 500).map(<[u32]>::len).collect();
        assert_eq!(lens, [256, 256, 256, 256, 256, 16, 4]);
        let lens: Vec<usize> = pow2_chunks(&items[..7], 1_000).map(<[u32]>::len).collect();
        assert_eq!(lens, [4, 2, 1]);
        assert_eq!(pow2_chunks(&items[..0], 8).count(), 0);
        let all: Vec<u32> = pow2_chunks(&items, 32).flatten().copied().collect();
        assert_eq!(all, items);
    }
}
