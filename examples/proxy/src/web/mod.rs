//! The web admin: login, the admin pages and their assets, all embedded in the binary.
//!
//! The pages are plain HTML/CSS/JS (no build step, nothing fetched from elsewhere) that talk to
//! the admin JSON API under `/api/` with the session cookie this module hands out at login. See
//! `docs/web-admin.md`.

pub mod assets;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};

pub use session::{LoginError, Sessions, TokenCheck};

use crate::admin::SessionVerdict;
use crate::auth_limit::{AuthLimit, Blocked, Surface};

/// The largest login body read: `{"token": "…"}` is a few hundred bytes. Anything larger is
/// refused before it is buffered, parsed or paused on.
pub const LOGIN_BODY_LIMIT: usize = 4 * 1024;

/// The admin pages, by path; each is the page shell with that page's script.
pub const PAGES: &[(&str, &str)] = &[
    ("keys", "Keys"),
    ("models", "Model helper"),
    ("dashboard", "Dashboard"),
    ("logs", "Logs"),
    ("quotas", "Quotas"),
    ("config", "Config"),
];

/// Headers every web admin answer carries: nothing from elsewhere may load, no framing, no
/// sniffing, no referrer (URLs can carry filters with key ids).
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// What the web admin's routes share: the sessions (which the admin API accepts too), and the
/// limit on failed authentications that logins count towards.
pub struct WebAdmin {
    pub sessions: Arc<Sessions>,
    auth_limit: Arc<AuthLimit>,
}

impl WebAdmin {
    /// A web admin whose sessions last `ttl` and open with the token `admin_token` accepts;
    /// wrong tokens count in `auth_limit`.
    pub fn new(ttl: Duration, admin_token: TokenCheck, auth_limit: Arc<AuthLimit>) -> Self {
        WebAdmin {
            sessions: Arc::new(Sessions::new(ttl, admin_token)),
            auth_limit,
        }
    }
}

impl std::fmt::Debug for WebAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebAdmin")
            .field("sessions", &self.sessions)
            .finish()
    }
}

/// The web admin's routes: `/`, `/login`, `/logout`, the pages and `/static/*`.
pub fn router(web: Arc<WebAdmin>) -> Router {
    let mut router = Router::new()
        .route("/", get(root))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/{file}", get(asset));
    for (page, _) in PAGES {
        router = router.route(&format!("/{page}"), get(page_for(page)));
    }
    router.with_state(web)
}

type Web = State<Arc<WebAdmin>>;

async fn root(State(web): Web, headers: HeaderMap) -> Response<Body> {
    match web.sessions.csrf_for(&headers) {
        Some(_) => redirect("/keys"),
        None => redirect("/login"),
    }
}

async fn login_page(State(web): Web, headers: HeaderMap) -> Response<Body> {
    if web.sessions.csrf_for(&headers).is_some() {
        return redirect("/keys");
    }
    html(assets::LOGIN_HTML.to_owned())
}

/// `POST /login` with `{"token": AUTH_TOKEN}` as JSON. JSON only, so a cross-site HTML form
/// cannot log a browser in to an attacker's choice (that would need a CORS preflight).
///
/// The body is read only up to [`LOGIN_BODY_LIMIT`] (`413` past it), then the address's
/// failed authentications are consulted (`429`), and only then the token checked.
async fn login(State(web): Web, req: Request) -> Response<Body> {
    const HOW: &str = "send the token as JSON: {\"token\": \"…\"}";
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    if !is_json(headers) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, HOW);
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the login body is larger than {LOGIN_BODY_LIMIT} bytes; {HOW}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > LOGIN_BODY_LIMIT as u64) {
        return too_large();
    }
    let body = match Limited::new(body, LOGIN_BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "the login body could not be read"),
    };
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(str::to_owned));
    drop(body);
    let Some(token) = token else {
        return error(StatusCode::BAD_REQUEST, HOW);
    };
    // From here to the verdict nothing is awaited (see AuthLimit::admit).
    let address = web.auth_limit.client(&parts.extensions, headers);
    if let Err(blocked) = web.auth_limit.admit(address, Surface::Login, "/login") {
        return too_many(blocked);
    }
    match web.sessions.login(&token) {
        Err(LoginError::Closed) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the web admin is closed: AUTH_TOKEN (or ALLOWED_TOKENS) is not set",
        ),
        Err(LoginError::WrongToken) => {
            web.auth_limit
                .refused(address, Surface::Login, "/login", "wrong admin token");
            drop(token);
            // A pause slows a guesser within its burst; the body is no longer held.
            tokio::time::sleep(Duration::from_millis(300)).await;
            error(StatusCode::UNAUTHORIZED, "wrong token")
        }
        Err(LoginError::NoRandomness) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the system has no randomness to make a session id",
        ),
        Ok(new) => {
            tracing::info!("admin login");
            let cookie = session::set_cookie(&new.id, web.sessions.ttl(), behind_https(headers));
            let mut res =
                json_response(StatusCode::OK, &json!({"next": "/keys", "csrf": new.csrf}));
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, value);
            }
            res
        }
    }
}

/// `POST /logout` (with the CSRF token): ends the session and clears the cookie.
async fn logout(State(web): Web, headers: HeaderMap) -> Response<Body> {
    match web.sessions.check(&headers, &Method::POST) {
        SessionVerdict::MissingCsrf => {
            return error(StatusCode::FORBIDDEN, "missing or wrong x-csrf-token")
        }
        SessionVerdict::Valid => web.sessions.end(&headers),
        SessionVerdict::None => {}
    }
    let mut res = json_response(StatusCode::OK, &json!({"next": "/login"}));
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, value);
    }
    res
}

/// The handler of `/{page}`: the shell with the page's CSRF token, or off to the login page.
fn page_for(
    page: &'static str,
) -> impl Fn(Web, HeaderMap) -> std::future::Ready<Response<Body>> + Clone + Send + 'static {
    move |State(web): Web, headers: HeaderMap| {
        std::future::ready(match web.sessions.csrf_for(&headers) {
            Some(csrf) => html(assets::page_html(page, &csrf)),
            None => redirect(&format!("/login?next=/{page}")),
        })
    }
}

/// A name that is not UTF-8 once decoded (`/static/%ff`) names no asset: a 404 like any other
/// unknown file, rather than axum's plain-text 400.
async fn asset(file: Result<Path<String>, PathRejection>) -> Response<Body> {
    match file.ok().and_then(|Path(file)| assets::find(&file)) {
        Some(asset) => {
            let mut res = Response::new(Body::from(asset.body));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            secure(res)
        }
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// `Content-Type: application/json`, with or without parameters (`; charset=utf-8`), in any
/// case; not `application/jsonx` or `application/json-seq`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `429` with `Retry-After`, in the login's error format.
fn too_many(blocked: Blocked) -> Response<Body> {
    let mut res = error(StatusCode::TOO_MANY_REQUESTS, &blocked.message());
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(blocked.retry_after_secs()),
    );
    res
}

/// `true` when a TLS-terminating proxy in front says the browser used HTTPS.
fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn html(body: String) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(res)
}

fn redirect(to: &str) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    secure(res)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut res = Response::new(Body::from(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(res)
}

/// An error in the admin API's format (Gemini's error JSON).
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = gemini_balance::api_error::error_value(
        gemini_balance::api_error::ApiFlavor::Gemini,
        status,
        message,
    );
    json_response(status, &body)
}

fn secure(mut res: Response<Body>) -> Response<Body> {
    for (name, value) in SECURITY_HEADERS {
        res.headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    res
}
