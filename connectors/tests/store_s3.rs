//! The object store on a real S3-compatible server (`scripts/s3.sh`, started
//! by `scripts/test.sh`; `VIDFLOW_TEST_S3_*` name it): what the serving path
//! and the stages do with it, from async code and from plain threads at once.

use std::sync::Arc;

use vidflow_connectors::store::{OutputStore, StoreConfig, StoreKind};
use vidflow_connectors::ObjectPath;

fn config() -> StoreConfig {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    StoreConfig {
        kind: StoreKind::S3,
        endpoint: var("VIDFLOW_TEST_S3_ENDPOINT", "http://127.0.0.1:8014"),
        bucket: var("VIDFLOW_TEST_S3_BUCKET", "vidflow"),
        prefix: String::new(),
        region: "us-east-1".into(),
        access_key_id: var("VIDFLOW_TEST_S3_ACCESS_KEY_ID", "vidflow-test"),
        secret_access_key: var("VIDFLOW_TEST_S3_SECRET_ACCESS_KEY", "vidflow-test-secret"),
        allow_http: true,
    }
}

fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_through_s3_from_async_and_blocking_callers() {
    let cfg = config();
    let store = Arc::new(OutputStore::open(&cfg, std::path::Path::new("unused")).unwrap());
    let p = prefix();
    let key = ObjectPath::from(format!("{p}/acme/2026-12-06/j1.mp4"));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let stored = match store.put_atomic(&key, body.clone()).await {
        Ok(s) => s,
        Err(e) => panic!(
            "no S3 server at {} ({e}): run through scripts/test.sh or start scripts/s3.sh",
            cfg.endpoint
        ),
    };
    assert_eq!(stored.size, body.len() as u64);
    assert_eq!(store.get(&key).await.unwrap(), body);
    // Capped reads refuse a larger object without reading it.
    assert!(store.get_capped(&key, 1000).await.is_err());
    assert_eq!(
        store.get_capped(&key, 1 << 20).await.unwrap().len(),
        body.len()
    );
    // Missing objects are "not found", not errors of another kind.
    let missing = ObjectPath::from(format!("{p}/acme/none.mp4"));
    assert!(store.get(&missing).await.unwrap_err().is_not_found());
    assert!(!store.exists(&missing).await.unwrap());

    // The stages call the same store from their own threads, while the
    // serving runtime uses it too.
    let mut threads = Vec::new();
    for t in 0..4 {
        let (store, p) = (store.clone(), p.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..5 {
                let k = ObjectPath::from(format!("{p}/checkpoints/acme/j{t}/step-{i:05}.bin"));
                store
                    .put_atomic_blocking(&k, vec![t as u8; 1000 + i])
                    .unwrap();
                assert_eq!(store.get_blocking(&k).unwrap().len(), 1000 + i);
            }
            let listed = store
                .list_blocking(&ObjectPath::from(format!("{p}/checkpoints/acme/j{t}")))
                .unwrap();
            assert_eq!(listed.len(), 5);
            for k in listed.iter().take(3) {
                store.delete_blocking(k).unwrap();
            }
        }));
    }
    for i in 0..20 {
        let k = ObjectPath::from(format!("{p}/jobs/acme/r{i}.json"));
        store.put_atomic(&k, b"{}".to_vec()).await.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let left = store
        .list(&ObjectPath::from(format!("{p}/checkpoints")))
        .await
        .unwrap();
    assert_eq!(left.len(), 8, "{left:?}");
    assert_eq!(
        store
            .list(&ObjectPath::from(format!("{p}/jobs/acme")))
            .await
            .unwrap()
            .len(),
        20
    );
    // Deleting an absent object is not an error.
    store.delete(&missing).await.unwrap();
    // A prefixed store sees only its own keys, at their plain names.
    let mut inner = config();
    inner.prefix = format!("{p}/jobs");
    let scoped = OutputStore::s3(&inner).unwrap();
    assert_eq!(
        scoped.list(&ObjectPath::from("acme")).await.unwrap().len(),
        20
    );
    assert_eq!(
        scoped.get(&ObjectPath::from("acme/r0.json")).await.unwrap(),
        b"{}"
    );
}

#[test]
fn wrong_credentials_and_plain_http_are_refused() {
    let mut cfg = config();
    cfg.secret_access_key = "wrong".into();
    let store = OutputStore::s3(&cfg).unwrap();
    let e = store
        .put_atomic_blocking(&ObjectPath::from("x/y"), vec![1])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("403") || e.to_lowercase().contains("signature") || e.contains("Forbidden"),
        "{e}"
    );
    let mut plain = config();
    plain.allow_http = false;
    let e = OutputStore::s3(&plain).unwrap_err().to_string();
    assert!(e.contains("store.endpoint"), "{e}");
    let mut nobucket = config();
    nobucket.bucket.clear();
    assert!(OutputStore::s3(&nobucket)
        .unwrap_err()
        .to_string()
        .contains("store.bucket"));
}
