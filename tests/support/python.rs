//! The Python with the official SDKs that the SDK tests drive (`GEMINI_BALANCE_PYTHON`, set by
//! `.ci/run`, which creates `.venv`).

use std::io::Write;

/// The Python to run the `suite`'s SDK script with. Without one the suite is skipped with a
/// notice, except under CI (`CI` set), where that is a failure: CI must run the SDK tests.
pub fn sdk_python(suite: &str) -> Option<String> {
    match std::env::var("GEMINI_BALANCE_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ if std::env::var_os("CI").is_some() => {
            panic!("GEMINI_BALANCE_PYTHON is not set: CI must run the {suite} tests (see .ci/run)")
        }
        _ => {
            // Written to the real stderr, not through `eprintln!`, which the test harness
            // captures (and hides for passing tests).
            let _ = writeln!(
                std::io::stderr(),
                "\n**********************************************************************\n\
                 SKIPPED {suite}: set GEMINI_BALANCE_PYTHON to a Python with `openai`\n\
                 and `google-genai` (bash .ci/run creates .venv) to run the SDK tests.\n\
                 **********************************************************************\n"
            );
            None
        }
    }
}
