//! What a person does on the console, as steps the tests share: open it,
//! issue a token, join, send, read the lists. Each step acts through the
//! page's fields and buttons and waits (bounded) for the page to show the
//! result; `window.rtcConsole` is only read.

use std::path::PathBuf;

use crate::browser::{Browser, Page};
use crate::helpers::TestApp;

/// Where screenshots are kept: `target/console-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().map_or_else(|| tmp.clone(), PathBuf::from);
    target.join("console-artifacts")
}

/// A new tab showing `app`'s console, loaded with its script.
pub async fn open(browser: &Browser, app: &TestApp) -> Page {
    let page = browser.new_page().await;
    page.goto(&app.url("/")).await;
    page.wait_for(
        "the console's script and the broker's health line",
        "window.rtcConsole !== undefined && \
         document.getElementById('broker-info').textContent.startsWith('instance')",
    )
    .await;
    page
}

/// The token form: what a person types into it.
pub struct TokenForm<'a> {
    pub api_key: &'a str,
    pub session_id: &'a str,
    pub identity: &'a str,
    pub room: &'a str,
    pub ttl: &'a str,
}

/// Fills the token form, clicks "Issue token", waits for the token.
pub async fn issue_token(page: &Page, form: &TokenForm<'_>) {
    page.fill("api-key", form.api_key).await;
    page.fill("session-id", form.session_id).await;
    page.fill("identity", form.identity).await;
    page.fill("room", form.room).await;
    page.fill("ttl", form.ttl).await;
    page.click("issue-token").await;
    let state = data_state(page, "token-output", &["none", "pending"]).await;
    let shown = page.text("token-output").await;
    assert_eq!(state, "issued", "no token: {shown}");
    assert!(shown.contains(form.identity), "{shown}");
}

/// Clicks "Join" and waits for the welcome.
pub async fn join(page: &Page) {
    page.click("join-room").await;
    let state = data_state(page, "room-status", &["idle", "connecting"]).await;
    let shown = page.text("room-status").await;
    assert_eq!(state, "joined", "not joined: {shown}");
}

/// Waits until the state named by `expression` has moved past every one of
/// `passing` (states on the way); returns where it ended.
pub async fn settled(page: &Page, what: &str, expression: &str, passing: &[&str]) -> String {
    let passing = serde_json::to_string(passing).unwrap_or_default();
    let settled = format!("(s => {passing}.includes(s) ? null : s)({expression})");
    let state = page.wait_for(what, &settled).await;
    state.as_str().unwrap_or_default().to_string()
}

/// [`settled`] for the `data-state` of the element with this id.
async fn data_state(page: &Page, id: &str, passing: &[&str]) -> String {
    let what = format!("#{id} to settle");
    let expression = format!("document.getElementById({id:?}).dataset.state");
    settled(page, &what, &expression, passing).await
}

/// Types a message and clicks "Send".
pub async fn send(page: &Page, text: &str) {
    page.fill("message-input", text).await;
    page.click("send-message").await;
}

/// Waits until `#presence` lists exactly `members` (sorted).
pub async fn wait_presence(page: &Page, members: &[&str]) {
    let expected = serde_json::to_string(members).unwrap_or_default();
    page.wait_for(
        &format!("presence {expected}"),
        &format!(
            "JSON.stringify([...document.querySelectorAll('#presence li')]\
               .map(li => li.dataset.member)) === {expected:?}"
        ),
    )
    .await;
}

/// One line of `#messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub from: String,
    pub id: u64,
    pub text: String,
}

/// Every message `#messages` shows, in order.
pub async fn messages(page: &Page) -> Vec<Line> {
    let rows = page
        .eval(
            "[...document.querySelectorAll('#messages li[data-id]')].map(li => \
             [li.dataset.from, li.dataset.id, li.querySelector('.text').textContent])",
        )
        .await;
    let rows = rows.as_array().cloned().unwrap_or_default();
    rows.iter()
        .map(|row| Line {
            from: row[0].as_str().unwrap_or_default().to_string(),
            id: row[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
            text: row[2].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Waits until `#messages` shows `text`; returns that line.
pub async fn wait_message(page: &Page, text: &str) -> Line {
    page.wait_for(
        &format!("the message {text:?}"),
        &format!(
            "[...document.querySelectorAll('#messages li[data-id] .text')]\
               .some(e => e.textContent === {text:?})"
        ),
    )
    .await;
    let lines = messages(page).await;
    lines
        .into_iter()
        .find(|l| l.text == text)
        .unwrap_or_else(|| panic!("{text:?} vanished"))
}

/// The page ran without a script error, a failed load or a CSP refusal
/// (each is an exception, a `console.error` or a log entry at `error`).
pub fn assert_clean_log(page: &Page) {
    let log = page.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.starts_with("exception")
                || l.starts_with("console.error")
                || l.starts_with("log error")
        })
        .collect();
    assert!(bad.is_empty(), "page errors:\n{}", bad.join("\n"));
}
