//! Reading `.env` the way Gemini-Balance does: python-dotenv's `load_dotenv()`.
//!
//! Gemini-Balance users write lists unquoted: `API_KEYS=["AIza…","AIza…"]`. Shell-style readers
//! strip the inner quotes and break the JSON; python-dotenv keeps an unquoted value as it is
//! (up to an inline ` #` comment, trailing whitespace trimmed), so that is what this reader does
//! too. It follows python-dotenv's parser (`dotenv/parser.py`) statement by statement:
//!
//! - `'single'` and `"double"` quoted values may span lines; in single quotes `\'` and `\\` are
//!   escapes, in double quotes `\\ \' \" \a \b \f \n \r \t \v` (any other `\x` stays as it is);
//!   after the closing quote only whitespace and a `#` comment may follow;
//! - `export NAME=…` is accepted, a name may be quoted (`'NAME'=…`), a line with a name and no
//!   `=` sets nothing;
//! - `${NAME}` and `${NAME:-default}` are expanded (from the environment first, then from the
//!   lines above), as `load_dotenv(interpolate=True)` does;
//! - a later line for the same name wins over an earlier one; the environment wins over both;
//! - a statement python-dotenv cannot read is skipped (python-dotenv warns and goes on), and
//!   its line is reported so the startup log can name it.

use std::collections::HashMap;

/// What a `.env` text holds.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// `NAME=value` statements in order; `None` for a bare `NAME` (python-dotenv sets nothing
    /// for it).
    pub bindings: Vec<(String, Option<String>)>,
    /// The first line of each statement that could not be read (and was skipped).
    pub skipped: Vec<usize>,
}

/// Parses the text of a `.env` file.
pub fn parse(text: &str) -> Parsed {
    let mut reader = Reader {
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        pos: 0,
        line: 1,
    };
    let mut parsed = Parsed::default();
    loop {
        reader.skip(char::is_whitespace);
        if reader.rest().is_empty() {
            return parsed;
        }
        let line = reader.line;
        match statement(&mut reader) {
            Ok(Some(binding)) => parsed.bindings.push(binding),
            Ok(None) => {}
            Err(Unreadable) => {
                parsed.skipped.push(line);
                // The rest of the line, and one line break (`[^\r\n]*(?:\r|\n|\r\n)?`).
                let rest = reader.rest();
                let mut n = rest.find(['\r', '\n']).unwrap_or(rest.len());
                if n < rest.len() {
                    n += 1;
                }
                reader.advance(n);
            }
        }
    }
}

/// A statement python-dotenv cannot read.
struct Unreadable;

struct Reader<'a> {
    text: &'a str,
    /// Byte offset into `text`.
    pos: usize,
    /// 1-based line of `pos`.
    line: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Moves on `n` bytes, counting line breaks (`\r\n`, `\n` or `\r`).
    fn advance(&mut self, n: usize) {
        let taken = &self.text[self.pos..self.pos + n];
        self.line += taken.matches('\n').count() + taken.matches('\r').count()
            - taken.matches("\r\n").count();
        self.pos += n;
    }

    fn skip(&mut self, what: impl Fn(char) -> bool) {
        let rest = self.rest();
        let n = rest.len() - rest.trim_start_matches(what).len();
        self.advance(n);
    }
}

/// Whitespace within a line (`[^\S\r\n]`).
fn blank(c: char) -> bool {
    c.is_whitespace() && c != '\r' && c != '\n'
}

/// One statement (`parse_binding`), from its first non-blank character to its line's end.
/// `None` for a comment.
fn statement(r: &mut Reader<'_>) -> Result<Option<(String, Option<String>)>, Unreadable> {
    if let Some(after) = r.rest().strip_prefix("export") {
        let spaces = after.len() - after.trim_start_matches(blank).len();
        if spaces > 0 {
            r.advance("export".len() + spaces);
        }
    }
    let key = match r.peek() {
        Some('#') => None,
        Some('\'') => {
            let body = &r.rest()[1..];
            match body.find('\'') {
                Some(end) if end > 0 => {
                    let key = body[..end].to_owned();
                    r.advance(end + 2);
                    Some(key)
                }
                _ => return Err(Unreadable),
            }
        }
        _ => {
            let rest = r.rest();
            let n = rest
                .find(|c: char| c == '=' || c == '#' || c.is_whitespace())
                .unwrap_or(rest.len());
            if n == 0 {
                return Err(Unreadable);
            }
            let key = rest[..n].to_owned();
            r.advance(n);
            Some(key)
        }
    };
    r.skip(blank);
    let value = if r.peek() == Some('=') {
        r.advance(1);
        r.skip(blank);
        Some(value(r)?)
    } else {
        None
    };
    // An optional comment, then the end of the line.
    let rest = r.rest();
    let spaces = rest.len() - rest.trim_start_matches(blank).len();
    if rest[spaces..].starts_with('#') {
        let n = rest.find(['\r', '\n']).unwrap_or(rest.len());
        r.advance(n);
    }
    r.skip(blank);
    match r.peek() {
        None => {}
        Some('\n') => r.advance(1),
        Some('\r') => r.advance(if r.rest().starts_with("\r\n") { 2 } else { 1 }),
        Some(_) => return Err(Unreadable),
    }
    Ok(key.map(|key| (key, value)))
}

/// The value after `=` (`parse_value`).
fn value(r: &mut Reader<'_>) -> Result<String, Unreadable> {
    match r.peek() {
        Some(quote @ ('\'' | '"')) => {
            let body = &r.rest()[1..];
            let end = closing_quote(body, quote).ok_or(Unreadable)?;
            let value = unescape(&body[..end], quote);
            r.advance(end + 2);
            Ok(value)
        }
        None | Some('\r' | '\n') => Ok(String::new()),
        Some(_) => {
            let rest = r.rest();
            let n = rest.find(['\r', '\n']).unwrap_or(rest.len());
            let value = strip_comment(&rest[..n]).trim_end().to_owned();
            r.advance(n);
            Ok(value)
        }
    }
}

/// Where a quoted value ends (`'((?:\\'|[^'])*)'`): at the first quote not escaped by a
/// backslash; without one, at the last escaped quote (where the regex backtracks to).
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut last_escaped = None;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|&(_, next)| next == quote) {
            let (q, _) = chars.next()?;
            last_escaped = Some(q);
        } else if c == quote {
            return Some(i);
        }
    }
    last_escaped
}

/// Decodes python-dotenv's escapes: `\\` and `\'` in single quotes; those, `\"` and
/// `\a \b \f \n \r \t \v` in double quotes. Any other backslash stays.
fn unescape(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match (quote, chars.peek()) {
            (_, Some('\\')) => Some('\\'),
            (_, Some('\'')) => Some('\''),
            ('"', Some('"')) => Some('"'),
            ('"', Some('a')) => Some('\u{7}'),
            ('"', Some('b')) => Some('\u{8}'),
            ('"', Some('f')) => Some('\u{c}'),
            ('"', Some('n')) => Some('\n'),
            ('"', Some('r')) => Some('\r'),
            ('"', Some('t')) => Some('\t'),
            ('"', Some('v')) => Some('\u{b}'),
            _ => None,
        };
        match decoded {
            Some(d) => {
                chars.next();
                out.push(d);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value without its inline comment (`re.sub(r"\s+#.*", "", value)`): from the
/// first run of whitespace that is followed by `#`.
fn strip_comment(line: &str) -> &str {
    for (i, c) in line.char_indices() {
        if c.is_whitespace() && line[i..].trim_start().starts_with('#') {
            return &line[..i];
        }
    }
    line
}

/// Expands `${NAME}` and `${NAME:-default}` in `value`. `lookup` gives a variable's value:
/// `Some(None)` for a name set by a bare `NAME` line (expands to nothing), `None` when unset
/// (the default, or nothing).
fn expand(value: &str, lookup: impl Fn(&str) -> Option<Option<String>>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let name_end = after.find(['}', ':']).unwrap_or(after.len());
        let tail = &after[name_end..];
        let reference = if tail.starts_with('}') {
            Some((None, name_end + 1))
        } else if let Some(default) = tail.strip_prefix(":-") {
            default
                .find('}')
                .map(|end| (Some(&default[..end]), name_end + 2 + end + 1))
        } else {
            None
        };
        match reference {
            Some((default, len)) => {
                out.push_str(&rest[..start]);
                match lookup(&after[..name_end]) {
                    Some(found) => out.push_str(found.as_deref().unwrap_or("")),
                    None => out.push_str(default.unwrap_or("")),
                }
                rest = &after[len..];
            }
            // Not a reference: the `$` is text, and the search goes on after it.
            None => {
                out.push_str(&rest[..=start]);
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `env` with the `.env` text underneath it (the environment wins), and the lines of the text
/// that were skipped.
pub fn merge(env: HashMap<String, String>, text: &str) -> (HashMap<String, String>, Vec<usize>) {
    let parsed = parse(text);
    // python-dotenv's `resolve_variables(override=False)`: each value is expanded from the
    // environment, then from the values above it.
    let mut values: HashMap<String, Option<String>> = HashMap::new();
    for (key, value) in parsed.bindings {
        let value = value.map(|v| {
            expand(&v, |name| match env.get(name) {
                Some(set) => Some(Some(set.clone())),
                None => values.get(name).cloned(),
            })
        });
        values.insert(key, value);
    }
    let mut vars = env;
    for (key, value) in values {
        if let Some(value) = value {
            vars.entry(key).or_insert(value);
        }
    }
    (vars, parsed.skipped)
}

/// The environment with `.env` (in the working directory, if present) underneath it, and the
/// lines of `.env` that were skipped.
pub fn load(env: HashMap<String, String>) -> Result<(HashMap<String, String>, Vec<usize>), String> {
    match std::fs::read_to_string(".env") {
        Ok(text) => Ok(merge(env, &text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((env, Vec::new())),
        Err(e) => Err(format!(".env: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> HashMap<String, String> {
        merge(HashMap::new(), text).0
    }

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
        let vars = vars(text);
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

    /// Each case as python-dotenv 1.x reads it (`dotenv_values(stream=io.StringIO(text))`).
    #[test]
    fn statements_as_python_dotenv_reads_them() {
        type Bindings<'a> = &'a [(&'a str, Option<&'a str>)];
        let cases: &[(&str, Bindings)] = &[
            // Unquoted: inline comments need whitespace before `#`; trailing space is trimmed.
            ("A=1 # one", &[("A", Some("1"))]),
            ("A=1\t#one", &[("A", Some("1"))]),
            ("A=#1", &[("A", Some("#1"))]),
            ("A=a b  ", &[("A", Some("a b"))]),
            ("A= [\"x\", \"y\"] ", &[("A", Some("[\"x\", \"y\"]"))]),
            (r"A=C:\new", &[("A", Some(r"C:\new"))]),
            // Quoted, escapes, comments after the quote.
            (r#"A="x\ny\t\\z""#, &[("A", Some("x\ny\t\\z"))]),
            (r#"A="C:\Users\q""#, &[("A", Some(r"C:\Users\q"))]),
            (r"A='it\'s \\ \n'", &[("A", Some(r"it's \ \n"))]),
            ("A='a # b' # c", &[("A", Some("a # b"))]),
            ("A=\"a\"# c", &[("A", Some("a"))]),
            ("A='multi\nline'", &[("A", Some("multi\nline"))]),
            // Names: `export`, quoted names, any character but `=`, `#` and space.
            ("export\tA=1", &[("A", Some("1"))]),
            ("exportA=1", &[("exportA", Some("1"))]),
            ("'A B'=1", &[("A B", Some("1"))]),
            ("my-var.x=1", &[("my-var.x", Some("1"))]),
            ("A", &[("A", None)]),
            ("A = 1", &[("A", Some("1"))]),
            ("A=", &[("A", Some(""))]),
            // Line endings and a byte-order mark.
            (
                "\u{feff}A=1\r\nB=2\rC=3",
                &[("A", Some("1")), ("B", Some("2")), ("C", Some("3"))],
            ),
        ];
        for (text, expected) in cases {
            let parsed = parse(text);
            let expected: Vec<(String, Option<String>)> = expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect();
            assert_eq!(parsed.bindings, expected, "{text:?}");
            assert!(parsed.skipped.is_empty(), "{text:?}: {:?}", parsed.skipped);
        }
    }

    #[test]
    fn unreadable_statements_are_skipped_and_their_lines_named() {
        // python-dotenv warns about these and goes on with the next line.
        let text = "A=1\nJUST WORDS\nC='x' trailing\nD=4\n=5\nE=\"a\" b\nF=6\nB=\"open\nG=7";
        let parsed = parse(text);
        let keys: Vec<&str> = parsed.bindings.iter().map(|(k, _)| k.as_str()).collect();
        // `B="open` has no closing quote: skipped, and the line after it is read.
        assert_eq!(keys, ["A", "D", "F", "G"]);
        assert_eq!(parsed.skipped, [2, 3, 5, 6, 8]);
        // With no closing quote, python-dotenv's regex backtracks to the last escaped one.
        let parsed = parse("A='it\\'s\nB=2");
        assert_eq!(parsed.bindings, [("B".to_owned(), Some("2".to_owned()))]);
        assert_eq!(parsed.skipped, [1]);
        // A quoted value runs to its closing quote, lines away.
        let parsed = parse("A=\"open\nB=2\nC=\"\nD=4");
        assert_eq!(
            parsed.bindings,
            [
                ("A".to_owned(), Some("open\nB=2\nC=".to_owned())),
                ("D".to_owned(), Some("4".to_owned()))
            ]
        );
    }

    #[test]
    fn later_lines_win_the_environment_wins_and_references_expand() {
        let env: HashMap<String, String> = [("FROM_ENV", "env"), ("A", "set outside")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let text = "A=from file\nB=1\nB=2\nC=${FROM_ENV}-${B}\nD=${MISSING:-fallback}/${MISSING}\n\
                    E='${B}'\nF=$B ${ } ${B:x} ${B\nG\nH=[${G:-g}]\nI=${A}";
        let (vars, skipped) = merge(env, text);
        assert!(skipped.is_empty());
        assert_eq!(vars["A"], "set outside");
        assert_eq!(vars["B"], "2");
        assert_eq!(vars["C"], "env-2");
        assert_eq!(vars["D"], "fallback/");
        assert_eq!(
            vars["E"], "2",
            "python-dotenv expands single-quoted values too"
        );
        assert_eq!(vars["F"], "$B  ${B:x} ${B");
        assert!(!vars.contains_key("G"), "a bare name sets nothing");
        assert_eq!(
            vars["H"], "[]",
            "a bare name expands to nothing, not to the default"
        );
        assert_eq!(vars["I"], "set outside");
    }
}
