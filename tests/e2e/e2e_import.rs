//! End-to-end: the drop folder of a running `orgsyncd`. A good file is
//! ingested and its records reach the partner; a malformed file is moved to
//! `failed/` with the line named in its `.error` file and none of its
//! records stored; a file still being written is not read before it is
//! complete, then ingested whole.

use crate::support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{contacts_ndjson, custom_values, Instance};

fn count(values: &[String], want: &str) -> usize {
    values.iter().filter(|v| *v == want).count()
}

#[test]
fn drop_folder_good_malformed_and_half_written_files() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let import = a.import_dir();

    // A slow writer: half.ndjson gets two complete records and half of a
    // third, then keeps growing inside that record until told to finish.
    let half_path = import.join("half.ndjson");
    let mut half = std::fs::File::create(&half_path).unwrap();
    half.write_all(&contacts_ndjson("half", 0, 2)).unwrap();
    half.write_all(
        br#"{"kind":"contact","custom":{"batch":"half","n":"2"},"fields":{"first_name":"Slow"#,
    )
    .unwrap();
    half.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut half = half.try_clone().unwrap();
        std::thread::spawn(move || {
            // Not synchronisation: a writer that takes its time.
            while !stop.load(Ordering::SeqCst) {
                half.write_all(b"w").unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // A good file with several kinds and custom fields.
    let mut good = contacts_ndjson("good", 0, 100);
    for line in [
        json!({"kind": "organization", "fields": {"name": "Good Org", "city": "Oslo"}, "custom": {"batch": "good", "tier": 2}}),
        json!({"kind": "transaction", "fields": {"type": "hire", "date": "2024-03-01", "amount": 10.5}, "custom": {"batch": "good"}}),
    ] {
        good.extend_from_slice(format!("{line}\n").as_bytes());
    }
    a.drop_file("good.ndjson", &good);
    // A malformed file: valid lines around a broken line 4.
    let mut bad = contacts_ndjson("bad", 0, 3);
    bad.extend_from_slice(b"{\"kind\":\"contact\",\"fields\":{\"first_name\":}}\n");
    bad.extend_from_slice(&contacts_ndjson("bad", 3, 1));
    a.drop_file("bad.ndjson", &bad);

    assert_eq!(
        a.import_outcome("good.ndjson", Duration::from_secs(60)),
        "done"
    );
    assert_eq!(
        a.import_outcome("bad.ndjson", Duration::from_secs(60)),
        "failed"
    );
    let reason = std::fs::read_to_string(import.join("failed").join("bad.ndjson.error"))
        .expect("bad.ndjson.error");
    assert!(
        reason.contains("line 4"),
        "the .error file names the line: {reason:?}"
    );

    // The half-written file is still waiting, untouched.
    assert!(
        half_path.exists(),
        "half.ndjson was moved while being written"
    );
    assert!(!import.join("done").join("half.ndjson").exists());
    assert!(!import.join("failed").join("half.ndjson").exists());
    let batches = custom_values(&a.objects(), "batch");
    assert_eq!(
        count(&batches, "half"),
        0,
        "records of the half-written file were read early"
    );

    // The writer finishes the record and adds one more.
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    half.write_all(b"\"}}\n").unwrap();
    half.write_all(&contacts_ndjson("half", 3, 1)).unwrap();
    drop(half);
    assert_eq!(
        a.import_outcome("half.ndjson", Duration::from_secs(60)),
        "done"
    );

    let batches = custom_values(&a.objects(), "batch");
    assert_eq!(count(&batches, "good"), 102);
    assert_eq!(count(&batches, "half"), 4);
    assert_eq!(
        count(&batches, "bad"),
        0,
        "a record of the malformed file was stored"
    );

    // The good records reach the partner.
    a.wait_synced(Duration::from_secs(60));
    let on_b = b.objects();
    let batches = custom_values(&on_b, "batch");
    assert_eq!(count(&batches, "good"), 102);
    assert_eq!(count(&batches, "half"), 4);
    assert_eq!(count(&batches, "bad"), 0);
    assert_eq!(b.digest(), a.digest());
    let slow = on_b
        .iter()
        .find(|o| o["custom"]["n"] == "2" && o["custom"]["batch"] == "half")
        .expect("the slow record");
    assert!(
        slow["fields"]["first_name"]
            .as_str()
            .unwrap()
            .starts_with("Sloww"),
        "{slow}"
    );
    a.stop();
    b.stop();
}
