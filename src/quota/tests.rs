use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_layer::Layer;

use super::*;
use crate::usage::sink::UsageSink;
use crate::usage::{ClientId, RequestRecord};

/// 2026-12-08T10:00:10Z
fn ten_past() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_724_000 + 10)
}

#[tokio::test(start_paused = true)]
async fn requests_per_minute_free_up_with_the_next_minute() {
    let quotas = Quotas::starting_at(
        Limits {
            requests_per_minute: Some(2),
            ..Limits::default()
        },
        ten_past(),
    );
    assert!(quotas.admit("a").is_ok());
    assert!(quotas.admit("a").is_ok());
    let refusal = quotas.admit("a").unwrap_err();
    assert_eq!(refusal.kind, LimitKind::RequestsPerMinute);
    assert_eq!(refusal.retry_after_secs(), 50);
    assert!(
        refusal.to_string().contains("2 requests per minute"),
        "{refusal}"
    );
    // Another identity has its own count.
    assert!(quotas.admit("b").is_ok());
    tokio::time::advance(Duration::from_secs(49)).await;
    assert_eq!(quotas.admit("a").unwrap_err().retry_after_secs(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(quotas.admit("a").is_ok());
    let status = quotas.status("a");
    assert_eq!(status.used.requests_minute, 1);
    assert_eq!(
        status.used.requests_day, 3,
        "refused requests are not counted"
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_are_charged_after_the_answer_and_refuse_the_next_request() {
    let quotas = Quotas::starting_at(
        Limits {
            tokens_per_day: Some(100),
            tokens_per_month: Some(1_000),
            ..Limits::default()
        },
        ten_past(),
    );
    assert!(quotas.admit("a").is_ok());
    // The answer overshoots: only the next request is refused.
    quotas.charge("a", 150);
    let refusal = quotas.admit("a").unwrap_err();
    assert_eq!(refusal.kind, LimitKind::TokensPerDay);
    assert_eq!(refusal.retry_after_secs(), 14 * 3600 - 10);
    // Its own limits replace the default.
    quotas.apply(QuotaRow {
        id: "a".into(),
        name: Some("Team A".into()),
        limits: Some(Limits {
            tokens_per_month: Some(200),
            ..Limits::default()
        }),
    });
    assert!(quotas.admit("a").is_ok());
    quotas.charge("a", 50);
    let refusal = quotas.admit("a").unwrap_err();
    assert_eq!(refusal.kind, LimitKind::TokensPerMonth);
    // 2026-12-08 10:00:10 to 2027-01-01.
    assert_eq!(refusal.retry_after_secs(), 23 * 86_400 + 14 * 3600 - 10);
    // The next day frees the day's tokens, not the month's.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_eq!(
        quotas.admit("a").unwrap_err().kind,
        LimitKind::TokensPerMonth
    );
    let status = quotas.status("a");
    assert_eq!(status.name.as_deref(), Some("Team A"));
    assert_eq!((status.used.tokens_day, status.used.tokens_month), (0, 200));
}

#[tokio::test(start_paused = true)]
async fn the_charger_charges_the_records_client() {
    let quotas = Quotas::starting_at(
        Limits {
            tokens_per_minute: Some(10),
            ..Limits::default()
        },
        ten_past(),
    );
    let client = ClientId::of("sk-client-0123456789");
    let mut record = RequestRecord::new(1, SystemTime::now());
    record.client = Some(client.clone());
    record.tokens.total = 12;
    quotas.charger().record(record);
    let refusal = quotas.admit(&client.hex()).unwrap_err();
    assert_eq!(refusal.kind, LimitKind::TokensPerMinute);
    assert_eq!(refusal.retry_after_secs(), 50);
}

#[tokio::test(start_paused = true)]
async fn the_layer_answers_429_in_the_routes_format_without_calling_the_inner_service() {
    let quotas = Quotas::starting_at(
        Limits {
            requests_per_minute: Some(1),
            ..Limits::default()
        },
        ten_past(),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = calls.clone();
        tower::service_fn(move |_: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }
        })
    };
    let service = QuotaLayer::new(quotas.clone()).layer(inner);
    let client = ClientId::of("sk-client-0123456789");
    for (path, field) in [
        ("/v1beta/models/m:generateContent", "status"),
        ("/v1/chat/completions", "type"),
    ] {
        let req = || {
            let mut req = Request::post(path).body(()).unwrap();
            req.extensions_mut().insert(client.clone());
            req
        };
        if field == "status" {
            let res = service.clone().oneshot(req()).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = service.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["retry-after"], "50");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["error"][field].is_string(), "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("requests per minute"),
            "{json}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // No identity: no quota.
    let res = service
        .clone()
        .oneshot(Request::post("/v1/chat/completions").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // An identity of the user's choosing.
    let by_header = QuotaLayer::new(quotas).identify(|req: &Request<()>| {
        req.headers()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let service = by_header.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let tenant = || {
        Request::get("/x")
            .header("x-tenant", "t1")
            .body(())
            .unwrap()
    };
    assert_eq!(
        service.clone().oneshot(tenant()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        service.clone().oneshot(tenant()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn instances_share_use_and_limits_through_their_store() {
    let store: Arc<dyn QuotaStore> = Arc::new(MemoryStore::new());
    let limits = Limits {
        requests_per_minute: Some(3),
        tokens_per_day: Some(100),
        ..Limits::default()
    };
    let a = Quotas::starting_at(Limits::default(), ten_past());
    let b = Quotas::starting_at(Limits::default(), ten_past());
    // The default set on one instance reaches the other with its next exchange.
    a.save(
        store.clone(),
        QuotaRow {
            id: DEFAULT_ID.into(),
            name: None,
            limits: Some(limits),
        },
    )
    .await
    .unwrap();
    assert_eq!(a.default_limits(), limits);
    b.sync_once(store.clone()).await.unwrap();
    assert_eq!(b.default_limits(), limits);
    // Two requests on a, one on b: the minute is full once both exchanged.
    a.admit("c").unwrap();
    a.admit("c").unwrap();
    b.admit("c").unwrap();
    a.charge("c", 60);
    b.charge("c", 40);
    assert!(b.admit("c").is_ok(), "b does not know a's use yet");
    a.sync_once(store.clone()).await.unwrap();
    b.sync_once(store.clone()).await.unwrap();
    a.sync_once(store.clone()).await.unwrap();
    for q in [&a, &b] {
        let used = q.status("c").used;
        assert_eq!((used.requests_minute, used.tokens_day), (4, 100));
        assert_eq!(q.admit("c").unwrap_err().kind, LimitKind::TokensPerDay);
    }
    // A restart: a new instance reads the day's use back.
    let restarted = Quotas::starting_at(Limits::default(), ten_past());
    restarted.sync_once(store.clone()).await.unwrap();
    assert_eq!(restarted.status("c").used.tokens_day, 100);
    assert_eq!(
        restarted.admit("c").unwrap_err().kind,
        LimitKind::TokensPerDay
    );
    // The next minute's totals no longer hold the last minute's requests.
    tokio::time::advance(Duration::from_secs(60)).await;
    restarted.sync_once(store.clone()).await.unwrap();
    assert_eq!(restarted.status("c").used.requests_minute, 0);
    // A name, then cleared.
    b.save(
        store.clone(),
        QuotaRow {
            id: "c".into(),
            name: Some("Team C".into()),
            limits: None,
        },
    )
    .await
    .unwrap();
    a.sync_once(store.clone()).await.unwrap();
    assert_eq!(a.name("c").as_deref(), Some("Team C"));
    assert!(b
        .save(
            store.clone(),
            QuotaRow {
                id: "c".into(),
                name: Some("AIzaSyA1234567890abcdefghijklmnopqrstuv".into()),
                limits: None,
            }
        )
        .await
        .is_err());
    b.save(
        store.clone(),
        QuotaRow {
            id: "c".into(),
            name: None,
            limits: None,
        },
    )
    .await
    .unwrap();
    a.sync_once(store.clone()).await.unwrap();
    assert_eq!(a.name("c"), None);
    assert!(store.quota_rows().unwrap().iter().all(|r| r.id != "c"));
}

#[tokio::test(start_paused = true)]
async fn an_instance_learns_the_others_use_of_a_window_it_has_not_served_in() {
    let store: Arc<dyn QuotaStore> = Arc::new(MemoryStore::new());
    let a = Quotas::starting_at(Limits::default(), ten_past());
    let b = Quotas::starting_at(Limits::default(), ten_past());
    // b served the client yesterday, then not today.
    b.charge("c", 1);
    b.sync_once(store.clone()).await.unwrap();
    tokio::time::advance(Duration::from_secs(86_400)).await;
    a.charge("c", 5);
    a.sync_once(store.clone()).await.unwrap();
    b.sync_once(store.clone()).await.unwrap();
    let used = b.status("c").used;
    assert_eq!((used.tokens_day, used.tokens_month), (5, 6));
}

/// A store in memory (the `store` module's `MemoryStore` does the same; not used here, so that
/// `quota` does not depend on `store`).
#[derive(Default)]
struct MemoryStore {
    inner: std::sync::Mutex<(Rows, Totals)>,
}

type Rows = std::collections::BTreeMap<String, QuotaRow>;
type Totals = std::collections::HashMap<(String, Window, i64), (u64, u64)>;

impl MemoryStore {
    fn new() -> Self {
        Self::default()
    }
}

impl QuotaStore for MemoryStore {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, crate::BoxError> {
        Ok(self.inner.lock().unwrap().0.values().cloned().collect())
    }

    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), crate::BoxError> {
        let mut inner = self.inner.lock().unwrap();
        if row.name.is_none() && row.limits.is_none() {
            inner.0.remove(&row.id);
        } else {
            inner.0.insert(row.id.clone(), row.clone());
        }
        Ok(())
    }

    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, crate::BoxError> {
        let mut inner = self.inner.lock().unwrap();
        for u in add {
            let total = inner
                .1
                .entry((u.id.clone(), u.window, u.bucket))
                .or_default();
            total.0 += u.requests;
            total.1 += u.tokens;
        }
        Ok(inner
            .1
            .iter()
            .filter(|((_, w, b), _)| current.contains(&(*w, *b)))
            .map(|((id, window, bucket), (requests, tokens))| QuotaUse {
                id: id.clone(),
                window: *window,
                bucket: *bucket,
                requests: *requests,
                tokens: *tokens,
            })
            .collect())
    }
}

/// A store that fails until told otherwise.
struct Flaky {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
}

impl QuotaStore for Flaky {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, crate::BoxError> {
        self.inner.quota_rows()
    }
    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), crate::BoxError> {
        self.inner.save_quota_row(row)
    }
    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, crate::BoxError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("down".into());
        }
        self.inner.exchange_quota_use(add, current)
    }
}

#[tokio::test(start_paused = true)]
async fn use_not_sent_is_sent_with_the_next_exchange() {
    let flaky = Arc::new(Flaky {
        inner: MemoryStore::new(),
        failing: true.into(),
    });
    let store: Arc<dyn QuotaStore> = flaky.clone();
    let quotas = Quotas::starting_at(Limits::default(), ten_past());
    quotas.charge("c", 7);
    assert!(quotas.sync_once(store.clone()).await.is_err());
    assert_eq!(quotas.status("c").used.tokens_day, 7);
    quotas.charge("c", 3);
    flaky.failing.store(false, Ordering::SeqCst);
    quotas.sync_once(store.clone()).await.unwrap();
    let other = Quotas::starting_at(Limits::default(), ten_past());
    other.sync_once(store).await.unwrap();
    assert_eq!(other.status("c").used.tokens_day, 10);
    assert_eq!(quotas.status("c").used.tokens_day, 10);
}

/// Without a store (no `sync`), the use of ended windows is not kept for an exchange that will
/// never come, and identities idle in every current window are forgotten once many are held:
/// memory stays bounded by the identities of the current month.
#[tokio::test(start_paused = true)]
async fn without_a_store_nothing_piles_up() {
    let quotas = Quotas::starting_at(Limits::default(), ten_past());
    for minute in 0..5 {
        for i in 0..100 {
            assert!(quotas.admit(&format!("client-{i}")).is_ok());
            quotas.charge(&format!("client-{i}"), 10);
        }
        tokio::time::advance(Duration::from_secs(60 * (minute + 1))).await;
    }
    assert_eq!(quotas.held(), (0, 100), "no ended window's use kept");
    // A month and more later, thousands of new identities: the old ones are forgotten.
    tokio::time::advance(Duration::from_secs(40 * 86_400)).await;
    for i in 0..5_000 {
        assert!(quotas.admit(&format!("new-{i}")).is_ok());
    }
    let (pending, held) = quotas.held();
    assert_eq!(pending, 0);
    assert!(
        held <= 5_000,
        "{held} identities held (the 100 idle ones forgotten)"
    );
}
