//! The status web page at `/`: one HTML file, its script and its style, compiled into the
//! binary so the page works offline and with no asset from anywhere else. The page reads the
//! same JSON API as `do-scaler status` and sends pause and resume with the token the reader
//! types in; the daemon's answers, not the page, decide what is allowed.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");

/// What the browser may load and do on the page: its own script and style, calls to this
/// daemon, nothing inline, nothing from elsewhere, and never inside another site's frame
/// (the pause button must not be clickable through a disguise).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/page.js`: the page's script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/page.css`: the page's style.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for (name, text) in [
            ("index.html", INDEX),
            ("page.js", SCRIPT),
            ("page.css", STYLE),
        ] {
            // The SVG namespace is a name, not an address that is loaded.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for reference in ["http://", "https://", "//cdn", "url("] {
                assert!(!text.contains(reference), "{name} refers to {reference}");
            }
        }
        assert!(INDEX.contains("src=\"/ui/page.js\""));
        assert!(INDEX.contains("href=\"/ui/page.css\""));
        // Inline script would be refused by the policy: the page has none.
        assert!(!INDEX.contains("<script>"));
        assert!(!INDEX.contains("style=\""));
    }
}
