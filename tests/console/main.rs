//! The web console (SPEC section 11, issue #12) end to end: real headless
//! Chromium (Debian's `chromium`, driven over the DevTools protocol, fake
//! camera and microphone) against real brokers on loopback ports, acting
//! through the page as a person would (typing into fields, clicking
//! buttons). Two pages on two instances sharing a real Redis talk, see each
//! other and resume after a dropped socket; a page records the canvas and
//! the fake camera with real MediaRecorder timeslice chunks, and the merged
//! file it plays is checked with ffprobe and ffmpeg; the page's CSP is seen
//! refusing inline code and other origins. Plus the HTTP side: headers,
//! content types, and the switch that turns the console off.
//!
//! Chromium missing is a failure with the install command, never a skip.
//! Screenshots go to `target/console-artifacts/`.

/// Headless Chromium over the DevTools protocol.
#[path = "../harness/browser.rs"]
mod browser;
/// A recording app (its own folders, an API key) and its calls.
#[path = "../recordings/client.rs"]
#[allow(dead_code)]
mod client;
/// Real Redis processes; brokers started in-process.
#[path = "../harness/mod.rs"]
mod harness;
/// Test apps on each backend.
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
/// ffprobe and ffmpeg checks on the merged files.
#[path = "../harness/media.rs"]
mod media;

mod http;
mod policy;
mod recording;
mod rooms;
mod ui;
