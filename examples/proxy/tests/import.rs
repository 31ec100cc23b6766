//! `gemini-balance-proxy import`, end to end: a database made as the Python Gemini-Balance
//! server makes it (its SQLAlchemy models' tables, rows in the formats it writes: 72 settings
//! rows, lists as JSON, booleans `true`/`false`, full keys in the logs), imported by the real
//! binary; then the proxy started on the result. SQLite always; MySQL against the MariaDB of
//! `GEMINI_BALANCE_TEST_MYSQL_URL` (set by `.ci/run`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};
use serde_json::Value;
use support::{prompt_body, test_key, MockGemini};

const TOKEN: &str = "sk-env-client-token-0001";
const UI_TOKEN: &str = "sk-added-in-the-python-ui-0002";
const ADMIN: &str = "sk-admin-token-from-env-0003";
const PROXY_PASSWORD: &str = "pw-secret-relay-77";
const SMMS_TOKEN: &str = "smms-secret-token-77";

/// The keys: 1 from `.env`, 2 added in the Python UI, 3 gone from the pool but in the logs, 4
/// added in this proxy's admin after the import.
fn key(n: u32) -> String {
    test_key(n)
}

/// Every secret of the fixture: none may reach the database, the report or an answer.
fn secrets() -> Vec<String> {
    vec![
        key(1),
        key(2),
        key(3),
        key(4),
        TOKEN.to_owned(),
        UI_TOKEN.to_owned(),
        ADMIN.to_owned(),
        PROXY_PASSWORD.to_owned(),
        SMMS_TOKEN.to_owned(),
    ]
}

/// The `.env` shared by the Python server and this proxy.
fn env_file(base_url: &str) -> String {
    format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={base_url}\n",
        key(1)
    )
}

/// `json.dumps` as the Python server writes lists (`", "` between items).
fn py_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The 72 rows the Python server writes back at start (every setting but DATABASE_TYPE), in
/// its formats, for the `.env` above plus changes made in its web UI: a key and a token
/// added, MAX_RETRIES, THINKING_BUDGET_MAP and ERROR_LOG_RECORD_REQUEST_BODY changed, a proxy
/// this proxy refuses, a time zone (read at start only here), an image host's token.
fn settings_rows(base_url: &str) -> Vec<(&'static str, String)> {
    let k1 = key(1);
    let k2 = key(2);
    let rows: Vec<(&str, String)> = vec![
        ("SQLITE_DATABASE", "default_db".into()),
        ("MYSQL_HOST", "".into()),
        ("MYSQL_PORT", "3306".into()),
        ("MYSQL_USER", "".into()),
        ("MYSQL_PASSWORD", "".into()),
        ("MYSQL_DATABASE", "".into()),
        ("MYSQL_SOCKET", "".into()),
        ("API_KEYS", py_list(&[&k1, &k2])),
        ("ALLOWED_TOKENS", py_list(&[TOKEN, UI_TOKEN])),
        ("BASE_URL", base_url.into()),
        ("AUTH_TOKEN", ADMIN.into()),
        ("MAX_FAILURES", "3".into()),
        ("TEST_MODEL", "gemini-2.5-flash-lite".into()),
        ("TIME_OUT", "300".into()),
        ("MAX_RETRIES", "5".into()),
        (
            "PROXIES",
            py_list(&[&format!("ftp://user:{PROXY_PASSWORD}@relay:21")]),
        ),
        ("PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY", "true".into()),
        ("VERTEX_API_KEYS", "[]".into()),
        (
            "VERTEX_EXPRESS_BASE_URL",
            "https://aiplatform.googleapis.com/v1beta1/publishers/google".into(),
        ),
        ("URL_NORMALIZATION_ENABLED", "false".into()),
        ("CUSTOM_HEADERS", "{}".into()),
        (
            "SEARCH_MODELS",
            py_list(&["gemini-2.5-flash", "gemini-2.5-pro"]),
        ),
        (
            "IMAGE_MODELS",
            py_list(&["gemini-2.0-flash-exp", "gemini-2.5-flash-image-preview"]),
        ),
        (
            "FILTERED_MODELS",
            py_list(&[
                "gemini-1.0-pro-vision-latest",
                "gemini-pro-vision",
                "chat-bison-001",
                "text-bison-001",
                "embedding-gecko-001",
            ]),
        ),
        ("TOOLS_CODE_EXECUTION_ENABLED", "false".into()),
        ("URL_CONTEXT_ENABLED", "false".into()),
        (
            "URL_CONTEXT_MODELS",
            py_list(&[
                "gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-2.5-flash-lite",
                "gemini-2.0-flash",
                "gemini-2.0-flash-live-001",
            ]),
        ),
        ("SHOW_SEARCH_LINK", "true".into()),
        ("SHOW_THINKING_PROCESS", "true".into()),
        ("THINKING_MODELS", "[]".into()),
        ("THINKING_BUDGET_MAP", r#"{"gemini-2.5-flash": -1.0}"#.into()),
        ("TTS_MODEL", "gemini-2.5-flash-preview-tts".into()),
        ("TTS_VOICE_NAME", "Zephyr".into()),
        ("TTS_SPEED", "normal".into()),
        ("PAID_KEY", "".into()),
        ("CREATE_IMAGE_MODEL", "imagen-3.0-generate-002".into()),
        ("UPLOAD_PROVIDER", "smms".into()),
        ("SMMS_SECRET_TOKEN", SMMS_TOKEN.into()),
        ("PICGO_API_KEY", "".into()),
        ("PICGO_API_URL", "https://www.picgo.net/api/1/upload".into()),
        ("CLOUDFLARE_IMGBED_URL", "".into()),
        ("CLOUDFLARE_IMGBED_AUTH_CODE", "".into()),
        ("CLOUDFLARE_IMGBED_UPLOAD_FOLDER", "".into()),
        ("OSS_ENDPOINT", "".into()),
        ("OSS_ENDPOINT_INNER", "".into()),
        ("OSS_ACCESS_KEY", "".into()),
        ("OSS_ACCESS_KEY_SECRET", "".into()),
        ("OSS_BUCKET_NAME", "".into()),
        ("OSS_REGION", "".into()),
        ("STREAM_OPTIMIZER_ENABLED", "false".into()),
        ("STREAM_MIN_DELAY", "0.016".into()),
        ("STREAM_MAX_DELAY", "0.024".into()),
        ("STREAM_SHORT_TEXT_THRESHOLD", "10".into()),
        ("STREAM_LONG_TEXT_THRESHOLD", "50".into()),
        ("STREAM_CHUNK_SIZE", "5".into()),
        ("FAKE_STREAM_ENABLED", "false".into()),
        ("FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS", "5".into()),
        ("CHECK_INTERVAL_HOURS", "1".into()),
        ("TIMEZONE", "Europe/Berlin".into()),
        ("GITHUB_REPO_OWNER", "snailyp".into()),
        ("GITHUB_REPO_NAME", "gemini-balance".into()),
        ("LOG_LEVEL", "INFO".into()),
        ("ERROR_LOG_RECORD_REQUEST_BODY", "true".into()),
        ("AUTO_DELETE_ERROR_LOGS_ENABLED", "true".into()),
        ("AUTO_DELETE_ERROR_LOGS_DAYS", "7".into()),
        ("AUTO_DELETE_REQUEST_LOGS_ENABLED", "false".into()),
        ("AUTO_DELETE_REQUEST_LOGS_DAYS", "30".into()),
        (
            "SAFETY_SETTINGS",
            r#"[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}, {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}, {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "OFF"}, {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"}, {"category": "HARM_CATEGORY_CIVIC_INTEGRITY", "threshold": "BLOCK_NONE"}]"#.into(),
        ),
        ("FILES_CLEANUP_ENABLED", "true".into()),
        ("FILES_CLEANUP_INTERVAL_HOURS", "1".into()),
        ("FILES_USER_ISOLATION_ENABLED", "true".into()),
        ("ADMIN_SESSION_EXPIRE", "3600".into()),
    ];
    assert_eq!(rows.len(), 72, "the Python server writes 72 rows");
    rows
}

/// A `t_request_log` row: seconds after the fixture's start, model, key, success, status,
/// latency.
type RequestRow = (i64, &'static str, String, bool, i64, i64);
/// A `t_error_logs` row: seconds after the start, key, model, error_type, error_log,
/// error_code, request_msg.
type ErrorRow = (
    i64,
    String,
    &'static str,
    &'static str,
    String,
    i64,
    Option<String>,
);

fn request_rows() -> Vec<RequestRow> {
    vec![
        (0, "gemini-2.0-flash", key(1), true, 200, 350),
        (1, "gemini-2.0-flash", key(2), false, 429, 80),
        (2, "gemini-2.5-pro", key(2), true, 200, 900),
        (3, "gemini-2.5-pro", key(3), false, 400, 50),
    ]
}

fn error_rows() -> Vec<ErrorRow> {
    vec![
        (
            1,
            key(2),
            "gemini-2.0-flash",
            "gemini-chat-non-stream",
            format!(
                r#"{{"error": {{"code": 429, "message": "Resource has been exhausted (key={}, caller {UI_TOKEN}).", "status": "RESOURCE_EXHAUSTED"}}}}"#,
                key(2)
            ),
            429,
            Some(format!(
                r#"{{"contents": [{{"role": "user", "parts": [{{"text": "my keys: {} {SMMS_TOKEN} sk-proj-abcdefghijklmnopqrstuv"}}]}}]}}"#,
                key(3)
            )),
        ),
        (
            3,
            key(3),
            "gemini-2.5-pro",
            "openai-chat-non-stream",
            r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}"#.to_owned(),
            400,
            None,
        ),
    ]
}

/// The fixture's start: two hours ago, in whole seconds (MySQL's DATETIME keeps no fraction).
fn start() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - 7200
}

/// A naive local time in Asia/Shanghai (UTC+8 all year), as the Python server in its Docker
/// image writes `datetime.now()`: `YYYY-MM-DD HH:MM:SS.ffffff`.
fn shanghai(unix: i64) -> String {
    let local = unix + 8 * 3600;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.000000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The tables exactly as the Python server's SQLAlchemy models create them on SQLite.
const SQLITE_DDL: &str = r#"
CREATE TABLE t_settings (
	id INTEGER NOT NULL, 
	"key" VARCHAR(100) NOT NULL, 
	value TEXT, 
	description VARCHAR(255), 
	created_at DATETIME, 
	updated_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);
CREATE TABLE t_error_logs (
	id INTEGER NOT NULL, 
	gemini_key VARCHAR(100), 
	model_name VARCHAR(100), 
	error_type VARCHAR(50), 
	error_log TEXT, 
	error_code INTEGER, 
	request_msg JSON, 
	request_time DATETIME, 
	PRIMARY KEY (id)
);
CREATE TABLE t_request_log (
	id INTEGER NOT NULL, 
	request_time DATETIME, 
	model_name VARCHAR(100), 
	api_key VARCHAR(100), 
	is_success BOOLEAN NOT NULL, 
	status_code INTEGER, 
	latency_ms INTEGER, 
	PRIMARY KEY (id)
);
CREATE TABLE t_file_records (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	display_name VARCHAR(255), 
	mime_type VARCHAR(100) NOT NULL, 
	size_bytes BIGINT NOT NULL, 
	sha256_hash VARCHAR(255), 
	state VARCHAR(10) NOT NULL, 
	create_time DATETIME NOT NULL, 
	update_time DATETIME NOT NULL, 
	expiration_time DATETIME NOT NULL, 
	uri VARCHAR(500) NOT NULL, 
	api_key VARCHAR(100) NOT NULL, 
	upload_url TEXT, 
	user_token VARCHAR(100), 
	upload_completed DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
"#;

/// The Python server's SQLite database, filled, at `path`.
fn python_sqlite(path: &Path, base_url: &str, start: i64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(SQLITE_DDL).unwrap();
    let created = shanghai(start - 86_400);
    for (name, value) in settings_rows(base_url) {
        conn.execute(
            "INSERT INTO t_settings (\"key\", value, description, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![
                name,
                value,
                format!("{name} configuration setting"),
                created
            ],
        )
        .unwrap();
    }
    for (at, model, key, success, status, latency) in request_rows() {
        conn.execute(
            "INSERT INTO t_request_log (request_time, model_name, api_key, is_success, \
             status_code, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![shanghai(start + at), model, key, success, status, latency],
        )
        .unwrap();
    }
    for (at, key, model, kind, log, code, msg) in error_rows() {
        conn.execute(
            "INSERT INTO t_error_logs (gemini_key, model_name, error_type, error_log, \
             error_code, request_msg, request_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![key, model, kind, log, code, msg, shanghai(start + at)],
        )
        .unwrap();
    }
}

/// Runs `gemini-balance-proxy import ARGS` in `dir` (TZ unset: the Python server's default
/// zone); returns the exit code, stdout and stderr.
fn import(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
        .arg("import")
        .args(args)
        .current_dir(dir)
        .env_remove("TZ")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for secret in secrets() {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "a secret in the import's output:\n{stdout}\n{stderr}"
        );
    }
    // Not a terminal: no colour codes.
    assert!(!stderr.contains('\x1b'), "colour codes in {stderr:?}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The bytes of the database and its companions hold no secret.
fn assert_no_secret_in_database(dir: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("data/default_db.db{suffix}"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for secret in secrets() {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret",
                path.display()
            );
        }
    }
}

/// What the store holds: the settings table, and the imported log rows.
fn store_state(dir: &Path) -> (Vec<(String, String)>, i64, i64) {
    let conn = Connection::open_with_flags(
        dir.join("data/default_db.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let settings = conn
        .prepare("SELECT name, value FROM settings ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        settings,
        count("SELECT count(*) FROM request_log WHERE route = '(imported)'"),
        count("SELECT count(*) FROM error_log"),
    )
}

/// The report of the first import (or of a dry run) names every change and what was left.
fn assert_first_report(stdout: &str, dry_run: bool) {
    for line in [
        "API_KEYS: [\"AIza…0001\"] → [\"AIza…0001\",\"AIza…0002\"] (secrets file)",
        "ALLOWED_TOKENS: [\"sk-e…0001\"] → [\"sk-e…0001\",\"sk-a…0002\"] (secrets file)",
        "MAX_RETRIES: 3 → 5 (database)",
        "THINKING_BUDGET_MAP: {} → {\"gemini-2.5-flash\":-1} (database)",
        "ERROR_LOG_RECORD_REQUEST_BODY: false → true (database)",
        "PROXIES: refused: expected",
        "TIMEZONE: read at start only: the Python server has Europe/Berlin; set TIMEZONE=Europe/Berlin in .env",
        "GITHUB_REPO_NAME",
        "SMMS_SECRET_TOKEN",
        "MYSQL_PASSWORD",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let logs = if dry_run {
        [
            "t_request_log: 4 rows to import (up to id 4)",
            "t_error_logs: 2 rows to import (up to id 2)",
        ]
    } else {
        [
            "t_request_log: 4 rows imported",
            "t_error_logs: 2 rows imported",
        ]
    };
    for line in logs {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("times read as Asia/Shanghai"), "{stdout}");
}

/// After the first import: secrets in the secrets file only, the rest in the settings table,
/// the log rows with fingerprints; a second run changes nothing.
fn assert_imported_once(dir: &Path, args: &[&str], env: &[(&str, &str)], start: i64) {
    assert_no_secret_in_database(dir);
    let secrets_path = dir.join("data/default_db.secrets.json");
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(&secrets_path).unwrap()).unwrap();
    assert_eq!(kept["API_KEYS"], format!("[\"{}\",\"{}\"]", key(1), key(2)));
    assert_eq!(
        kept["ALLOWED_TOKENS"],
        format!("[\"{TOKEN}\",\"{UI_TOKEN}\"]")
    );
    assert_eq!(kept.as_object().unwrap().len(), 2, "{kept}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (settings, requests, errors) = store_state(dir);
    let names: Vec<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ERROR_LOG_RECORD_REQUEST_BODY",
            "MAX_RETRIES",
            "THINKING_BUDGET_MAP"
        ]
    );
    assert_eq!((requests, errors), (4, 2));
    // Times: 08:00 in Shanghai is 00:00 UTC; keys as their fingerprints.
    let conn = Connection::open_with_flags(
        dir.join("data/default_db.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (at_ms, mask, class, message, body): (i64, String, String, String, String) = conn
        .query_row(
            "SELECT at_ms, key_mask, class, message, request_body FROM error_log ORDER BY at_ms LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(at_ms, (start + 1) * 1000);
    assert_eq!(
        (mask.as_str(), class.as_str()),
        ("AIza…0002", "rate_limited")
    );
    assert!(
        message.starts_with("[gemini-chat-non-stream] {"),
        "{message}"
    );
    assert!(message.contains("key=AIza…0002"), "{message}");
    assert!(body.contains("sk-p…stuv"), "{body}");
    let first_request: i64 = conn
        .query_row("SELECT min(at_ms) FROM request_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(first_request, start * 1000);
    drop(conn);

    // Again: nothing changes.
    let secrets_before = std::fs::read(&secrets_path).unwrap();
    let (code, stdout, _) = import(dir, args, env);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("nothing to change"), "{stdout}");
    assert!(
        stdout.contains("t_request_log: 0 rows imported; 4 rows imported before (up to id 4)"),
        "{stdout}"
    );
    assert!(stdout.contains("t_error_logs: 0 rows imported"), "{stdout}");
    assert_eq!(std::fs::read(&secrets_path).unwrap(), secrets_before);
    assert_eq!(store_state(dir), (settings, 4, 2));
    assert_no_secret_in_database(dir);
}

#[tokio::test]
async fn the_python_servers_sqlite_database_is_imported_and_the_proxy_starts_on_it() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let dir = tempfile::tempdir().unwrap();
    let start = start();
    python_sqlite(&dir.path().join("python.db"), &base_url, start);
    std::fs::write(dir.path().join(".env"), env_file(&base_url)).unwrap();
    let args = ["python.db", "--logs"];

    // A dry run writes nothing and says what would change.
    let (code, stdout, stderr) = import(dir.path(), &["python.db", "--logs", "--dry-run"], &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert_first_report(&stdout, true);
    assert!(stdout.contains("Dry run: nothing was written"), "{stdout}");
    assert!(!dir.path().join("data").exists(), "the dry run wrote data/");

    let (code, stdout, stderr) = import(dir.path(), &args, &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert_first_report(&stdout, false);
    assert_imported_once(dir.path(), &args, &[], start);

    // The proxy starts with the Python server's settings: the key and the token added in its
    // UI work, MAX_RETRIES is 5.
    let proxy = common::Proxy::start(dir.path(), &env_file(&base_url)).await;
    let client = support::client_builder().build().unwrap();
    let admin = |path: &str| {
        let req = client
            .get(format!("{}/api{path}", proxy.url))
            .bearer_auth(ADMIN);
        async move {
            let text = req.send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let keys: Value = admin("/keys").await;
    let mut masks: Vec<&str> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["mask"].as_str().unwrap())
        .collect();
    masks.sort();
    assert_eq!(masks, ["AIza…0001", "AIza…0002"]);
    let config: Value = admin("/config").await;
    let setting = |name: &str| {
        config["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(setting("MAX_RETRIES")["value"], 5);
    assert_eq!(setting("MAX_RETRIES")["source"], "database");
    assert_eq!(setting("API_KEYS")["source"], "secrets_file");
    for _ in 0..4 {
        let res = client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", UI_TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert!(
        mock.requests(&key(2)) > 0,
        "the key added in the Python UI served no request"
    );
    // The imported logs, as the admin API shows them.
    let errors: Value = admin("/logs/errors").await;
    assert_eq!(errors["total"], 2, "{errors}");
    let text = errors.to_string();
    for secret in secrets() {
        assert!(!text.contains(&secret), "{text}");
    }
    assert_eq!(errors["items"][0]["key_mask"], "AIza…0003");
    assert_eq!(errors["items"][0]["class"], "key_rejected");

    // While the proxy runs, the import refuses to write (a dry run still reads).
    let (code, _, stderr) = import(dir.path(), &args, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("stop it first"), "{stderr}");
    let (code, stdout, _) = import(dir.path(), &["python.db", "--dry-run"], &[]);
    assert_eq!(code, 3);
    assert!(stdout.contains("nothing to change"), "{stdout}");
    proxy.stop();
}

#[test]
fn the_command_line_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = import(dir.path(), &["--help"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage: gemini-balance-proxy import <SOURCE>"));
    assert!(stdout.contains("Exit status"));
    let (code, _, stderr) = import(dir.path(), &[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("SOURCE is missing"), "{stderr}");
    let (code, _, stderr) = import(dir.path(), &["nowhere.db"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("nowhere.db: no such file"), "{stderr}");
    // A file that is not the Python server's database.
    std::fs::write(dir.path().join("other.db"), "").unwrap();
    let (code, _, stderr) = import(dir.path(), &["other.db"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a Gemini-Balance database"), "{stderr}");
    assert!(!dir.path().join("data").exists());
    let unknown = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
        .arg("serve-please")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[cfg(feature = "mysql")]
/// The MariaDB of `GEMINI_BALANCE_TEST_MYSQL_URL` (`mysql://root@127.0.0.1:3306`). The tests
/// that need it are `#[ignore]`d; run with `-- --ignored` (as `.ci/run` does), a missing URL
/// fails them rather than passing them untested.
fn mysql_url() -> String {
    match std::env::var("GEMINI_BALANCE_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ => panic!(
            "GEMINI_BALANCE_TEST_MYSQL_URL is not set: the MySQL import tests need a MySQL or \
             MariaDB server (e.g. mysql://root@127.0.0.1:3306, as bash .ci/run sets)"
        ),
    }
}

/// The tables as the Python server's SQLAlchemy models create them on MySQL.
#[cfg(feature = "mysql")]
const MYSQL_DDL: &[&str] = &[
    "CREATE TABLE t_settings (
	id INTEGER NOT NULL AUTO_INCREMENT, 
	`key` VARCHAR(100) NOT NULL COMMENT '配置项键名', 
	value TEXT COMMENT '配置项值', 
	description VARCHAR(255) COMMENT '配置项描述', 
	created_at DATETIME COMMENT '创建时间', 
	updated_at DATETIME COMMENT '更新时间', 
	PRIMARY KEY (id), 
	UNIQUE (`key`)
)",
    "CREATE TABLE t_error_logs (
	id INTEGER NOT NULL AUTO_INCREMENT, 
	gemini_key VARCHAR(100) COMMENT 'Gemini API密钥', 
	model_name VARCHAR(100) COMMENT '模型名称', 
	error_type VARCHAR(50) COMMENT '错误类型', 
	error_log TEXT COMMENT '错误日志', 
	error_code INTEGER COMMENT '错误代码', 
	request_msg JSON COMMENT '请求消息', 
	request_time DATETIME COMMENT '请求时间', 
	PRIMARY KEY (id)
)",
    "CREATE TABLE t_request_log (
	id INTEGER NOT NULL AUTO_INCREMENT, 
	request_time DATETIME COMMENT '请求时间', 
	model_name VARCHAR(100) COMMENT '模型名称', 
	api_key VARCHAR(100) COMMENT '使用的API密钥', 
	is_success BOOL NOT NULL COMMENT '请求是否成功', 
	status_code INTEGER COMMENT 'API响应状态码', 
	latency_ms INTEGER COMMENT '请求耗时(毫秒)', 
	PRIMARY KEY (id)
)",
];

/// A database of the MariaDB at `url`, made as the Python server makes it (`python_sqlite`'s
/// content); dropped with this value, however the test ends.
#[cfg(feature = "mysql")]
struct PythonMysql {
    url: String,
    database: String,
}

#[cfg(feature = "mysql")]
impl PythonMysql {
    async fn create(url: &str, base_url: &str, start: i64) -> PythonMysql {
        use sqlx::Connection as _;

        let database = format!(
            "gb_import_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut server = sqlx::MySqlConnection::connect(url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {database} CHARACTER SET utf8mb4"))
            .execute(&mut server)
            .await
            .unwrap();
        let created = PythonMysql {
            url: url.to_owned(),
            database: database.clone(),
        };
        let mut conn = created.connect().await;
        for ddl in MYSQL_DDL {
            sqlx::query(ddl).execute(&mut conn).await.unwrap();
        }
        let created_at = shanghai(start - 86_400);
        for (name, value) in settings_rows(base_url) {
            sqlx::query(
                "INSERT INTO t_settings (`key`, value, description, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(name)
            .bind(value)
            .bind(format!("{name} configuration setting"))
            .bind(&created_at)
            .bind(&created_at)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for (at, model, key, success, status, latency) in request_rows() {
            sqlx::query(
                "INSERT INTO t_request_log (request_time, model_name, api_key, is_success, \
                 status_code, latency_ms) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(shanghai(start + at))
            .bind(model)
            .bind(key)
            .bind(success)
            .bind(status)
            .bind(latency)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for (at, key, model, kind, log, code, msg) in error_rows() {
            sqlx::query(
                "INSERT INTO t_error_logs (gemini_key, model_name, error_type, error_log, \
                 error_code, request_msg, request_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(key)
            .bind(model)
            .bind(kind)
            .bind(log)
            .bind(code)
            .bind(msg)
            .bind(shanghai(start + at))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();
        created
    }

    async fn connect(&self) -> sqlx::MySqlConnection {
        use sqlx::Connection as _;

        sqlx::MySqlConnection::connect(&format!("{}/{}", self.url, self.database))
            .await
            .unwrap()
    }

    /// The MYSQL_* settings, as the Python server reads them.
    fn env(&self) -> Vec<(&'static str, String)> {
        let rest = self.url.strip_prefix("mysql://").unwrap();
        let (user_part, host_part) = rest.rsplit_once('@').unwrap();
        let (user, password) = user_part.split_once(':').unwrap_or((user_part, ""));
        let (host, port) = host_part.split_once(':').unwrap_or((host_part, "3306"));
        vec![
            ("MYSQL_HOST", host.to_owned()),
            ("MYSQL_PORT", port.to_owned()),
            ("MYSQL_USER", user.to_owned()),
            ("MYSQL_PASSWORD", password.to_owned()),
            ("MYSQL_DATABASE", self.database.clone()),
        ]
    }
}

#[cfg(feature = "mysql")]
impl Drop for PythonMysql {
    fn drop(&mut self) {
        use sqlx::Connection as _;

        let (url, database) = (self.url.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::MySqlConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE {database}"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
#[ignore = "needs GEMINI_BALANCE_TEST_MYSQL_URL: a MySQL or MariaDB server (e.g. mysql://root@127.0.0.1:3306); run with -- --ignored"]
async fn the_python_servers_mysql_database_is_imported() {
    let url = mysql_url();
    let base_url = "http://127.0.0.1:9/v1beta";
    let start = start();
    let python = PythonMysql::create(&url, base_url, start).await;
    let database = python.database.clone();
    let env = python.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), env_file(base_url)).unwrap();
    let (code, stdout, stderr) = import(dir.path(), &["mysql", "--logs", "--dry-run"], &env);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert_first_report(&stdout, true);
    assert!(stdout.contains(&format!("/{database} (MySQL)")), "{stdout}");
    assert!(!dir.path().join("data").exists(), "the dry run wrote data/");
    let args = ["mysql", "--logs"];
    let (code, stdout, stderr) = import(dir.path(), &args, &env);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert_first_report(&stdout, false);
    assert_imported_once(dir.path(), &args, &env, start);
}

/// Runs `sql` on the Python server's SQLite file, as the Python server would write.
fn python_writes(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

/// A `t_request_log` row at `at` seconds after the fixture's start, as the Python server adds
/// it (the id is SQLite's: one above the highest left).
fn python_request_sql(at: i64, start: i64) -> String {
    format!(
        "INSERT INTO t_request_log (request_time, model_name, api_key, is_success, status_code, \
         latency_ms) VALUES ('{}', 'gemini-2.0-flash', '{}', 1, 200, 100);",
        shanghai(start + at),
        key(1)
    )
}

/// The store's settings table as a map.
fn stored_settings(dir: &Path) -> std::collections::BTreeMap<String, String> {
    store_state(dir).0.into_iter().collect()
}

#[tokio::test]
async fn importing_again_keeps_what_was_changed_here_and_brings_over_what_changed_there() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python.db");
    let start = start();
    python_sqlite(&python, &base_url, start);
    std::fs::write(dir.path().join(".env"), env_file(&base_url)).unwrap();
    let (code, stdout, _) = import(dir.path(), &["python.db", "--logs"], &[]);
    assert_eq!(code, 3, "{stdout}");
    assert_eq!(stored_settings(dir.path())["MAX_RETRIES"], "5");

    // Changed in this proxy's admin after the migration: MAX_RETRIES, and a key added.
    let proxy = common::Proxy::start(dir.path(), &env_file(&base_url)).await;
    let client = support::client_builder().build().unwrap();
    for (method, path, body) in [
        ("PUT", "/config", serde_json::json!({"MAX_RETRIES": 7})),
        ("POST", "/keys", serde_json::json!({"text": key(4)})),
    ] {
        let res = client
            .request(method.parse().unwrap(), format!("{}/api{path}", proxy.url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "{method} {path}: {}",
            res.status()
        );
    }
    proxy.stop();
    let secrets_path = dir.path().join("data/default_db.secrets.json");
    let keys_here = || -> String {
        let kept: Value =
            serde_json::from_str(&std::fs::read_to_string(&secrets_path).unwrap()).unwrap();
        kept["API_KEYS"].as_str().unwrap().to_owned()
    };
    assert!(keys_here().contains(&key(4)));

    // The Python server kept running and logging: the logs are caught up, the changes made
    // here stay.
    python_writes(&python, &python_request_sql(10, start));
    let (code, stdout, _) = import(dir.path(), &["python.db", "--logs"], &[]);
    assert_eq!(code, 3, "{stdout}");
    assert_eq!(stored_settings(dir.path())["MAX_RETRIES"], "7", "{stdout}");
    assert!(
        keys_here().contains(&key(4)),
        "the key added here was dropped"
    );
    assert!(
        stdout.contains("changed here since the last import: kept: API_KEYS, MAX_RETRIES"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing to change"), "{stdout}");
    assert!(
        stdout.contains("t_request_log: 1 rows imported"),
        "{stdout}"
    );

    // Then changed in the Python UI: MAX_RETRIES (changed here too) and MAX_FAILURES.
    python_writes(
        &python,
        "UPDATE t_settings SET value = '6' WHERE \"key\" = 'MAX_RETRIES';
         UPDATE t_settings SET value = '9' WHERE \"key\" = 'MAX_FAILURES';",
    );
    python_writes(&python, &python_request_sql(20, start));
    // --logs-only leaves the settings alone.
    let (code, stdout, _) = import(dir.path(), &["python.db", "--logs-only"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("Settings: left alone (--logs-only)"),
        "{stdout}"
    );
    assert!(!stdout.contains("MAX_FAILURES"), "{stdout}");
    assert!(
        stdout.contains("t_request_log: 1 rows imported"),
        "{stdout}"
    );
    assert!(!stored_settings(dir.path()).contains_key("MAX_FAILURES"));

    let (code, stdout, _) = import(dir.path(), &["python.db"], &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.contains("MAX_FAILURES: 3 → 9 (database)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("changed here and in the Python server since the last import"),
        "{stdout}"
    );
    assert!(stdout.contains("): MAX_RETRIES"), "{stdout}");
    assert!(stdout.contains("kept: API_KEYS\n"), "{stdout}");
    let stored = stored_settings(dir.path());
    assert_eq!(
        (
            stored["MAX_RETRIES"].as_str(),
            stored["MAX_FAILURES"].as_str()
        ),
        ("7", "9")
    );
    assert!(keys_here().contains(&key(4)));

    // The conflict is reported once; the value here stays.
    let (_, stdout, _) = import(dir.path(), &["python.db"], &[]);
    assert!(!stdout.contains("in the Python server since"), "{stdout}");
    assert!(
        stdout.contains("changed here since the last import: kept: API_KEYS, MAX_RETRIES"),
        "{stdout}"
    );
    assert_eq!(stored_settings(dir.path())["MAX_RETRIES"], "7");
    assert_no_secret_in_database(dir.path());
}

#[test]
fn a_log_the_python_server_emptied_is_imported_again_from_its_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python.db");
    let start = start();
    let base_url = "http://127.0.0.1:9/v1beta";
    python_sqlite(&python, base_url, start);
    std::fs::write(dir.path().join(".env"), env_file(base_url)).unwrap();
    let args = ["python.db", "--logs-only"];
    let (code, stdout, _) = import(dir.path(), &args, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(store_state(dir.path()).1, 4);

    // "Delete all" in the Python admin, then new traffic: its ids start again at 1.
    python_writes(&python, "DELETE FROM t_request_log;");
    python_writes(
        &python,
        &format!(
            "{}{}",
            python_request_sql(100, start),
            python_request_sql(101, start)
        ),
    );
    let (_, stdout, stderr) = import(dir.path(), &["python.db", "--logs-only", "--dry-run"], &[]);
    assert!(
        stdout.contains("t_request_log: 2 rows to import (up to id 2)"),
        "{stdout}"
    );
    assert!(stderr.contains("ids started again"), "{stderr}");
    let (code, stdout, _) = import(dir.path(), &args, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("t_request_log: 2 rows imported"),
        "{stdout}"
    );
    assert_eq!(store_state(dir.path()).1, 6);
    let (_, stdout, stderr) = import(dir.path(), &args, &[]);
    assert!(
        stdout.contains("t_request_log: 0 rows imported"),
        "{stdout}"
    );
    assert!(!stderr.contains("ids started again"), "{stderr}");

    // Its newest row deleted, then a new one: it gets the same id.
    python_writes(
        &python,
        &format!(
            "DELETE FROM t_request_log WHERE id = 2;{}",
            python_request_sql(200, start)
        ),
    );
    let (_, stdout, _) = import(dir.path(), &args, &[]);
    assert!(
        stdout.contains("t_request_log: 1 rows imported"),
        "{stdout}"
    );
    assert_eq!(store_state(dir.path()).1, 7);
    let conn = Connection::open_with_flags(
        dir.path().join("data/default_db.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let last: i64 = conn
        .query_row("SELECT max(at_ms) FROM request_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(last, (start + 200) * 1000);
}

/// The Python server's `.env.example` (`tests/fixtures/python.env.example`), as the rows its
/// first start writes to `t_settings` (every variable but DATABASE_TYPE).
fn env_example_rows() -> Vec<(String, String)> {
    include_str!("fixtures/python.env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(name, _)| *name != "DATABASE_TYPE")
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn the_placeholders_of_the_python_env_example_are_not_redacted_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python.db");
    let conn = Connection::open(&python).unwrap();
    conn.execute_batch(SQLITE_DDL).unwrap();
    let rows = env_example_rows();
    assert!(rows
        .iter()
        .any(|(n, v)| n == "PICGO_API_KEY" && v == "xxxx"));
    for (name, value) in &rows {
        conn.execute(
            "INSERT INTO t_settings (\"key\", value) VALUES (?1, ?2)",
            params![name, value],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO t_error_logs (gemini_key, model_name, error_type, error_log, error_code, \
         request_time) VALUES (?1, 'gemini-2.5-flash', 'gemini-chat-non-stream', ?2, 500, ?3)",
        params![
            "AIzaSyxxxxxxxxxxxxxxxxxxx",
            r#"{"error": {"code": 500, "message": "upload to https://xxxx.example failed: token XXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}}"#,
            shanghai(start())
        ],
    )
    .unwrap();
    drop(conn);
    std::fs::write(dir.path().join(".env"), "").unwrap();
    let (code, stdout, stderr) = import(dir.path(), &["python.db", "--logs"], &[]);
    assert!(code == 0 || code == 3, "{stdout}\n{stderr}");
    assert!(!stdout.contains("……"), "{stdout}");
    assert!(stdout.contains("API_KEYS: [] → [\"AIza…xxxx\""), "{stdout}");
    let conn = Connection::open_with_flags(
        dir.path().join("data/default_db.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let message: String = conn
        .query_row("SELECT message FROM error_log", [], |r| r.get(0))
        .unwrap();
    // The short placeholder stays as it is; the long one is a secret, redacted.
    assert!(message.contains("https://xxxx.example"), "{message}");
    assert!(
        !message.contains("XXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
        "{message}"
    );
}

/// `GET /api{path}` with the admin token.
async fn admin_get(proxy: &common::Proxy, path: &str) -> Value {
    let text = support::client_builder()
        .build()
        .unwrap()
        .get(format!("{}/api{path}", proxy.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// What a running proxy serves with: its keys' fingerprints (sorted), MAX_RETRIES and where
/// MAX_RETRIES came from.
async fn serving_with(proxy: &common::Proxy) -> (Vec<String>, Value, Value) {
    let keys = admin_get(proxy, "/keys").await;
    let mut masks: Vec<String> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["mask"].as_str().unwrap().to_owned())
        .collect();
    masks.sort();
    let config = admin_get(proxy, "/config").await;
    let retries = config["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "MAX_RETRIES")
        .unwrap()
        .clone();
    (masks, retries["value"].clone(), retries["source"].clone())
}

/// Four requests with the token added in the Python UI; the status of each.
async fn ask_with_the_ui_token(proxy: &common::Proxy) -> Vec<u16> {
    let client = support::client_builder().build().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", UI_TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    statuses
}

/// The log of one run of the proxy; it holds no secret.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    for secret in secrets() {
        assert!(!text.contains(&secret), "a secret in the log:\n{text}");
    }
    text
}

/// The line of `log` that says `says`.
fn line<'a>(log: &'a str, says: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(says))
        .unwrap_or_else(|| panic!("no line saying {says:?} in:\n{log}"))
}

/// Changes the Python server's SQLite database as its web UI would: another key, MAX_RETRIES 9.
fn change_python_sqlite(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute(
        "UPDATE t_settings SET value = ?1 WHERE \"key\" = 'API_KEYS'",
        params![py_list(&[&key(1), &key(2), &key(4)])],
    )
    .unwrap();
    conn.execute(
        "UPDATE t_settings SET value = '9' WHERE \"key\" = 'MAX_RETRIES'",
        [],
    )
    .unwrap();
}

/// The Python server's directory as a migrating user has it: its `.env` (at LOG_LEVEL=info,
/// plus `extra`) and its SQLite database, `data/default_db`.
fn python_directory(base_url: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    python_sqlite(&dir.path().join("data/default_db"), base_url, start());
    let env = format!("{}LOG_LEVEL=info\n{extra}", env_file(base_url));
    (dir, env)
}

#[tokio::test]
async fn the_first_start_imports_the_python_servers_sqlite_database_once() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let (dir, env) = python_directory(&base_url, "");
    let log = dir.path().join("first.log");

    // Started on the Python server's .env and database, without `import`: the key and the
    // token added in its UI work, MAX_RETRIES is its 5.
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    assert_eq!(ask_with_the_ui_token(&proxy).await, [200; 4]);
    assert!(
        mock.requests(&key(2)) > 0,
        "the key added in the Python UI served no request"
    );
    assert_eq!(
        serving_with(&proxy).await,
        (
            vec!["AIza…0001".to_owned(), "AIza…0002".to_owned()],
            Value::from(5),
            Value::from("database")
        )
    );
    // Settings only: the logs wait for `import --logs`.
    assert_eq!(admin_get(&proxy, "/logs/errors").await["total"], 0);
    proxy.stop();
    assert_no_secret_in_database(dir.path());
    assert!(!dir.path().join("data/default_db.import-pending").exists());

    // The log says what came from where, by name.
    let text = read_log(&log);
    let imported = line(&text, "first start: imported");
    for name in [
        "from=data/default_db (SQLite)",
        "MAX_RETRIES",
        "THINKING_BUDGET_MAP",
        "ERROR_LOG_RECORD_REQUEST_BODY",
        "API_KEYS",
        "ALLOWED_TOKENS",
    ] {
        assert!(imported.contains(name), "{name}: {imported}");
    }
    let left = line(&text, "were not brought over");
    assert!(
        left.contains("PROXIES") && left.contains("TIMEZONE") && left.contains("WARN"),
        "{left}"
    );
    let logs = line(&text, "logs are not imported at first start");
    assert!(
        logs.contains("t_request_log (4 rows), t_error_logs (2 rows)")
            && logs.contains("gemini-balance-proxy import data/default_db --logs"),
        "{logs}"
    );

    // A change in the Python database after the first start is not picked up: the second
    // start finds this proxy's own data and imports nothing.
    change_python_sqlite(&dir.path().join("data/default_db"));
    let log = dir.path().join("second.log");
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    assert_eq!(
        serving_with(&proxy).await,
        (
            vec!["AIza…0001".to_owned(), "AIza…0002".to_owned()],
            Value::from(5),
            Value::from("database")
        )
    );
    proxy.stop();
    let text = read_log(&log);
    assert!(
        !text.contains("first start:") && !text.contains("Python server's"),
        "{text}"
    );

    // The command still brings the logs over (and the settings changed since, as asked).
    let (code, stdout, stderr) = import(dir.path(), &["data/default_db", "--logs"], &[]);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("t_request_log: 4 rows imported")
            && stdout.contains("MAX_RETRIES: 5 → 9 (database)"),
        "{stdout}"
    );
}

/// The first start remembers what it imported, as `import` does: an `import` run later (for
/// the logs, say) keeps what was changed here since.
#[tokio::test]
async fn an_import_after_the_first_start_keeps_what_was_changed_here() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let (dir, env) = python_directory(&base_url, "");
    let proxy = common::Proxy::start(dir.path(), &env).await;
    let res = support::client_builder()
        .build()
        .unwrap()
        .put(format!("{}/api/config", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"MAX_RETRIES": 7}"#)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    proxy.stop();
    let (code, stdout, _) = import(dir.path(), &["data/default_db", "--logs"], &[]);
    assert_eq!(code, 3, "{stdout}");
    assert_eq!(stored_settings(dir.path())["MAX_RETRIES"], "7", "{stdout}");
    assert!(
        stdout.contains("changed here since the last import: kept: MAX_RETRIES"),
        "{stdout}"
    );
    assert!(
        stdout.contains("t_request_log: 4 rows imported"),
        "{stdout}"
    );
}

#[tokio::test]
async fn import_python_database_false_leaves_the_python_database_alone() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let (dir, env) = python_directory(&base_url, "IMPORT_PYTHON_DATABASE=false\n");
    let log = dir.path().join("first.log");
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    assert_eq!(
        serving_with(&proxy).await,
        (
            vec!["AIza…0001".to_owned()],
            Value::from(3),
            Value::from("default")
        )
    );
    proxy.stop();
    let text = read_log(&log);
    let said = line(&text, "IMPORT_PYTHON_DATABASE=false");
    assert!(
        said.contains("from=data/default_db (SQLite)")
            && said.contains("gemini-balance-proxy import data/default_db"),
        "{said}"
    );
    assert!(!text.contains("first start: imported"), "{text}");

    // Switched on again, the next start is not a first start any more: still nothing.
    let env = env.replace("IMPORT_PYTHON_DATABASE=false\n", "");
    let proxy = common::Proxy::start(dir.path(), &env).await;
    assert_eq!(serving_with(&proxy).await.0, ["AIza…0001"]);
    proxy.stop();
}

/// Runs the binary in `dir` and expects it to refuse to start; returns its stderr.
#[cfg(feature = "mysql")]
fn refused_start(dir: &Path) -> String {
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
        .current_dir(dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", common::free_port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A guard, not a measurement: a proxy that started anyway would otherwise run forever.
    for _ in 0..1200 {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(!exit.success(), "the proxy exited with {exit}");
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return stderr;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the proxy started although the Python server's MySQL cannot be reached");
}

/// `DATABASE_TYPE=mysql` is this proxy's store (docs/scale-out.md): a MySQL that cannot be
/// reached stops startup, naming it without its password, and nothing is made under data/.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn an_unreachable_mysql_store_stops_startup_naming_it() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let port = common::free_port();
    let env = format!(
        "{}DATABASE_TYPE=mysql\nMYSQL_HOST=127.0.0.1\nMYSQL_PORT={port}\nMYSQL_USER=gemini\n\
         MYSQL_PASSWORD={PROXY_PASSWORD}\nMYSQL_DATABASE=default_db\n",
        env_file(&base_url)
    );
    std::fs::write(dir.path().join(".env"), &env).unwrap();
    let stderr = refused_start(dir.path());
    assert!(
        stderr.contains("DATABASE_TYPE=mysql")
            && stderr.contains(&format!("127.0.0.1:{port}/default_db")),
        "{stderr}"
    );
    assert!(!stderr.contains(PROXY_PASSWORD), "{stderr}");
    assert!(!dir.path().join("data/default_db.db").exists());
}

#[cfg(feature = "mysql")]
#[tokio::test]
#[ignore = "needs GEMINI_BALANCE_TEST_MYSQL_URL: a MySQL or MariaDB server (e.g. mysql://root@127.0.0.1:3306); run with -- --ignored"]
async fn with_database_type_mysql_the_first_start_imports_the_settings_into_that_database() {
    let url = mysql_url();
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let python = PythonMysql::create(&url, &base_url, start()).await;
    let mut env = format!(
        "{}LOG_LEVEL=info\nDATABASE_TYPE=mysql\n",
        env_file(&base_url)
    );
    for (name, value) in python.env() {
        env.push_str(&format!("{name}={value}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("first.log");
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    // The keys and settings changed in the Python web UI serve from the first start.
    assert_eq!(ask_with_the_ui_token(&proxy).await, [200; 4]);
    assert!(mock.requests(&key(2)) > 0);
    let two_keys = vec!["AIza…0001".to_owned(), "AIza…0002".to_owned()];
    assert_eq!(
        serving_with(&proxy).await,
        (two_keys.clone(), Value::from(5), Value::from("database"))
    );
    proxy.stop();
    let text = read_log(&log);
    let imported = line(&text, "first start: imported");
    assert!(
        imported.contains(&format!("/{} (MySQL)", python.database))
            && imported.contains("API_KEYS")
            && imported.contains("MAX_RETRIES"),
        "{imported}"
    );
    assert!(
        line(&text, "logs stay in its own tables").contains("MySQL"),
        "{text}"
    );
    assert!(!dir.path().join("data/default_db.db").exists());
    // This proxy's tables are in the same database, the Python server's untouched; the keys
    // are in this instance's secrets file, not in the database.
    let mut conn = python.connect().await;
    let (settings,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t_settings")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(settings, 72);
    let (versions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM schema_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, 1);
    let (kept,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM settings WHERE name = 'MAX_RETRIES'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kept, 1);
    let (secret,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM settings WHERE value LIKE '%AIza%' OR name = 'API_KEYS'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(secret, 0);
    assert!(
        std::fs::read_to_string(dir.path().join("data/default_db.secrets.json"))
            .unwrap()
            .contains("API_KEYS")
    );

    // Changed in the Python tables afterwards: not picked up (imported once).
    sqlx::query("UPDATE t_settings SET value = '9' WHERE `key` = 'MAX_RETRIES'")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let log = dir.path().join("second.log");
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    assert_eq!(
        serving_with(&proxy).await,
        (two_keys, Value::from(5), Value::from("database"))
    );
    proxy.stop();
    let text = read_log(&log);
    assert!(!text.contains("first start:"), "{text}");
}

#[test]
fn the_fixture_times_are_shanghai_local_times() {
    // 2025-01-15T00:00:00Z is 08:00 in Shanghai.
    assert_eq!(shanghai(1_736_899_200), "2025-01-15 08:00:00.000000");
    assert_eq!(shanghai(1_709_222_399), "2024-02-29 23:59:59.000000");
}

/// A data lock that cannot be taken (a file system without advisory locks; here the lock file's
/// name is taken by a directory) does not keep the proxy from starting: it serves, and says it
/// runs unguarded.
#[tokio::test]
async fn a_data_lock_that_cannot_be_taken_does_not_stop_the_proxy() {
    let mock = MockGemini::start().await;
    let base_url = format!("{}/v1beta", mock.base_url());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/default_db.lock")).unwrap();
    let log = dir.path().join("proxy.log");
    let env = format!("{}LOG_LEVEL=info\n", env_file(&base_url));
    let proxy = common::Proxy::start_capturing(dir.path(), &env, &log).await;
    assert_eq!(serving_with(&proxy).await.0, ["AIza…0001"]);
    proxy.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the data lock could not be taken"), "{text}");
}

/// The import's warnings (here: a data directory others could read, made private) go to
/// stderr as plain text when it is not a terminal.
#[cfg(unix)]
#[test]
fn the_imports_warnings_are_plain_text_off_a_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::set_permissions(
        dir.path().join("data"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let base_url = "http://127.0.0.1:9/v1beta";
    python_sqlite(&dir.path().join("python.db"), base_url, start());
    std::fs::write(dir.path().join(".env"), env_file(base_url)).unwrap();
    let (_, _, stderr) = import(dir.path(), &["python.db"], &[]);
    assert!(stderr.contains("WARN"), "{stderr}");
}
