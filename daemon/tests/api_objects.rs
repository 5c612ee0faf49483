//! The local API over a real Unix socket and a real store: CRUD of every
//! kind, validation errors, 404s, résumés, events, metrics.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::TestServer;
use orgsync_daemon::client::{ClientError, Method};
use serde_json::{json, Value as Json};

fn api_err(e: ClientError) -> (u16, String, Option<String>) {
    match e {
        ClientError::Api {
            status,
            message,
            field,
        } => (status, message, field),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// POSTs `body` over a raw connection, writing and reading concurrently (the
/// server may answer before it has read the whole body), and returns the
/// status and the response body.
async fn raw_post(socket: &std::path::Path, path: &str, body: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The server may close before reading everything: a broken pipe is expected.
        let _ = wr.write_all(request.as_bytes()).await;
    });
    let mut response = Vec::new();
    let _ = rd.read_to_end(&mut response).await;
    writer.await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn id_of(obj: &Json) -> String {
    obj["id"].as_str().expect("object has an id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_of_every_kind_with_custom_fields() {
    let srv = TestServer::start().await;
    let c = &srv.client;

    let flag = c
        .create(&json!({"kind": "flag", "fields": {"name": "shared-with-acme", "color": "red"}}))
        .await
        .unwrap();
    let org = c
        .create(&json!({"kind": "organization",
            "fields": {"name": "Acme", "category": "school", "city": "Lyon"},
            "custom": {"students": 1200}}))
        .await
        .unwrap();
    assert_eq!(org["custom"]["students"], json!(1200));
    let contact = c
        .create(&json!({"kind": "contact",
            "fields": {"first_name": "Ada", "last_name": "Lovelace", "organization": id_of(&org)},
            "custom": {"shoe_size": 38.5, "vip": true, "nickname": "Countess"},
            "flags": [id_of(&flag)]}))
        .await
        .unwrap();
    assert_eq!(contact["kind"], "contact");
    assert_eq!(contact["fields"]["first_name"], "Ada");
    assert_eq!(contact["fields"]["organization"], json!(id_of(&org)));
    assert_eq!(contact["custom"]["shoe_size"], json!(38.5));
    assert_eq!(contact["custom"]["vip"], json!(true));
    assert_eq!(contact["flags"], json!([id_of(&flag)]));
    let tx = c
        .create(&json!({"kind": "transaction", "fields": {
            "type": "hire", "date": "2024-02-29", "amount": "1500.50", "currency": "EUR",
            "contact": id_of(&contact), "organization": id_of(&org)}}))
        .await
        .unwrap();
    assert_eq!(tx["fields"]["date"], "2024-02-29");
    assert_eq!(tx["fields"]["amount"], json!(1500.5));

    // Read back.
    let got = c.get(&id_of(&contact)).await.unwrap();
    assert_eq!(got, contact);

    // Update: set, clear, custom, flags.
    let updated = c
        .update(
            &id_of(&contact),
            &json!({
            "fields": {"email": "ada@example.org", "last_name": null},
            "custom": {"vip": null, "level": "senior"},
            "remove_flags": [id_of(&flag)]}),
        )
        .await
        .unwrap();
    assert_eq!(updated["fields"]["email"], "ada@example.org");
    assert!(updated["fields"].get("last_name").is_none());
    assert!(updated["custom"].get("vip").is_none());
    assert_eq!(updated["custom"]["level"], "senior");
    assert_eq!(updated["flags"], json!([]));

    // List, by kind and paged.
    let all = c.list_all(None).await.unwrap();
    assert_eq!(all.len(), 4);
    let contacts = c.list_all(Some("contact")).await.unwrap();
    assert_eq!(contacts.len(), 1);
    let page = c.list_page(None, None, 2).await.unwrap();
    assert_eq!(page["objects"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    let page2 = c.list_page(None, Some(&next), 2).await.unwrap();
    assert_eq!(page2["objects"].as_array().unwrap().len(), 2);

    // Delete.
    let del = c.delete(&id_of(&tx)).await.unwrap();
    assert_eq!(del["deleted"], json!(true));
    let (status, msg, _) = api_err(c.get(&id_of(&tx)).await.unwrap_err());
    assert_eq!(status, 404);
    assert!(msg.contains("deleted"), "{msg}");
    assert_eq!(c.list_all(None).await.unwrap().len(), 3);

    // Durable in the store.
    let head = srv.store.log_head();
    assert_eq!(head, 6, "four creates, one update, one delete");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_400_with_the_field_and_write_nothing() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let cases = [
        (
            json!({"kind": "widget", "fields": {"name": "x"}}),
            Some("kind"),
            "unknown kind",
        ),
        (
            json!({"kind": "contact", "fields": {"shoe": "x"}}),
            Some("shoe"),
            "no standard field",
        ),
        (
            json!({"kind": "transaction", "fields": {"date": "31/12/2024"}}),
            Some("date"),
            "not a valid date",
        ),
        (
            json!({"kind": "transaction", "fields": {"amount": true}}),
            Some("amount"),
            "number",
        ),
        (
            json!({"kind": "resume", "fields": {"size": 1.5}}),
            Some("size"),
            "whole number",
        ),
        (
            json!({"kind": "contact", "fields": {"organization": "not-an-id"}}),
            Some("organization"),
            "not a valid ref",
        ),
        (
            json!({"kind": "contact", "fields": {"first_name": "A"}, "flags": ["0190a1b2-0000-7000-8000-000000000000"]}),
            Some("flags"),
            "no flag",
        ),
        (
            json!({"kind": "contact", "fields": {"first_name": "x".repeat(20_000)}}),
            Some("first_name"),
            "longer than the limit",
        ),
        (
            json!({"kind": "contact", "custom": {"tags": ["a"]}}),
            Some("custom.tags"),
            "not a field value",
        ),
        (
            json!({"kind": "contact", "fields": {}}),
            None,
            "at least one field",
        ),
        (
            json!({"kind": "contact", "colour": "red"}),
            None,
            "unknown field",
        ),
        (
            json!({"kind": "contact", "id": "42", "fields": {"first_name": "A"}}),
            Some("id"),
            "not an object id",
        ),
    ];
    for (body, field, needle) in cases {
        let (status, msg, got_field) = api_err(c.create(&body).await.unwrap_err());
        assert_eq!(status, 400, "{body}: {msg}");
        assert_eq!(got_field.as_deref(), field, "{body}: {msg}");
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    // Not JSON at all.
    let (status, msg, _) = api_err(
        c.call(Method::POST, "/v1/objects", Some(&json!("just a string")))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(msg.contains("invalid JSON body"), "{msg}");
    // Oversized body: the client refuses it before sending...
    let big = json!({"kind": "contact", "fields": {"notes": "x".repeat(2 * 1024 * 1024)}});
    let err = c.create(&big).await.unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    // ...and the server answers 413 with a JSON error to a client that sends it anyway.
    let (status, body) =
        raw_post(&srv.path().join("api.sock"), "/v1/objects", big.to_string()).await;
    assert_eq!(status, 413, "{body}");
    let body: Json = serde_json::from_str(&body).expect("JSON error body");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{body}"
    );
    // Bad query parameters.
    let (status, _, field) = api_err(c.list_page(Some("widget"), None, 10).await.unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("kind")));
    let (status, _, field) = api_err(c.list_page(None, Some("zzz"), 10).await.unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("after")));
    let (status, _, field) = api_err(c.list_page(None, None, 0).await.unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("limit")));
    // A PATCH with one bad field writes none of the good ones.
    let obj = c
        .create(&json!({"kind": "contact", "fields": {"first_name": "Ada"}}))
        .await
        .unwrap();
    let head = srv.store.log_head();
    let (status, _, field) = api_err(
        c.update(
            &id_of(&obj),
            &json!({"fields": {"first_name": "Bob", "email": 3}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status, field.as_deref()), (400, Some("email")));
    assert_eq!(
        c.get(&id_of(&obj)).await.unwrap()["fields"]["first_name"],
        "Ada"
    );
    assert_eq!(srv.store.log_head(), head, "nothing written");
    // Changing the kind of an existing object through its id is refused.
    let (status, _, field) = api_err(
        c.create(&json!({"kind": "organization", "id": id_of(&obj), "fields": {"name": "X"}}))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, field.as_deref()), (400, Some("kind")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_404_json() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let missing = "0190a1b2-0000-7000-8000-000000000000";
    for e in [
        c.get(missing).await.unwrap_err(),
        c.update(missing, &json!({"fields": {"name": "x"}}))
            .await
            .unwrap_err(),
        c.delete(missing).await.unwrap_err(),
        c.call(Method::GET, "/v2/nothing", None).await.unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e:?}");
    }
    let (status, _, field) = api_err(c.get("not-an-id").await.unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("id")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_are_stored_by_hash_and_served() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let contact = c
        .create(&json!({"kind": "contact", "fields": {"first_name": "Ada"}}))
        .await
        .unwrap();
    let file = srv.path().join("cv.pdf");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let resume = c.attach_resume(&id_of(&contact), &file).await.unwrap();
    assert_eq!(resume["kind"], "resume");
    assert_eq!(resume["fields"]["file_name"], "cv.pdf");
    assert_eq!(resume["fields"]["media_type"], "application/pdf");
    assert_eq!(resume["fields"]["size"], json!(200_000));
    assert_eq!(
        resume["fields"]["hash"],
        blake3::hash(&content).to_hex().as_str()
    );
    let out = srv.path().join("out.pdf");
    let n = c.download_resume(&id_of(&resume), &out).await.unwrap();
    assert_eq!(n, 200_000);
    assert_eq!(std::fs::read(&out).unwrap(), content);

    // Metadata whose content has not arrived: a clear 404.
    let pending = c
        .create(&json!({"kind": "resume", "fields": {
            "contact": id_of(&contact), "file_name": "x.pdf", "size": 3, "hash": "ab".repeat(32)}}))
        .await
        .unwrap();
    let (status, msg, _) = api_err(
        c.download_resume(&id_of(&pending), &srv.path().join("x.pdf"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 404);
    assert!(msg.contains("still transferring"), "{msg}");
    assert!(!srv.path().join("x.pdf").exists());

    // Bad requests.
    let (status, _, field) = api_err(
        c.attach_resume(
            &id_of(&contact),
            std::path::Path::new("/nonexistent/cv.pdf"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status, field.as_deref()), (400, Some("path")));
    let (status, _, field) = api_err(c.attach_resume(&id_of(&pending), &file).await.unwrap_err());
    assert_eq!((status, field.as_deref()), (400, Some("contact")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_sees_writes_and_replays() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let first = c
        .create(&json!({"kind": "contact", "fields": {"first_name": "Ada"}}))
        .await
        .unwrap();
    let mut live = c.events(None).await.unwrap();
    let mut replay = c.events(Some(0)).await.unwrap();
    let second = c
        .create(&json!({"kind": "organization", "fields": {"name": "Acme"}}))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("live event in time")
        .unwrap()
        .unwrap();
    assert_eq!(ev["id"], json!(id_of(&second)));
    assert_eq!(ev["kind"], "organization");
    assert_eq!(ev["origin"], "local");
    assert_eq!(ev["seq"], json!(2));
    for (seq, obj) in [(1, &first), (2, &second)] {
        let ev = tokio::time::timeout(Duration::from_secs(10), replay.next())
            .await
            .expect("replayed event in time")
            .unwrap()
            .unwrap();
        assert_eq!(ev["seq"], json!(seq));
        assert_eq!(ev["id"], json!(id_of(obj)));
    }
    c.delete(&id_of(&first)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("delete event in time")
        .unwrap()
        .unwrap();
    assert_eq!(ev["deleted"], json!(true));
    // Shutdown ends open streams instead of hanging.
    srv.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match live.next().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("stream ends at shutdown");
    let _ = end;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_partners_and_metrics() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    c.create(&json!({"kind": "contact", "fields": {"first_name": "Ada"}}))
        .await
        .unwrap();
    let status = c.status().await.unwrap();
    assert_eq!(status["log_head"], json!(1));
    assert_eq!(status["org"], "Test Org");
    assert_eq!(status["account"].as_str().unwrap().len(), 63);
    assert_eq!(status["partners"], json!([]));
    assert_eq!(c.partners().await.unwrap()["partners"], json!([]));
    let text = c.get_text("/metrics").await.unwrap();
    assert!(text.contains("orgsync_changes_written_total 1\n"), "{text}");
    assert!(text.contains("# TYPE orgsync_api_requests_total counter"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_private_and_not_stolen() {
    let srv = TestServer::start().await;
    let sock = srv.path().join("api.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second server on the same directory is refused while the first runs.
    let err = orgsync_daemon::api::bind_socket(&sock).await.unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    srv.stop().await;
    assert!(!sock.exists(), "socket removed at shutdown");
    // A stale socket (nobody listening) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let listener = orgsync_daemon::api::bind_socket(&stale)
        .await
        .expect("stale socket replaced");
    drop(listener);
    // A path that is not a socket is never removed.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let err = orgsync_daemon::api::bind_socket(&file).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
