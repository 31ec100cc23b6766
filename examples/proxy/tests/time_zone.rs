//! TIMEZONE: an IANA name; anything else stops startup naming the variable.

mod common;

#[test]
fn an_unknown_time_zone_stops_startup_naming_it() {
    for bad in ["Asia/Atlantis", "UTC+8", "Beijing"] {
        let stderr = common::startup_error(&format!("TIMEZONE={bad}\n"));
        assert!(stderr.contains("TIMEZONE"), "{stderr}");
        assert!(stderr.contains(bad), "{stderr}");
    }
}

#[tokio::test]
async fn an_iana_time_zone_is_accepted() {
    let mock = support::MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "TIMEZONE=America/New_York\nALLOWED_TOKENS=[\"{}\"]\nBASE_URL={}/v1beta\n",
        common::TOKEN,
        mock.base_url()
    );
    let proxy = common::Proxy::start(dir.path(), &env).await;
    proxy.stop();
}
