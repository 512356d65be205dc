use super::*;

/// A fresh, empty directory under the system's temporary one.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("nacre-host-proxy-{}-{tag}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn name(s: &str) -> ObjectName {
    s.parse().unwrap()
}

/// Every file under `dir`, as paths below it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn objects_are_files_and_puts_are_atomic() {
    let dir = temp_dir("atomic");
    let store = FileStore::open(&dir).unwrap();
    let root = store.root().to_path_buf();
    let a = name("snapshots/2026/a.sealed");
    store.put(&a, b"old".to_vec()).await.unwrap();
    assert_eq!(
        fs::read(root.join("snapshots/2026/a.sealed")).unwrap(),
        b"old"
    );
    assert_eq!(store.get(&a).await.unwrap().unwrap(), b"old");

    // A put that fails midway (half written, then an error) leaves
    // the old object whole and no temporary file behind.
    let e = store
        .put_with(&a, |file| {
            file.write_all(b"ne")?;
            Err(io::Error::other("the disk went away"))
        })
        .unwrap_err();
    assert!(e.contains("the disk went away"), "{e}");
    assert_eq!(store.get(&a).await.unwrap().unwrap(), b"old");
    assert_eq!(files(&root), ["snapshots/2026/a.sealed"]);

    store.put(&a, b"new".to_vec()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap(), b"new");
    assert_eq!(files(&root), ["snapshots/2026/a.sealed"]);

    // Absent: no file, a directory of others, a file in the way.
    assert_eq!(store.get(&name("nothing")).await.unwrap(), None);
    assert_eq!(store.get(&name("snapshots/2026")).await.unwrap(), None);
    assert_eq!(
        store.get(&name("snapshots/2026/a.sealed/x")).await.unwrap(),
        None
    );
    let e = store
        .put(&name("snapshots/2026/a.sealed/x"), b"x".to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("in the way"), "{e}");

    store.delete(&a).await.unwrap();
    store.delete(&a).await.unwrap();
    store.delete(&name("snapshots")).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert!(files(&root).is_empty());

    // Mode 0600 files and 0700 directories: ciphertext, but nobody
    // else's business.
    use std::os::unix::fs::PermissionsExt;
    store.put(&a, b"x".to_vec()).await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.join(a.as_str())), 0o600);
    assert_eq!(mode(&root.join("snapshots")), 0o700);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_directory_is_refused_not_made() {
    let dir = temp_dir("missing");
    // An unmounted volume: its mount point is not there.
    let missing = dir.join("mnt/store");
    let e = FileStore::open(&missing).unwrap_err();
    let d = missing.display();
    assert_eq!(
        e.to_string(),
        format!(
            "--store {d}: no such directory: create it on durable storage (mkdir -p {d}); \
             the proxy does not make it, so an unmounted volume is never taken for an \
             empty store"
        )
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(!dir.join("mnt").exists(), "nothing was made");

    // A file is not a store either.
    fs::write(dir.join("file"), b"x").unwrap();
    let e = FileStore::open(&dir.join("file")).unwrap_err();
    assert!(e.to_string().ends_with("file: not a directory"), "{e}");

    // Made, it opens; the objects' subdirectories are made as needed.
    fs::create_dir_all(&missing).unwrap();
    let store = FileStore::open(&missing).unwrap();
    store.put(&name("a/b/c"), b"x".to_vec()).await.unwrap();
    assert!(store.put_new(&name("d/e"), b"y".to_vec()).await.unwrap());
    assert_eq!(files(&missing), ["a/b/c", "d/e"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn create_only_puts_write_once() {
    let dir = temp_dir("put-new");
    let store = FileStore::open(&dir).unwrap();
    let a = name("snapshots/a");
    assert!(store.put_new(&a, b"first".to_vec()).await.unwrap());
    assert!(!store.put_new(&a, b"second".to_vec()).await.unwrap());
    assert_eq!(fs::read(dir.join("snapshots/a")).unwrap(), b"first");
    // After a plain put too; and a plain put still replaces.
    let b = name("snapshots/b");
    store.put(&b, b"plain".to_vec()).await.unwrap();
    assert!(!store.put_new(&b, b"new".to_vec()).await.unwrap());
    assert_eq!(store.get(&b).await.unwrap().unwrap(), b"plain");
    store.put(&a, b"replaced".to_vec()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap(), b"replaced");
    // No temporary file left by either answer.
    assert_eq!(files(&dir), ["snapshots/a", "snapshots/b"]);

    // Failing midway: no object, not even a partial one, and no
    // temporary file.
    let c = name("snapshots/c");
    let e = store
        .put_new_with(&c, |file| {
            file.write_all(b"ha")?;
            Err(io::Error::other("the disk went away"))
        })
        .unwrap_err();
    assert!(e.contains("the disk went away"), "{e}");
    assert_eq!(store.get(&c).await.unwrap(), None);
    assert_eq!(files(&dir), ["snapshots/a", "snapshots/b"]);
    assert!(store.put_new(&c, b"whole".to_vec()).await.unwrap());

    // A directory of other objects is no object, and is in the way.
    let e = store
        .put_new(&name("snapshots"), b"x".to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("in the way"), "{e}");
    // Gone, it can be made again.
    store.delete(&c).await.unwrap();
    assert!(store.put_new(&c, b"again".to_vec()).await.unwrap());
    assert_eq!(store.get(&c).await.unwrap().unwrap(), b"again");
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_create_only_puts_make_one_object() {
    let dir = temp_dir("put-new-race");
    let store = FileStore::open(&dir).unwrap();
    for round in 0..50 {
        let n = name(&format!("race/{round}"));
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let racer = |who: u8| {
            let (store, n, start) = (store.clone(), n.clone(), start.clone());
            // Large enough that the two writes overlap.
            let data = vec![who; 256 << 10];
            tokio::spawn(async move {
                start.wait().await;
                store.put_new(&n, data).await.unwrap()
            })
        };
        let (one, two) = (racer(1), racer(2));
        let (one, two) = (one.await.unwrap(), two.await.unwrap());
        assert!(
            one ^ two,
            "round {round}: exactly one is written ({one}, {two})"
        );
        let winner = if one { 1 } else { 2 };
        let held = fs::read(dir.join(n.as_str())).unwrap();
        assert!(
            held.len() == 256 << 10 && held.iter().all(|&b| b == winner),
            "round {round}: the object is the winner's bytes, whole"
        );
    }
    assert_eq!(files(&dir).len(), 50, "no temporary file is left");
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn lists_are_sorted_bounded_and_skip_what_is_not_an_object() {
    let dir = temp_dir("list");
    let store = FileStore::open(&dir).unwrap();
    // Chosen so that walking directories in their entries' order would
    // not give byte order: "a-b" < "a.c" < "a/x" < "a0".
    for n in ["a0", "a/x", "a.c", "a-b", "a/y/z", "b", "ab/c"] {
        store.put(&name(n), n.as_bytes().to_vec()).await.unwrap();
    }
    // Not objects: a temporary file, a name out of the alphabet.
    fs::write(dir.join("#tmp-1-1"), b"half").unwrap();
    fs::write(dir.join("a/UPPER"), b"?").unwrap();
    let listed = |v: Vec<ObjectName>| v.into_iter().map(|n| n.into_string()).collect::<Vec<_>>();
    assert_eq!(
        listed(store.list("").await.unwrap()),
        ["a-b", "a.c", "a/x", "a/y/z", "a0", "ab/c", "b"]
    );
    assert_eq!(listed(store.list("a/").await.unwrap()), ["a/x", "a/y/z"]);
    assert_eq!(listed(store.list("a/y").await.unwrap()), ["a/y/z"]);
    assert_eq!(listed(store.list("a").await.unwrap()).len(), 6);
    assert!(store.list("zzz/").await.unwrap().is_empty());
    assert_eq!(
        listed(list(&dir, "", 3).unwrap()),
        ["a-b", "a.c", "a/x"],
        "the first names, in order, when stopped early"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn names_cannot_lead_out_of_the_directory() {
    let dir = temp_dir("escape");
    fs::create_dir(dir.join("store")).unwrap();
    let store = FileStore::open(&dir.join("store")).unwrap();
    fs::write(dir.join("secret"), b"the host's own").unwrap();
    for bad in ["../secret", "/etc/passwd", "a/../../secret", "./secret"] {
        assert!(bad.parse::<ObjectName>().is_err(), "{bad}");
    }
    // Even a prefix that slipped past the protocol's check.
    assert!(list(store.root(), "../", 10).is_err());
    assert!(list(store.root(), "a/../../", 10).is_err());
    // And over the protocol, the server refuses them (the control
    // crate's tests); here the store only ever sees checked names.
    let s = name("secret");
    assert_eq!(store.get(&s).await.unwrap(), None);
    store.put(&s, b"enclave's".to_vec()).await.unwrap();
    assert_eq!(fs::read(dir.join("secret")).unwrap(), b"the host's own");
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn without_a_store_requests_say_how_to_get_one() {
    let metrics = Arc::new(Metrics::default());
    let host = HostStore::new(None, Credentials::None, metrics.clone());
    let e = host.get(&name("a")).await.unwrap_err();
    assert_eq!(e, NO_STORE);
    assert_eq!(host.list("").await.unwrap_err(), NO_STORE);
    let e = host.credentials().await.unwrap_err();
    assert!(e.contains("--aws-credentials imds"), "{e}");
    let text = metrics.render();
    assert!(
        text.contains(r#"nacre_proxy_store_operations_total{op="get",result="failed"} 1"#),
        "{text}"
    );

    // With one: counted by operation and result, and in bytes.
    let dir = temp_dir("counted");
    let host = HostStore::new(
        Some(FileStore::open(&dir).unwrap()),
        Credentials::None,
        metrics.clone(),
    );
    host.put(&name("a"), vec![0; 100]).await.unwrap();
    host.get(&name("a")).await.unwrap();
    host.get(&name("b")).await.unwrap();
    host.refused("put", "a bad name");
    assert!(host.put_new(&name("c"), vec![0; 10]).await.unwrap());
    assert!(!host.put_new(&name("c"), vec![0; 20]).await.unwrap());
    assert!(!host.put_new(&name("a"), vec![0; 30]).await.unwrap());
    let e = host.put_new(&name("a/x"), vec![0; 40]).await.unwrap_err();
    assert!(e.contains("in the way"), "{e}");
    let text = metrics.render();
    for line in [
        r#"nacre_proxy_store_operations_total{op="put",result="ok"} 1"#,
        r#"nacre_proxy_store_operations_total{op="get",result="ok"} 1"#,
        r#"nacre_proxy_store_operations_total{op="get",result="absent"} 1"#,
        r#"nacre_proxy_store_operations_total{op="put",result="refused"} 1"#,
        r#"nacre_proxy_store_operations_total{op="put_new",result="ok"} 1"#,
        r#"nacre_proxy_store_operations_total{op="put_new",result="exists"} 2"#,
        r#"nacre_proxy_store_operations_total{op="put_new",result="failed"} 1"#,
        r#"nacre_proxy_store_bytes_total{direction="written"} 110"#,
        r#"nacre_proxy_store_bytes_total{direction="read"} 100"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    fs::remove_dir_all(&dir).unwrap();
}
