//! The web console (SPEC section 11): a page for trying the broker in a
//! browser — issue a token, join a room, record and play a recording.
//!
//! Why it looks like this:
//! - The assets are plain files under `assets/` (HTML, CSS, and the script
//!   as a few ES modules without a framework, which browsers load as they
//!   are), compiled in with `include_str!`, so the binary serves the
//!   console from any directory and nobody needs Node or a build step to
//!   run, read or change it. [`ASSETS`] is the one table of them: the
//!   routes are mounted and documented from it.
//! - Nothing comes from elsewhere (no CDN), so the page can carry a
//!   Content-Security-Policy that allows only the broker's own origin
//!   ([`CSP`]); the page has no inline script or style for the same reason.
//! - `console.enabled` switches it off (production's default): the routes
//!   stay mounted, so the served route list does not depend on settings,
//!   and answer 404 `not_found` as an unknown path would.
//!
//! `routes::console` serves these; `tests/console` drives them in Chromium.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use crate::config::ConsoleSettings;

/// The policy on every console answer: scripts, styles, connections
/// (`'self'` covers same-origin `ws:`/`wss:` in CSP 3) and media from the
/// broker's own origin only; `blob:` for the camera preview and `data:`
/// images for the canvas; no plugins, no framing, no `<base>`.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Whether the console is served (app data, from `console.enabled`).
#[derive(Debug, Clone, Copy)]
pub struct Console {
    pub enabled: bool,
}

impl From<&ConsoleSettings> for Console {
    fn from(settings: &ConsoleSettings) -> Self {
        Self {
            enabled: settings.enabled,
        }
    }
}

/// One embedded file of the console.
#[derive(Debug)]
pub struct Asset {
    /// A short name (`page`, `main`, `room`, ...), e.g. for the API document.
    pub name: &'static str,
    /// Where it is served.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

impl Asset {
    const fn new(
        name: &'static str,
        path: &'static str,
        kind: &'static str,
        body: &'static str,
    ) -> Self {
        Self {
            name,
            path,
            content_type: kind,
            body,
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The page, its scripts (`console.js` imports the others), its style sheet
/// and its icon.
#[rustfmt::skip]
pub static ASSETS: [Asset; 8] = [
    Asset::new("page", "/", HTML, include_str!("assets/index.html")),
    Asset::new("main", "/console/console.js", JS, include_str!("assets/console.js")),
    Asset::new("room", "/console/room.js", JS, include_str!("assets/room.js")),
    Asset::new("recording", "/console/recording.js", JS, include_str!("assets/recording.js")),
    Asset::new("clock", "/console/clock.js", JS, include_str!("assets/clock.js")),
    Asset::new("common", "/console/common.js", JS, include_str!("assets/common.js")),
    Asset::new("style", "/console/console.css", CSS, include_str!("assets/console.css")),
    Asset::new("icon", "/console/favicon.svg", SVG, include_str!("assets/favicon.svg")),
];

/// The ETag of each asset (a digest of its content), computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

impl Asset {
    /// A strong validator: changes whenever the embedded content does.
    pub fn etag(&self) -> &'static str {
        let index = ASSETS.iter().position(|a| a.path == self.path);
        index
            .and_then(|i| ETAGS.get(i))
            .map_or("\"\"", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_own_etag_and_no_inline_code() {
        let tags: std::collections::BTreeSet<&str> = ASSETS.iter().map(Asset::etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
        let page = ASSETS[0].body;
        // The CSP forbids inline scripts, styles and handlers.
        for inline in ["<script>", "<style", " style=", " onclick=", "javascript:"] {
            assert!(!page.contains(inline), "inline code in the page: {inline}");
        }
        // Each file is linked by the page or imported by a script.
        let everything: String = ASSETS.iter().map(|a| a.body).collect();
        for asset in &ASSETS[1..] {
            let file = asset.path.rsplit('/').next().unwrap_or_default();
            let imported = everything.contains(&format!("from './{file}'"));
            assert!(
                page.contains(asset.path) || imported,
                "{} unused",
                asset.path
            );
        }
    }
}
