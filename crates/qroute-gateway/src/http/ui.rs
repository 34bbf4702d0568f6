//! `/ui`: the web console. Static files embedded in the binary (nothing
//! from a CDN; it works offline), served with a strict
//! `content-security-policy` (no inline script or style, no other origin).
//! The page shell is public (`auth::scope`); everything it shows comes from
//! the authenticated API, called by the page with a bearer token it got from
//! `POST /v1/auth/login`. The sources and why they are built this way:
//! `crates/qroute-gateway/ui/README.md`.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::errors::error_response;

/// What the console's answers may load and do: its own files only, images
/// as `data:` URLs too (uPlot's legend markers), the API on this origin, and
/// never inside a frame.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the console: (name under `/ui/`, content type, bytes).
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("../../ui/index.html")),
    ("app.js", JS, include_str!("../../ui/app.js")),
    ("app.css", CSS, include_str!("../../ui/app.css")),
    ("uplot.js", JS, include_str!("../../ui/vendor/uPlot.iife.min.js")),
    ("uplot.css", CSS, include_str!("../../ui/vendor/uPlot.min.css")),
];

/// `GET /ui` and `GET /ui/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{asset}`: one file of the console; the JSON 404 for any other name.
pub async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file in the console; open /ui",
        );
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_their_type_and_the_policy() {
        for (name, ct, _) in ASSETS {
            let r = serve(name);
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            assert_eq!(r.headers()["content-type"], *ct, "{name}");
            assert_eq!(r.headers()["cache-control"], "no-cache");
            assert_eq!(r.headers()["content-security-policy"], CSP);
        }
        let r = serve("../Cargo.toml");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }

    /// The page loads nothing from elsewhere and has no inline script or
    /// style, which the policy would block.
    #[test]
    fn the_page_is_self_contained() {
        let html = ASSETS[0].2;
        for bad in ["http://", "https://", "<style", " style=", "onclick=", "onload="] {
            assert!(!html.contains(bad), "index.html contains {bad:?}");
        }
        assert!(!html.contains("<script>"), "an inline script");
        for (name, _, body) in ASSETS {
            if name.starts_with("app.") {
                assert!(
                    !body.contains("https://") && !body.contains("http://"),
                    "{name} names another origin"
                );
            }
        }
    }
}
