//! Two console pages in one room, each on its own broker instance, the
//! instances sharing a real Redis (single node): presence, messages both
//! ways, and a page whose socket drops resuming with `since`/`epoch` and
//! showing the message it missed exactly once.

use std::time::Duration;

use crate::browser::Browser;
use crate::helpers::{spawn_app_with, Backend};
use crate::ui::{self, TokenForm};

const API_KEY: &str = "console-rooms-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_on_two_instances_talk_see_each_other_and_resume() {
    let first = spawn_app_with(Backend::Single, &[("API_KEYS", API_KEY)]).await;
    let second = first.sibling().await;
    let browser = Browser::launch().await;
    let alice = ui::open(&browser, &first).await;
    let bob = ui::open(&browser, &second).await;
    let room = format!(
        "console-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        let session = format!("{room}-{who}");
        let form = TokenForm {
            api_key: API_KEY,
            session_id: &session,
            identity: who,
            room: &room,
            ttl: "600",
        };
        ui::issue_token(page, &form).await;
        ui::join(page).await;
    }
    ui::wait_presence(&alice, &["alice", "bob"]).await;
    ui::wait_presence(&bob, &["alice", "bob"]).await;

    ui::send(&alice, "hello from alice").await;
    let line = ui::wait_message(&bob, "hello from alice").await;
    assert_eq!(line.from, "alice");
    ui::wait_message(&alice, "hello from alice").await; // her own, echoed
    ui::send(&bob, "hi alice").await;
    let seen_by_alice = ui::wait_message(&alice, "hi alice").await;
    assert_eq!(seen_by_alice.from, "bob");

    // Alice's socket drops; Bob writes meanwhile. The button's 3 s hold is
    // stretched to 10 s so a slow browser still sends within it; the
    // resume below needs no more than the socket coming back.
    let last_seen = alice.eval("rtcConsole.room.lastId").await;
    assert_eq!(last_seen, seen_by_alice.id);
    alice
        .eval("document.getElementById('drop-connection').dataset.outageMs = '10000'")
        .await;
    alice.click("drop-connection").await;
    alice
        .wait_for(
            "alice to notice the drop",
            "rtcConsole.room.state === 'reconnecting'",
        )
        .await;
    ui::send(&bob, "sent while alice was away").await;
    let missed = ui::wait_message(&bob, "sent while alice was away").await;
    assert_eq!(
        alice.eval("rtcConsole.room.state").await,
        "reconnecting",
        "alice reconnected before the message was published: nothing to resume"
    );

    alice
        .wait_for("alice to resume", "rtcConsole.room.state === 'resumed'")
        .await;
    let status = alice.text("room-status").await;
    assert_eq!(status, format!("Reconnected, resumed from id {last_seen}."));
    let got = ui::wait_message(&alice, "sent while alice was away").await;
    assert_eq!(got, missed, "the same message, same id");
    // Nothing arrives twice, even a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = ui::messages(&alice).await;
    let copies = lines.iter().filter(|l| l.id == missed.id).count();
    assert_eq!(copies, 1, "{lines:?}");
    let state = alice.eval("rtcConsole.room").await;
    assert_eq!(state["duplicates"], 0, "{state}");
    assert_eq!(state["recovered"], true, "{state}");
    assert_eq!(state["reconnects"], 1, "{state}");
    ui::wait_presence(&alice, &["alice", "bob"]).await;

    // Still one conversation after the resume.
    ui::send(&alice, "back again").await;
    ui::wait_message(&bob, "back again").await;
    bob.click("leave-room").await;
    ui::wait_presence(&alice, &["alice"]).await;
    ui::assert_clean_log(&alice);
    ui::assert_clean_log(&bob);
}

/// A console page keeps its room through its token's expiry by sending
/// `refresh` with a fresh token, and says why when the broker removes it
/// (a kick: 4004), without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_refreshes_its_token_and_shows_a_kick() {
    let app = spawn_app_with(
        Backend::Memory,
        &[
            ("API_KEYS", API_KEY),
            ("BROKER__TOKENS__LEEWAY_SECONDS", "0"),
        ],
    )
    .await;
    let browser = Browser::launch().await;
    let page = ui::open(&browser, &app).await;
    let room = format!(
        "refresh-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let form = TokenForm {
        api_key: API_KEY,
        session_id: &room,
        identity: "carol",
        room: &room,
        ttl: "3",
    };
    ui::issue_token(&page, &form).await;
    ui::join(&page).await;
    let first = page.eval("rtcConsole.room.expiresAt").await;
    assert!(first.as_u64().is_some(), "{first}");
    // Past two lifetimes of a 3 s token, still in the room, refreshed.
    page.wait_for(
        "two refreshes",
        "rtcConsole.room.refreshes >= 2 && rtcConsole.room.state === 'joined'",
    )
    .await;
    let state = page.eval("rtcConsole.room").await;
    assert!(state["expiresAt"].as_u64() > first.as_u64(), "{state}");
    assert_eq!(state["reconnects"], 0, "{state}");
    assert!(state["closedBecause"].is_null(), "{state}");

    let res = app
        .client
        .delete(app.url(&format!("/api/rooms/{room}/members/carol")))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    page.wait_for("the kick to show", "rtcConsole.room.state === 'ended'")
        .await;
    let status = page.text("room-status").await;
    assert!(
        status.contains("4004") && status.contains("kicked"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(page.eval("rtcConsole.room.state").await, "ended");
    assert_eq!(page.eval("rtcConsole.room.closedBecause.code").await, 4004);
    ui::assert_clean_log(&page);
}
