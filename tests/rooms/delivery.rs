//! Join, presence and delivery, within one instance and across two.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::client::{join, Client};
use crate::helpers::{spawn_app, Backend, TestApp};

/// Two instances on the backend's storage (one, for memory).
async fn pair(backend: Backend) -> (TestApp, Option<TestApp>) {
    let a = spawn_app(backend).await;
    let b = match backend {
        Backend::Memory => None,
        _ => Some(a.sibling().await),
    };
    (a, b)
}

fn room_name() -> String {
    format!("room-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn member_ids(welcome: &Value) -> Vec<String> {
    let mut ids: Vec<String> = welcome["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("member id").to_string())
        .collect();
    ids.sort();
    ids
}

async fn join_presence_and_delivery(backend: Backend) {
    let (a, b) = pair(backend).await;
    let b = b.as_ref().unwrap_or(&a);
    let room = room_name();

    let mut alice = join(&a, &room, "alice").await;
    assert_eq!(alice.welcome["room"], room.as_str());
    assert_eq!(alice.welcome["member_id"], "alice");
    assert_eq!(member_ids(&alice.welcome), ["alice"]);
    assert!(alice.welcome["epoch"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert!(alice.welcome["last_id"].is_u64());
    assert!(alice.welcome.get("recovered").is_none(), "no resume asked");

    let mut bob = join(b, &room, "bob").await;
    assert_eq!(member_ids(&bob.welcome), ["alice", "bob"]);
    assert_eq!(bob.welcome["epoch"], alice.welcome["epoch"]);
    let presence = alice.next_of("presence").await;
    assert_eq!(
        presence,
        json!({"type": "presence", "event": "join", "member_id": "bob"})
    );

    // Every publish reaches every member, the sender included, with ids
    // increasing by one within the epoch.
    alice.publish(json!({"text": "hi"})).await;
    let at_alice = alice.next_of("message").await;
    let at_bob = bob.next_of("message").await;
    assert_eq!(at_alice, at_bob);
    assert_eq!(at_alice["from"], "alice");
    assert_eq!(at_alice["room"], room.as_str());
    assert_eq!(at_alice["data"], json!({"text": "hi"}));
    let first = at_alice["id"].as_u64().expect("id");
    bob.publish(json!([1, "two"])).await;
    for client in [&mut alice, &mut bob] {
        let m = client.next_of("message").await;
        assert_eq!(
            (m["from"].clone(), m["data"].clone()),
            (json!("bob"), json!([1, "two"]))
        );
        assert_eq!(m["id"].as_u64(), Some(first + 1));
    }

    // The members endpoint sees both instances.
    let (status, members) = a.get(&format!("/api/rooms/{room}/members")).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(
        members,
        json!({"room": room, "members": [
            {"member_id": "alice", "connections": 1},
            {"member_id": "bob", "connections": 1},
        ]})
    );

    // Back-end publish through the other instance, with and without `from`.
    let (status, body) = b
        .post_json(
            &format!("/api/rooms/{room}/publish"),
            &json!({"data": {"n": 3}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"].as_u64(), Some(first + 2));
    let m = alice.next_of("message").await;
    assert_eq!(
        (m["from"].clone(), m["id"].as_u64()),
        (json!("server"), Some(first + 2))
    );
    let (status, _) = a
        .post_json(
            &format!("/api/rooms/{room}/publish"),
            &json!({"data": 4, "from": "ops"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(bob.next_of("message").await["from"], "server");
    assert_eq!(bob.next_of("message").await["from"], "ops");
    assert_eq!(alice.next_of("message").await["from"], "ops");

    // Application ping.
    alice.send_json(json!({"type": "ping"})).await;
    assert_eq!(alice.next_of("pong").await, json!({"type": "pong"}));

    // Leaving is announced at once, across instances.
    bob.close().await;
    let presence = alice.next_of("presence").await;
    assert_eq!(
        presence,
        json!({"type": "presence", "event": "leave", "member_id": "bob"})
    );
    let (_, members) = b.get(&format!("/api/rooms/{room}/members")).await;
    assert_eq!(
        members["members"],
        json!([{"member_id": "alice", "connections": 1}])
    );

    // Health counts this instance's rooms and connections.
    let (_, health) = a.get("/api/health").await;
    assert_eq!(health["rooms"]["connections"], 1, "{health}");
    assert_eq!(health["rooms"]["rooms"], 1, "{health}");
    alice.close().await;
}

/// Three publishers on each instance send 30 messages each as fast as they
/// can: every member gets all 180 exactly once, each publisher's in order,
/// ids strictly increasing on every connection.
async fn every_member_gets_every_message_once_in_order(backend: Backend) {
    let (a, b) = pair(backend).await;
    let b = b.as_ref().unwrap_or(&a);
    let room = room_name();
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { b };
        clients.push(join(app, &room, &format!("m{i}")).await);
    }
    const EACH: usize = 30;
    let sends = clients.iter_mut().enumerate().map(|(i, c)| async move {
        for k in 0..EACH {
            c.publish(json!({"p": i, "k": k})).await;
        }
    });
    futures_util::future::join_all(sends).await;
    for (n, client) in clients.iter_mut().enumerate() {
        let mut last_id = 0;
        let mut next_k: HashMap<u64, u64> = HashMap::new();
        for _ in 0..EACH * 6 {
            let m = client.next_of("message").await;
            let id = m["id"].as_u64().expect("id");
            assert!(id > last_id, "client {n}: id {id} after {last_id}");
            last_id = id;
            let (p, k) = (
                m["data"]["p"].as_u64().unwrap(),
                m["data"]["k"].as_u64().unwrap(),
            );
            let expected = next_k.entry(p).or_default();
            assert_eq!(k, *expected, "client {n}: publisher {p} out of order");
            *expected += 1;
        }
        assert!(next_k.values().all(|k| *k == EACH as u64), "{next_k:?}");
        client.quiet(std::time::Duration::from_millis(300)).await;
    }
}

crate::on_every_backend!(
    join_presence_and_delivery,
    every_member_gets_every_message_once_in_order,
);

/// Reads frames until both the ack of `reference` and the message echo
/// arrived (in either order); the ack's id and the message.
async fn ack_and_echo(c: &mut Client, reference: &Value) -> (Value, Value) {
    let (mut ack, mut echo) = (None, None);
    while ack.is_none() || echo.is_none() {
        let frame = c.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => {
                assert_eq!(&frame["ref"], reference, "{frame}");
                ack = Some(frame);
            }
            Some("message") => echo = Some(frame),
            Some("error") => panic!("error frame for {reference}: {frame}"),
            _ => {}
        }
    }
    (ack.unwrap_or_default(), echo.unwrap_or_default())
}

/// A publish with a `ref` is answered `ack` with the id every member gets;
/// a refused one with an error frame carrying the same `ref`.
async fn publishes_with_a_ref_are_acknowledged(backend: Backend) {
    let (a, b) = pair(backend).await;
    let room = room_name();
    let mut alice = join(&a, &room, "alice").await;
    let mut bob = join(b.as_ref().unwrap_or(&a), &room, "bob").await;
    for reference in [json!("r-1"), json!(42), json!(-7)] {
        alice
            .publish_ref(json!({"n": reference.clone()}), reference.clone())
            .await;
        let (ack, echo) = ack_and_echo(&mut alice, &reference).await;
        assert_eq!(ack["id"], echo["id"], "{ack} {echo}");
        assert!(ack.get("buffered").is_none(), "{ack}");
        let got = bob.next_of("message").await;
        assert_eq!(got["id"], ack["id"], "{got}");
    }
    // No ref, no ack: only the message.
    alice.publish(json!("plain")).await;
    assert_eq!(alice.next_json().await["type"], "message");
    // A ref that is neither a short string nor an integer.
    for bad in [json!(1.5), json!({"a": 1}), json!("x".repeat(129))] {
        alice.publish_ref(json!(1), bad.clone()).await;
        let error = alice.next_of("error").await;
        assert_eq!(error["error"], "invalid_frame", "{bad}: {error}");
    }
    // Refused for the grants: the error frame names the ref.
    let token =
        crate::client::token(&a, "carol", &room, Some(json!({"can_publish_data": false}))).await;
    let mut carol = crate::client::open(&a, &room, &token).await;
    carol.publish_ref(json!("no"), json!("c-1")).await;
    let error = carol.next_of("error").await;
    assert_eq!(error["error"], "publish_forbidden", "{error}");
    assert_eq!(error["ref"], "c-1", "{error}");
}

crate::on_every_backend!(publishes_with_a_ref_are_acknowledged);
