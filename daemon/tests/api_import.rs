//! The drop folder against a real store: good NDJSON and CSV files are
//! ingested whole, a malformed file is moved to failed/ with the line in
//! its .error file and nothing stored, a half-written file is not read
//! until it is complete, résumé files attach to their contact.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::eventually;
use orgsync_daemon::import::{ImportOptions, Importer};
use orgsync_daemon::store::Store;
use orgsync_protocol::model::{Kind, ObjectId, Value};
use tokio::sync::oneshot;

struct Folder {
    _dir: tempfile::TempDir,
    import: PathBuf,
    store: Store,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(prefill: impl FnOnce(&Path)) -> Folder {
    start_with(Duration::from_millis(300), prefill).await
}

async fn start_with(settle: Duration, prefill: impl FnOnce(&Path)) -> Folder {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 4 << 20).unwrap();
    let import = dir.path().join("import");
    std::fs::create_dir_all(&import).unwrap();
    prefill(&import);
    let importer = Importer::new(store.clone(), &import).with_options(ImportOptions {
        settle,
        poll: Duration::from_millis(25),
        ..ImportOptions::default()
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        importer
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Folder {
        _dir: dir,
        import,
        store,
        stop,
        task,
    }
}

impl Folder {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    /// Waits until `name` has been moved to `done/` or `failed/`; returns which.
    async fn outcome(&self, name: &str) -> &'static str {
        let done = self.import.join("done").join(name);
        let failed = self.import.join("failed").join(name);
        eventually(
            &format!("{name} to be processed"),
            Duration::from_secs(20),
            || {
                let (d, f) = (done.exists(), failed.exists());
                async move {
                    if d {
                        Some("done")
                    } else if f {
                        Some("failed")
                    } else {
                        None
                    }
                }
            },
        )
        .await
    }

    fn error_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.import.join("failed").join(format!("{name}.error")))
            .expect(".error file")
    }

    fn count(&self, kind: Kind) -> usize {
        self.store.list(Some(kind), None, 10_000).unwrap().len()
    }
}

/// Writes a file under a temporary name and renames it into place.
fn drop_file(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_ndjson_and_csv_are_ingested_whole() {
    let f = start(|_| {}).await;
    let org = ObjectId::new_v7(1_700_000_000_000);
    let ndjson = format!(
        "{{\"kind\":\"organization\",\"id\":\"{org}\",\"fields\":{{\"name\":\"Acme\",\"category\":\"school\"}},\"custom\":{{\"seats\":40}}}}\n\
         \n\
         {{\"kind\":\"flag\",\"id\":\"{flag}\",\"fields\":{{\"name\":\"vip\"}}}}\n\
         {{\"kind\":\"contact\",\"fields\":{{\"first_name\":\"Ada\",\"organization\":\"{org}\"}},\"flags\":[\"{flag}\"]}}\n",
        flag = ObjectId::new_v7(1_700_000_000_001),
    );
    drop_file(&f.import, "batch.ndjson", ndjson.as_bytes());
    assert_eq!(f.outcome("batch.ndjson").await, "done");
    assert_eq!(f.count(Kind::Organization), 1);
    assert_eq!(f.count(Kind::Flag), 1);
    assert_eq!(f.count(Kind::Contact), 1);
    let acme = f.store.get(org).unwrap().unwrap();
    assert_eq!(acme.get_std("name"), Some(&Value::Text("Acme".into())));

    let csv = "first_name,last_name,email,custom.level,organization\n\
               Grace,Hopper,grace@example.org,senior,ORG\n\
               \"Alan, M.\",Turing,,junior,\n"
        .replace("ORG", &org.to_string());
    drop_file(&f.import, "contacts.csv", csv.as_bytes());
    assert_eq!(f.outcome("contacts.csv").await, "done");
    assert_eq!(f.count(Kind::Contact), 3);
    let names: Vec<_> = f
        .store
        .list(Some(Kind::Contact), None, 100)
        .unwrap()
        .into_iter()
        .filter_map(|o| o.get_std("first_name").cloned())
        .collect();
    assert!(names.contains(&Value::Text("Alan, M.".into())));

    // The same file name again: kept side by side in done/.
    drop_file(
        &f.import,
        "transaction-2024.csv",
        b"type,date,amount\nhire,2024-02-29,12.5\n",
    );
    assert_eq!(f.outcome("transaction-2024.csv").await, "done");
    assert_eq!(f.count(Kind::Transaction), 1);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_fail_with_the_line_and_store_nothing() {
    let f = start(|_| {}).await;
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "bad-type.ndjson",
            b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Ok\"}}\n{\"kind\":\"transaction\",\"fields\":{\"date\":\"yesterday\"}}\n".to_vec(),
            "line 2: field \"date\"",
        ),
        (
            "not-json.ndjson",
            b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Ok\"}}\n\n{\"kind\": contact}\n".to_vec(),
            "line 3, column",
        ),
        (
            "utf8.ndjson",
            b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Ok\"}}\n{\"kind\":\"contact\",\"fields\":{\"first_name\":\"\xff\"}}\n".to_vec(),
            "line 2, column 43: invalid UTF-8",
        ),
        (
            "huge.ndjson",
            {
                let mut v = b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Ok\"}}\n".to_vec();
                v.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
                v
            },
            "line 2: line longer than the limit",
        ),
        (
            "contacts-cols.csv",
            b"first_name,email\nAda,ada@example.org\nBob,bob@example.org,extra\n".to_vec(),
            "line 3: this row has 3 cells but the header has 2",
        ),
        (
            "transactions.csv",
            b"type,date,amount\nhire,2024-01-01,10\nfire,2024-01-02,ten\n".to_vec(),
            "line 3, column 3: field \"amount\"",
        ),
        (
            "export.csv",
            b"first_name\nAda\n".to_vec(),
            "line 1: cannot tell the kind",
        ),
    ];
    for (name, content, needle) in &cases {
        drop_file(&f.import, name, content);
        assert_eq!(f.outcome(name).await, "failed", "{name}");
        let err = f.error_of(name);
        assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
    }
    assert_eq!(
        f.store.log_head(),
        0,
        "nothing from any failed file is stored"
    );
    assert!(f.store.list(None, None, 10).unwrap().is_empty());
    // Unsupported files fail too, and the folder keeps working afterwards.
    drop_file(&f.import, "notes.xyz", b"hello");
    assert_eq!(f.outcome("notes.xyz").await, "failed");
    assert!(f.error_of("notes.xyz").contains("unsupported file"));
    drop_file(&f.import, "flags.csv", b"name\nvip\n");
    assert_eq!(f.outcome("flags.csv").await, "done");
    assert_eq!(f.store.log_head(), 1);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_file_is_not_read_until_complete() {
    // A settle period far above the 60 ms between writes, so that a slow
    // test machine does not make the file look complete early.
    let f = start_with(Duration::from_millis(1500), |_| {}).await;
    let path = f.import.join("slow.ndjson");
    let mut file = std::fs::File::create(&path).unwrap();
    // Write a record in pieces, every 60 ms for about a second: the file
    // keeps changing for longer than the settle period, and a
    // read at any point before the end would fail on a cut-off line.
    let line = b"{\"kind\":\"contact\",\"fields\":{\"first_name\":\"Slow\",\"notes\":\"written in pieces\"}}\n";
    let mut ticker = tokio::time::interval(Duration::from_millis(60));
    for chunk in line.repeat(2).chunks(10) {
        ticker.tick().await;
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        assert!(path.exists(), "not picked up while being written");
        assert_eq!(f.store.log_head(), 0);
    }
    drop(file);
    assert_eq!(f.outcome("slow.ndjson").await, "done");
    assert_eq!(f.count(Kind::Contact), 2);
    // Temporary names are never read.
    std::fs::write(f.import.join("x.ndjson.part"), b"{").unwrap();
    std::fs::write(f.import.join(".hidden.ndjson"), b"{").unwrap();
    drop_file(
        &f.import,
        "marker.ndjson",
        b"{\"kind\":\"flag\",\"fields\":{\"name\":\"m\"}}\n",
    );
    assert_eq!(f.outcome("marker.ndjson").await, "done");
    assert!(f.import.join("x.ndjson.part").exists());
    assert!(f.import.join(".hidden.ndjson").exists());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_at_start_and_resumes() {
    let contact = ObjectId::new_v7(1_700_000_000_000);
    let early = format!(
        "{{\"kind\":\"contact\",\"id\":\"{contact}\",\"fields\":{{\"first_name\":\"Ada\"}}}}\n"
    );
    let f = start(|dir| std::fs::write(dir.join("early.ndjson"), &early).unwrap()).await;
    assert_eq!(f.outcome("early.ndjson").await, "done");
    // A résumé named after the contact.
    let name = format!("{contact}.pdf");
    drop_file(&f.import, &name, b"%PDF-1.4 resume");
    assert_eq!(f.outcome(&name).await, "done");
    let resumes = f.store.list(Some(Kind::Resume), None, 10).unwrap();
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0].get_std("contact"), Some(&Value::Ref(contact)));
    assert_eq!(
        resumes[0].get_std("hash"),
        Some(&Value::Hash(*blake3::hash(b"%PDF-1.4 resume").as_bytes()))
    );
    // A résumé for a contact that does not exist fails.
    let stranger = format!("{}.pdf", ObjectId::new_v7(1_700_000_000_005));
    drop_file(&f.import, &stranger, b"%PDF");
    assert_eq!(f.outcome(&stranger).await, "failed");
    assert!(f.error_of(&stranger).contains("no contact"));
    // Re-importing a record with an id updates instead of duplicating.
    drop_file(
        &f.import,
        "again.ndjson",
        format!("{{\"kind\":\"contact\",\"id\":\"{contact}\",\"fields\":{{\"email\":\"ada@example.org\"}}}}\n").as_bytes(),
    );
    assert_eq!(f.outcome("again.ndjson").await, "done");
    assert_eq!(f.count(Kind::Contact), 1);
    let obj = f.store.get(contact).unwrap().unwrap();
    assert_eq!(obj.get_std("first_name"), Some(&Value::Text("Ada".into())));
    f.stop().await;
}
