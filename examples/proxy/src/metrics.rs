//! `GET /metrics`: the library's Prometheus series (`gemini_balance::metrics`), for whoever
//! METRICS_TOKEN and METRICS_ALLOWED_IPS let in.
//!
//! Off by default: the series say which keys fail and how much each model is used, so with
//! neither setting the route answers `404` (as if it did not exist) and requests are not
//! measured. With METRICS_ALLOWED_IPS, only those client addresses (after TRUSTED_PROXIES) get
//! past (`403` for the others); with METRICS_TOKEN, only `Authorization: Bearer <token>`
//! (`401` otherwise, counted as a failed authentication like the other surfaces'); with both,
//! both must pass.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use gemini_balance::auth::ClientTokens;
use gemini_balance::metrics::CONTENT_TYPE;

use crate::auth_limit::Surface;
use crate::client_addr::{self, TrustedProxies};
use crate::settings::Settings;
use crate::state::App;

/// Who may read `/metrics`, from the settings.
pub struct Access {
    /// METRICS_TOKEN (empty: no token asked).
    token: ClientTokens,
    /// METRICS_ALLOWED_IPS (`None`: any address).
    allowed: Option<TrustedProxies>,
    /// TRUSTED_PROXIES: whose `X-Forwarded-For` names the client.
    trusted: TrustedProxies,
}

impl Access {
    /// `None` when neither METRICS_TOKEN nor METRICS_ALLOWED_IPS is set: `/metrics` is off.
    pub fn of(settings: &Settings) -> Option<Access> {
        let token = settings.text("METRICS_TOKEN").trim();
        // Checked when the settings were read (settings::value_rules).
        let allowed =
            TrustedProxies::parse(&settings.list("METRICS_ALLOWED_IPS")).unwrap_or_default();
        if token.is_empty() && allowed.is_empty() {
            return None;
        }
        Some(Access {
            token: ClientTokens::new((!token.is_empty()).then_some(token)),
            allowed: (!allowed.is_empty()).then_some(allowed),
            trusted: TrustedProxies::parse(&settings.list("TRUSTED_PROXIES")).unwrap_or_default(),
        })
    }

    /// The client's address, as the failed-authentication limit sees it.
    fn client(&self, req: &Request<Body>) -> Option<IpAddr> {
        client_addr::peer(req.extensions()).map(|peer| self.trusted.client(peer, req.headers()))
    }
}

/// `GET /metrics`.
pub async fn scrape(State(app): State<Arc<App>>, req: Request<Body>) -> Response<Body> {
    let live = app.live();
    let Some(access) = &live.metrics else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if let Some(allowed) = &access.allowed {
        if !access.client(&req).is_some_and(|ip| allowed.contains(ip)) {
            return text(
                StatusCode::FORBIDDEN,
                "this address may not read /metrics (METRICS_ALLOWED_IPS)",
            );
        }
    }
    if !access.token.is_empty() {
        let address = app.auth_limit.client(req.extensions(), req.headers());
        if let Err(blocked) = app.auth_limit.admit(address, Surface::Metrics, "/metrics") {
            let mut res = text(StatusCode::TOO_MANY_REQUESTS, &blocked.message());
            res.headers_mut()
                .insert(header::RETRY_AFTER, blocked.retry_after_secs().into());
            return res;
        }
        if bearer(req.headers())
            .and_then(|t| access.token.matching(t))
            .is_none()
        {
            app.auth_limit.refused(
                address,
                Surface::Metrics,
                "/metrics",
                "no valid metrics token",
            );
            let mut res = text(
                StatusCode::UNAUTHORIZED,
                "missing or invalid metrics token: send METRICS_TOKEN as Authorization: Bearer",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    let mut res = Response::new(Body::from(app.metrics.encode()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut res = Response::new(Body::from(format!("{message}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
