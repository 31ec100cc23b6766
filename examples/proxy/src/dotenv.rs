//! Reading `.env` the way Gemini-Balance (python-dotenv) does.
//!
//! Gemini-Balance users write lists unquoted: `API_KEYS=["AIza…","AIza…"]`. Shell-style readers
//! strip the inner quotes and break the JSON; python-dotenv keeps an unquoted value as it is
//! (up to an inline ` #` comment), so that is what this reader does too. Quoted values follow
//! python-dotenv: `'single'` is literal, `"double"` understands `\n`, `\t`, `\"` and `\\` and may
//! span lines. `export KEY=…` is accepted. Variables already set in the environment win.

use std::collections::HashMap;

/// Parses the text of a `.env` file. Malformed lines are reported by number, not guessed at.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(format!(".env line {}: expected NAME=value", index + 1));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!(
                ".env line {}: {key:?} is not a variable name",
                index + 1
            ));
        }
        let rest = rest.trim_start();
        let value = if let Some(body) = rest.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_owned(),
                None => return Err(format!(".env line {}: unclosed single quote", index + 1)),
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            // May span lines until the closing unescaped quote.
            let mut raw = body.to_owned();
            loop {
                if let Some(end) = closing_quote(&raw) {
                    raw.truncate(end);
                    break;
                }
                match lines.next() {
                    Some((_, next)) => {
                        raw.push('\n');
                        raw.push_str(next);
                    }
                    None => return Err(format!(".env line {}: unclosed double quote", index + 1)),
                }
            }
            unescape(&raw)
        } else {
            // Unquoted: everything up to an inline comment (a `#` after whitespace).
            let end = rest
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && rest[..i].ends_with(char::is_whitespace))
                .map_or(rest.len(), |(i, _)| i);
            rest[..end].trim().to_owned()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The environment with `.env` (in the working directory, if present) underneath it.
pub fn load(env: HashMap<String, String>) -> Result<HashMap<String, String>, String> {
    let text = match std::fs::read_to_string(".env") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(env),
        Err(e) => return Err(format!(".env: {e}")),
    };
    let mut vars = env;
    for (key, value) in parse(&text)? {
        vars.entry(key).or_insert(value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gemini_balance_env_files() {
        let text = r#"
# Keys
API_KEYS=["AIzaSyA1","AIzaSyA2"]
ALLOWED_TOKENS = ["sk-1"]   # client tokens
export BASE_URL=https://generativelanguage.googleapis.com/v1beta
SAFETY_SETTINGS='[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]'
AUTH_TOKEN="sk-admin\"1"
MULTI="a
b"
EMPTY=
HASH=a#b
"#;
        let vars: HashMap<_, _> = parse(text).unwrap().into_iter().collect();
        assert_eq!(vars["API_KEYS"], r#"["AIzaSyA1","AIzaSyA2"]"#);
        assert_eq!(vars["ALLOWED_TOKENS"], r#"["sk-1"]"#);
        assert_eq!(
            vars["BASE_URL"],
            "https://generativelanguage.googleapis.com/v1beta"
        );
        assert_eq!(
            vars["SAFETY_SETTINGS"],
            r#"[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]"#
        );
        assert_eq!(vars["AUTH_TOKEN"], "sk-admin\"1");
        assert_eq!(vars["MULTI"], "a\nb");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(vars["HASH"], "a#b");
    }

    #[test]
    fn malformed_lines_are_named() {
        assert!(parse("JUST_A_WORD").unwrap_err().contains("line 1"));
        assert!(parse("A=1\nB=\"open").unwrap_err().contains("line 2"));
        assert!(parse("BAD NAME=1")
            .unwrap_err()
            .contains("not a variable name"));
    }
}
