//! The Python with the official SDKs that the SDK tests drive (`GEMINI_BALANCE_PYTHON`, set by
//! `.ci/run`, which creates `.venv`).
//!
//! The SDK tests are `#[ignore]`d (with the reason: this variable), so the README's
//! `cargo test --workspace --all-features` lists them as ignored instead of passing them
//! untested; `cargo test ... -- --ignored` runs them, and then a missing Python fails them.

/// The Python to run the `suite`'s SDK script with. Panics, naming what to set, when
/// `GEMINI_BALANCE_PYTHON` is not set: a test that asked for it must not pass untested.
pub fn sdk_python(suite: &str) -> String {
    match std::env::var("GEMINI_BALANCE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "GEMINI_BALANCE_PYTHON is not set: the {suite} tests need a Python with `openai` and \
             `google-genai` (bash .ci/run creates .venv; then \
             GEMINI_BALANCE_PYTHON=$PWD/.venv/bin/python)"
        ),
    }
}
