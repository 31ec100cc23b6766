//! The web admin's files, compiled into the binary so it works with no network and no files
//! beside it.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        (
            $name,
            Asset {
                content_type: $type,
                body: include_bytes!(concat!("assets/", $name)),
            },
        )
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/static/`.
static ASSETS: &[(&str, Asset)] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("common.js", JS),
    asset!("login.js", JS),
    asset!("keys.js", JS),
    asset!("models.js", JS),
    asset!("dashboard.js", JS),
    asset!("logs.js", JS),
    asset!("config.js", JS),
    asset!("quotas.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The login page.
pub const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The frame every admin page shares; `{{PAGE}}`, `{{TITLE}}` and `{{CSRF}}` are filled in.
const SHELL_HTML: &str = include_str!("assets/shell.html");

/// The file `/static/{name}`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

/// The HTML of admin page `page` (one of [`super::PAGES`]) for a session with `csrf`.
pub fn page_html(page: &str, csrf: &str) -> String {
    let title = super::PAGES
        .iter()
        .find(|(p, _)| *p == page)
        .map_or(page, |(_, t)| t);
    // The values are fixed words and hex digits: nothing to escape.
    SHELL_HTML
        .replace("{{PAGE}}", page)
        .replace("{{TITLE}}", title)
        .replace("{{CSRF}}", csrf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_its_script_and_the_shell_is_filled() {
        for (page, title) in super::super::PAGES {
            assert!(find(&format!("{page}.js")).is_some(), "{page}.js");
            let html = page_html(page, "c0ffee");
            assert!(html.contains(&format!("/static/{page}.js")));
            assert!(html.contains("content=\"c0ffee\""));
            assert!(html.contains(title));
            assert!(!html.contains("{{"));
        }
        assert!(find("../main.rs").is_none());
    }
}
