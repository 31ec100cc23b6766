//! Failed authentications per client address: a guesser gets a few tries, then `429` for a
//! while; valid clients are never counted.
//!
//! Every surface that checks a credential (the API routes' client tokens, the admin API's
//! AUTH_TOKEN or session, the web admin's login) asks [`AuthLimit::admit`] before checking it
//! and reports a refused one with [`AuthLimit::refused`]. An address (an IPv4 address, an IPv6
//! /64; see [`client_addr`]) may fail `AUTH_FAILURE_BURST` times in a row;
//! after that one more failure is allowed every `AUTH_FAILURE_REFILL_SECONDS` (a token bucket,
//! kept as the time its debt is paid off). While it has none left, every credential from it is
//! answered `429` with `Retry-After` *without being checked*: a limit that still let a right
//! guess through would tell the guesser which guess was right. Those 429s are not failures
//! (no credential was checked), so `Retry-After` is the truth.
//!
//! The price: a valid client behind the same address as a guesser (the same NAT, or every
//! client behind a reverse proxy not named in `TRUSTED_PROXIES`) is refused with it until the
//! guessing stops. Successful authentications are never counted and add no wait; a valid client
//! from any other address is not affected at all.
//!
//! Refusals are logged at most once a minute per address: the first at once (`authentication
//! refused`, with route and reason), the rest summed up in one line a minute later (at `WARN`
//! when some were rate-limited). No line holds a credential.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are remembered, in two generations; when
//! the newer is full the older is forgotten (an attacker with that many addresses gets a fresh
//! burst per address anyway). A sweep once a minute writes the pending summaries and forgets
//! the addresses that have nothing left to pay or report.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{Extensions, HeaderMap};

use crate::client_addr::{self, ClientKey, TrustedProxies};

/// At most one log line per address this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Addresses remembered at most (both generations together).
pub const MAX_TRACKED: usize = 8192;

/// Which surface refused a credential (named in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The API routes (client tokens).
    Api,
    /// The admin API under `/api/` (AUTH_TOKEN or a web admin session).
    AdminApi,
    /// The web admin's `POST /login`.
    Login,
    /// `GET /metrics` (METRICS_TOKEN).
    Metrics,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::AdminApi => "admin_api",
            Surface::Login => "login",
            Surface::Metrics => "metrics",
        }
    }
}

/// The limit's settings.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Failed authentications an address may make in a row (`AUTH_FAILURE_BURST`); 0: no limit.
    pub burst: u32,
    /// One more failure is allowed this long after the last (`AUTH_FAILURE_REFILL_SECONDS`).
    pub refill: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    pub trusted: TrustedProxies,
}

/// An address with no failures left: answer `429` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// When it may fail once more.
    pub retry_after: Duration,
}

impl Blocked {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The message of the 429 answer.
    pub fn message(&self) -> String {
        format!(
            "too many failed authentications from this address: try again in {} s",
            self.retry_after_secs()
        )
    }
}

/// What the limit knows about one address.
#[derive(Debug)]
struct Entry {
    /// When all its failures are forgiven (its bucket is full again).
    debt_until: Instant,
    /// When the last log line about it was written.
    logged_at: Option<Instant>,
    /// Refusals since that line, and how many of them were 429s.
    refused: u32,
    limited: u32,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            debt_until: now,
            logged_at: None,
            refused: 0,
            limited: 0,
        }
    }

    /// Counts a refusal; the log line to write now, if one is due.
    fn note(&mut self, key: ClientKey, now: Instant, event: Event<'_>) -> Option<Line> {
        let limited = u32::from(event.reason == RATE_LIMITED);
        match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < LOG_INTERVAL => {
                self.refused = self.refused.saturating_add(1);
                self.limited = self.limited.saturating_add(limited);
                None
            }
            last => {
                let line = if self.refused == 0 {
                    Line::First {
                        client: key,
                        surface: event.surface,
                        route: event.route.to_owned(),
                        reason: event.reason,
                    }
                } else {
                    Line::Summary {
                        client: key,
                        refused: self.refused.saturating_add(1),
                        limited: self.limited.saturating_add(limited),
                        over: last.map_or(LOG_INTERVAL, |at| now.saturating_duration_since(at)),
                    }
                };
                self.refused = 0;
                self.limited = 0;
                self.logged_at = Some(now);
                Some(line)
            }
        }
    }

    /// The summary of the refusals not logged yet, once the address's minute is over.
    fn due_summary(&mut self, key: ClientKey, now: Instant) -> Option<Line> {
        let at = self.logged_at?;
        let over = now.saturating_duration_since(at);
        if self.refused == 0 || over < LOG_INTERVAL {
            return None;
        }
        let line = Line::Summary {
            client: key,
            refused: self.refused,
            limited: self.limited,
            over,
        };
        self.refused = 0;
        self.limited = 0;
        self.logged_at = Some(now);
        Some(line)
    }

    /// Nothing left to pay or to report: the entry can go.
    fn settled(&self, now: Instant) -> bool {
        self.debt_until <= now
            && self.refused == 0
            && self
                .logged_at
                .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL)
    }
}

/// One refusal, as the log names it.
#[derive(Debug, Clone, Copy)]
struct Event<'a> {
    surface: Surface,
    route: &'a str,
    reason: &'static str,
}

/// The reason of a refusal answered `429`.
const RATE_LIMITED: &str = "rate limited";

/// A log line about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// The first refusal after a quiet minute.
    First {
        client: ClientKey,
        surface: Surface,
        route: String,
        reason: &'static str,
    },
    /// Refusals since the last line.
    Summary {
        client: ClientKey,
        refused: u32,
        limited: u32,
        over: Duration,
    },
    /// Addresses forgotten because too many were failing at once.
    Forgotten { count: u64 },
}

impl Line {
    fn emit(&self) {
        match self {
            Line::First {
                client,
                surface,
                route,
                reason,
            } => tracing::info!(
                client = %client,
                surface = surface.as_str(),
                route = %route,
                reason,
                "authentication refused (more refusals from this address are summed up once a minute)"
            ),
            Line::Summary {
                client,
                refused,
                limited,
                over,
            } if *limited > 0 => tracing::warn!(
                client = %client,
                refused,
                rate_limited = limited,
                seconds = over.as_secs(),
                "authentication refusals from one address, some answered 429 (AUTH_FAILURE_BURST)"
            ),
            Line::Summary {
                client,
                refused,
                over,
                ..
            } => tracing::info!(
                client = %client,
                refused,
                seconds = over.as_secs(),
                "authentication refusals from one address"
            ),
            Line::Forgotten { count } => tracing::warn!(
                addresses = count,
                "more addresses failed authentication than the limit remembers ({MAX_TRACKED}); the oldest were forgotten"
            ),
        }
    }
}

/// The remembered addresses, in two generations (see the module docs).
#[derive(Debug, Default)]
struct Table {
    current: HashMap<ClientKey, Entry>,
    previous: HashMap<ClientKey, Entry>,
    /// Unsettled addresses dropped with a generation, not reported yet.
    forgotten: u64,
}

impl Table {
    fn get_mut(&mut self, key: &ClientKey) -> Option<&mut Entry> {
        match self.current.get_mut(key) {
            Some(entry) => Some(entry),
            None => self.previous.get_mut(key),
        }
    }

    /// The entry of `key`, made (or moved to the newer generation) if need be.
    fn entry(&mut self, key: ClientKey, now: Instant) -> &mut Entry {
        if !self.current.contains_key(&key) {
            let entry = self
                .previous
                .remove(&key)
                .unwrap_or_else(|| Entry::new(now));
            if self.current.len() >= MAX_TRACKED / 2 {
                let old = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
                self.forgotten += old.values().filter(|e| !e.settled(now)).count() as u64;
            }
            return self.current.entry(key).or_insert(entry);
        }
        self.current.entry(key).or_insert_with(|| Entry::new(now))
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Failed authentications per client address (see the module docs). One per process, shared by
/// every surface; its policy follows the settings.
#[derive(Debug)]
pub struct AuthLimit {
    policy: ArcSwap<Policy>,
    table: Mutex<Table>,
    /// Addresses remembered: when none is, a request needs no lock.
    tracked: AtomicUsize,
}

impl AuthLimit {
    pub fn new(policy: Policy) -> AuthLimit {
        AuthLimit {
            policy: ArcSwap::from_pointee(policy),
            table: Mutex::new(Table::default()),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Applies changed settings; what each address owes is kept.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// The client a request comes from: its peer, or whom a trusted proxy says it forwards.
    /// `None` when the server did not record the peer.
    pub fn client(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<ClientKey> {
        let peer: IpAddr = client_addr::peer(extensions)?;
        Some(ClientKey::of(
            self.policy.load().trusted.client(peer, headers),
        ))
    }

    /// Before a credential from `client` is checked: `Err` when the address has no failures
    /// left (answer 429 without checking the credential).
    ///
    /// Nothing is reserved here: a surface checks the credential and reports a refusal without
    /// awaiting anything in between, so at most one request per serving thread can slip past the
    /// limit between this call and the report.
    pub fn admit(
        &self,
        client: Option<ClientKey>,
        surface: Surface,
        route: &str,
    ) -> Result<(), Blocked> {
        self.admit_at(client, surface, route, Instant::now())
            .map_err(|(blocked, line)| {
                if let Some(line) = line {
                    line.emit();
                }
                blocked
            })
    }

    /// A credential from `client` was refused: one failure counted, and logged if its line is due.
    pub fn refused(
        &self,
        client: Option<ClientKey>,
        surface: Surface,
        route: &str,
        reason: &'static str,
    ) {
        let event = Event {
            surface,
            route,
            reason,
        };
        match client {
            Some(key) => {
                if let Some(line) = self.refused_at(key, event, Instant::now()) {
                    line.emit();
                }
            }
            // Only without a recorded peer (never through the proxy's own server loop).
            None => tracing::info!(
                surface = surface.as_str(),
                route,
                reason,
                "authentication refused"
            ),
        }
    }

    /// Writes the summaries that are due and forgets the addresses that are settled; run once
    /// a [`LOG_INTERVAL`] (see [`spawn_sweeper`]).
    pub fn sweep(&self) {
        for line in self.sweep_at(Instant::now()) {
            line.emit();
        }
    }

    fn admit_at(
        &self,
        client: Option<ClientKey>,
        surface: Surface,
        route: &str,
        now: Instant,
    ) -> Result<(), (Blocked, Option<Line>)> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let policy = self.policy.load();
        let Some(key) = client.filter(|_| policy.burst > 0) else {
            return Ok(());
        };
        let mut table = self.lock();
        let Some(entry) = table.get_mut(&key) else {
            return Ok(());
        };
        let owed = entry.debt_until.saturating_duration_since(now);
        let room = policy.refill.saturating_mul(policy.burst - 1);
        if owed <= room {
            return Ok(());
        }
        let blocked = Blocked {
            retry_after: owed - room,
        };
        let event = Event {
            surface,
            route,
            reason: RATE_LIMITED,
        };
        Err((blocked, entry.note(key, now, event)))
    }

    fn refused_at(&self, key: ClientKey, event: Event<'_>, now: Instant) -> Option<Line> {
        let policy = self.policy.load();
        let mut table = self.lock();
        let entry = table.entry(key, now);
        if policy.burst > 0 {
            entry.debt_until = entry.debt_until.max(now) + policy.refill;
        }
        let line = entry.note(key, now, event);
        self.tracked.store(table.len(), Ordering::Relaxed);
        line
    }

    fn sweep_at(&self, now: Instant) -> Vec<Line> {
        let mut table = self.lock();
        let mut lines = Vec::new();
        let table = &mut *table;
        for map in [&mut table.current, &mut table.previous] {
            for (key, entry) in map.iter_mut() {
                lines.extend(entry.due_summary(*key, now));
            }
            map.retain(|_, entry| !entry.settled(now));
        }
        if table.forgotten > 0 {
            lines.push(Line::Forgotten {
                count: std::mem::take(&mut table.forgotten),
            });
        }
        self.tracked.store(table.len(), Ordering::Relaxed);
        lines
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every change under the lock is a few field writes: a panic cannot leave it half-made.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sweeps `limit` once a [`LOG_INTERVAL`] on the current runtime, for as long as it runs.
pub fn spawn_sweeper(limit: Arc<AuthLimit>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LOG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            limit.sweep();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(burst: u32, refill_secs: u64) -> AuthLimit {
        AuthLimit::new(Policy {
            burst,
            refill: Duration::from_secs(refill_secs),
            trusted: TrustedProxies::default(),
        })
    }

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    const WRONG: Event<'static> = Event {
        surface: Surface::Api,
        route: "/v1/models",
        reason: "no valid client token",
    };

    fn admit(l: &AuthLimit, k: ClientKey, now: Instant) -> Result<(), Duration> {
        l.admit_at(Some(k), Surface::Api, "/v1/models", now)
            .map_err(|(b, _)| b.retry_after)
    }

    #[test]
    fn a_burst_then_one_failure_per_refill() {
        let l = limit(3, 10);
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(admit(&l, a, t0), Ok(()));
            l.refused_at(a, WRONG, t0);
        }
        // No failures left: refused without a check, until one has refilled.
        assert_eq!(admit(&l, a, t0), Err(Duration::from_secs(10)));
        let t = t0 + Duration::from_secs(4);
        assert_eq!(admit(&l, a, t), Err(Duration::from_secs(6)));
        // Another address is not affected.
        assert_eq!(admit(&l, b, t0), Ok(()));
        // The 429s were not failures: after one refill, exactly one more try.
        let t = t0 + Duration::from_secs(10);
        assert_eq!(admit(&l, a, t), Ok(()));
        l.refused_at(a, WRONG, t);
        assert_eq!(admit(&l, a, t), Err(Duration::from_secs(10)));
        // After a full refill the burst is back.
        let t = t + Duration::from_secs(30);
        for _ in 0..3 {
            assert_eq!(admit(&l, a, t), Ok(()));
            l.refused_at(a, WRONG, t);
        }
        assert!(admit(&l, a, t).is_err());
    }

    #[test]
    fn a_burst_of_zero_turns_the_limit_off() {
        let l = limit(0, 10);
        let a = key("10.0.0.1");
        let t0 = Instant::now();
        for _ in 0..100 {
            l.refused_at(a, WRONG, t0);
        }
        assert_eq!(admit(&l, a, t0), Ok(()));
        // Changing the policy applies to what is already counted from then on.
        l.set_policy(Policy {
            burst: 2,
            refill: Duration::from_secs(5),
            trusted: TrustedProxies::default(),
        });
        l.refused_at(a, WRONG, t0);
        l.refused_at(a, WRONG, t0);
        assert_eq!(admit(&l, a, t0), Err(Duration::from_secs(5)));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let l = limit(2, 10);
        let t0 = Instant::now();
        l.refused_at(key("2001:db8::1"), WRONG, t0);
        l.refused_at(key("2001:db8::2"), WRONG, t0);
        assert!(admit(&l, key("2001:db8::ffff"), t0).is_err());
        assert!(admit(&l, key("2001:db8:0:1::1"), t0).is_ok());
    }

    #[test]
    fn one_log_line_per_address_a_minute_then_a_summary() {
        let l = limit(3, 10);
        let a = key("10.0.0.1");
        let t0 = Instant::now();
        let first = l.refused_at(a, WRONG, t0);
        assert!(matches!(
            first,
            Some(Line::First {
                reason: "no valid client token",
                ..
            })
        ));
        let mut lines = 0;
        for i in 0..50u64 {
            let t = t0 + Duration::from_millis(i * 100);
            match l.admit_at(Some(a), Surface::Api, "/x", t) {
                Ok(()) => lines += usize::from(l.refused_at(a, WRONG, t).is_some()),
                Err((_, line)) => lines += usize::from(line.is_some()),
            }
        }
        assert_eq!(lines, 0, "nothing more within the minute");
        assert!(l.sweep_at(t0 + Duration::from_secs(30)).is_empty());
        let summary = l.sweep_at(t0 + Duration::from_secs(61));
        assert_eq!(
            summary,
            [Line::Summary {
                client: a,
                refused: 50,
                limited: 48,
                over: Duration::from_secs(61),
            }]
        );
        // Quiet since: the address is forgotten once it owes nothing.
        assert!(l.sweep_at(t0 + Duration::from_secs(200)).is_empty());
        assert_eq!(l.tracked.load(Ordering::Relaxed), 0);
        // A refusal after a quiet minute is logged at once again.
        let t = t0 + Duration::from_secs(300);
        assert!(matches!(
            l.refused_at(a, WRONG, t),
            Some(Line::First { .. })
        ));
        // And the next event after a minute carries the count itself.
        l.refused_at(a, WRONG, t + Duration::from_secs(1));
        let line = l.refused_at(a, WRONG, t + Duration::from_secs(62));
        assert!(
            matches!(
                line,
                Some(Line::Summary {
                    refused: 2,
                    limited: 0,
                    ..
                })
            ),
            "{line:?}"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let l = limit(3, 10);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 * 3) {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            l.refused_at(ClientKey::of(addr.into()), WRONG, t0);
        }
        assert!(l.lock().len() <= MAX_TRACKED);
        let lines = l.sweep_at(t0);
        assert!(
            lines
                .iter()
                .any(|line| matches!(line, Line::Forgotten { count } if *count > 0)),
            "the loss is reported"
        );
        // The most recent addresses are still limited.
        let last = std::net::Ipv4Addr::from(0x0a00_0000 + MAX_TRACKED as u32 * 3 - 1);
        l.refused_at(ClientKey::of(last.into()), WRONG, t0);
        l.refused_at(ClientKey::of(last.into()), WRONG, t0);
        assert!(admit(&l, ClientKey::of(last.into()), t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        let b = |ms| Blocked {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(b(1).retry_after_secs(), 1);
        assert_eq!(b(1000).retry_after_secs(), 1);
        assert_eq!(b(1001).retry_after_secs(), 2);
        assert_eq!(b(0).retry_after_secs(), 1);
        assert!(b(5000).message().contains("try again in 5 s"));
    }
}
