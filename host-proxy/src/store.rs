//! `--store DIR`: where the enclave keeps its sealed objects, served on
//! the control listener's store channel ([`nacre_control::store`]).
//!
//! [`FileStore`] keeps each object as a file under DIR by its name (`/`
//! makes subdirectories). DIR itself must exist: the proxy never makes it,
//! so the missing mount point of a volume that is not mounted is refused
//! at start, not taken for an empty store. The objects are ciphertext
//! sealed inside the enclave; the proxy sees names and sizes only. A put
//! is atomic and durable: a temporary file in the object's directory,
//! written, synced, renamed over the object, then the directory synced; a
//! put that fails midway leaves the old object whole. A create-only put
//! ([`FileStore::put_new`]) is the same with a hard link in place of the
//! rename, which the filesystem refuses if the name exists: of two racing,
//! one links and the other finds it there. Temporary files are named with
//! a `#`, which no object name has, so they are never listed or read.
//! Names are checked ([`ObjectName`]: no `..`, no leading `/`) before they
//! reach a path, so no name leads out of DIR.
//!
//! [`HostStore`] is what the control listener serves: the files (if
//! `--store`), the credentials (`--aws-credentials`), and the counting.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nacre_control::store::{AwsCredentials, MAX_NAME, MAX_NAMES, MAX_OBJECT, ObjectName, Store};

use crate::credentials::Credentials;
use crate::metrics::Metrics;

/// What a store request gets when the proxy has no `--store`.
pub const NO_STORE: &str = "this host proxy has no --store; start it with --store DIR";

/// Objects as files under one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: Arc<PathBuf>,
}

/// Makes temporary names unique within the process.
static TEMP: AtomicU64 = AtomicU64::new(0);

impl FileStore {
    /// The store in `root` (`--store DIR`), a directory that must exist:
    /// it is never made, so an unmounted volume (its mount point missing)
    /// is never taken for an empty store. Fails unless the proxy can write
    /// there. Each error names the flag, the directory and what to do.
    pub fn open(root: &Path) -> io::Result<FileStore> {
        let dir = root.display();
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::NotADirectory,
                    format!("--store {dir}: not a directory"),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(io::Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "--store {dir}: no such directory: create it on durable storage \
                         (mkdir -p {dir}); the proxy does not make it, so an unmounted \
                         volume is never taken for an empty store"
                    ),
                ));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("--store {dir}: cannot use this directory: {e}"),
                ));
            }
        }
        let probe = root.join(temp_name());
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("--store {dir}: cannot write to this directory: {e}"),
                )
            })?;
        Ok(FileStore {
            root: Arc::new(root.to_path_buf()),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &ObjectName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// The object called `name`, if there is one.
    pub async fn get(&self, name: &ObjectName) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(name);
        let name = name.clone();
        blocking(move || get(&path).map_err(|e| format!("cannot read {name}: {e}"))).await
    }

    /// Stores `data` as `name`, atomically and durably.
    pub async fn put(&self, name: &ObjectName, data: Vec<u8>) -> Result<(), String> {
        let store = self.clone();
        let name = name.clone();
        blocking(move || store.put_with(&name, |file| file.write_all(&data))).await
    }

    /// Stores `data` as `name` only if there is no object of that name,
    /// atomically and durably: `true` once written, `false` (nothing
    /// written) if one was there.
    pub async fn put_new(&self, name: &ObjectName, data: Vec<u8>) -> Result<bool, String> {
        let store = self.clone();
        let name = name.clone();
        blocking(move || store.put_new_with(&name, |file| file.write_all(&data))).await
    }

    /// Removes the object called `name`; Ok if there was none.
    pub async fn delete(&self, name: &ObjectName) -> Result<(), String> {
        let path = self.path(name);
        let name = name.clone();
        blocking(move || delete(&path).map_err(|e| format!("cannot delete {name}: {e}"))).await
    }

    /// The names under `prefix`, sorted, at most [`MAX_NAMES`] + 1 (one
    /// more says there are more).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectName>, String> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            list(&root, &prefix, MAX_NAMES + 1).map_err(|e| format!("cannot list {prefix:?}: {e}"))
        })
        .await
    }

    /// Writes `name` with `write`, atomically: a temporary file beside it,
    /// synced, renamed over it, its directory synced. If anything fails,
    /// the temporary file is removed and the old object is untouched.
    fn put_with(
        &self,
        name: &ObjectName,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), String> {
        let Staged { path, dir, temp } = self.stage(name, write)?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(format!("cannot store {name}: {e}"));
        }
        sync_dir(&dir).map_err(|e| format!("stored {name}, but cannot sync its directory: {e}"))
    }

    /// Writes `name` with `write` unless it exists, atomically: a
    /// temporary file beside it, synced, hard-linked to the name (which
    /// the filesystem refuses if the name is taken: `false`, nothing
    /// written), removed, the directory synced. The object appears whole
    /// or not at all, and the temporary file never outlives the call
    /// unless removing it fails (a `#tmp-` file, never listed).
    fn put_new_with(
        &self,
        name: &ObjectName,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<bool, String> {
        let Staged { path, dir, temp } = self.stage(name, write)?;
        let linked = match fs::hard_link(&temp, &path) {
            Ok(()) => Ok(true),
            // A directory of other objects is no object of this name
            // (a get answers absent): it cannot be made, as with a put.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Err(
                io::Error::other("a directory of other objects is in the way"),
            ),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        };
        let removed = fs::remove_file(&temp);
        if let (Ok(_), Err(e)) = (&linked, &removed) {
            // The answer stands (the object is whole, or was there): only
            // the spare name is left behind.
            tracing::warn!(
                name = name.as_str(),
                "cannot remove the temporary file {}: {e}",
                temp.display()
            );
        }
        match linked {
            Err(e) => Err(format!("cannot store {name}: {e}")),
            Ok(false) => Ok(false),
            Ok(true) => {
                sync_dir(&dir)
                    .map_err(|e| format!("stored {name}, but cannot sync its directory: {e}"))?;
                Ok(true)
            }
        }
    }

    /// The first steps of both puts: makes `name`'s directory (and what
    /// is missing above it), then writes a new temporary file there with
    /// `write` (mode 0600), synced and closed. If anything fails, the
    /// temporary file is removed and nothing else is touched.
    fn stage(
        &self,
        name: &ObjectName,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<Staged, String> {
        let path = self.path(name);
        let Some(dir) = path.parent() else {
            return Err(format!("{name}: no directory"));
        };
        make_dirs(&self.root, dir).map_err(|e| format!("cannot store {name}: {e}"))?;
        let dir = dir.to_path_buf();
        let temp = dir.join(temp_name());
        if let Err(e) = write_synced(&temp, write) {
            let _ = fs::remove_file(&temp);
            return Err(format!("cannot store {name}: {e}"));
        }
        Ok(Staged { path, dir, temp })
    }
}

/// A put's object path, its directory, and the temporary file written,
/// synced and closed there, still to be renamed or linked to the path.
struct Staged {
    path: PathBuf,
    dir: PathBuf,
    temp: PathBuf,
}

/// Creates `temp` (mode 0600; never over an existing file), writes it
/// with `write`, syncs it and closes it.
fn write_synced(temp: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    write(&mut file)?;
    file.sync_all()
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("the store's worker failed: {e}")))
}

/// A temporary file's name: with a `#`, which no object name has.
fn temp_name() -> String {
    format!(
        "#tmp-{}-{}",
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `dir` and whatever is missing between `root` and it (mode 0700),
/// syncing the parent of each directory made, so a stored object's path
/// survives a crash too.
fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    let Ok(below) = dir.strip_prefix(root) else {
        return Err(io::Error::other("outside the store"));
    };
    let mut at = root.to_path_buf();
    for part in below.components() {
        let Component::Normal(part) = part else {
            return Err(io::Error::other("outside the store"));
        };
        let parent = at.clone();
        at.push(part);
        match fs::DirBuilder::new().mode(0o700).create(&at) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if !at.is_dir() {
                    return Err(io::Error::other(format!(
                        "an object named {} is in the way",
                        at.strip_prefix(root).unwrap_or(&at).display()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn get(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_OBJECT {
        return Err(io::Error::other(format!(
            "{} bytes, over the {MAX_OBJECT}-byte limit",
            meta.len()
        )));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_OBJECT + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_OBJECT {
        return Err(io::Error::other("grew over the limit while read"));
    }
    Ok(Some(data))
}

fn delete(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        },
        // No object of that name (a directory of others is none).
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The object names under `prefix`, in byte order, at most `most`. The
/// walk starts at the directory the prefix names and goes down only into
/// directories that may hold names with the prefix. Entries are visited
/// in the order of their names with a `/` after a directory's, which is
/// the byte order of the names found, so stopping at `most` keeps the
/// first ones.
fn list(root: &Path, prefix: &str, most: usize) -> io::Result<Vec<ObjectName>> {
    let (dir, above) = match prefix.rsplit_once('/') {
        Some((dir, _)) => (dir, format!("{dir}/")),
        None => ("", String::new()),
    };
    if Path::new(dir)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(io::Error::other("not a name prefix"));
    }
    let mut found = Vec::new();
    walk(&root.join(dir), &above, prefix, most, &mut found)?;
    Ok(found)
}

fn walk(
    dir: &Path,
    above: &str,
    prefix: &str,
    most: usize,
    found: &mut Vec<ObjectName>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // (sort key, name, is a directory)
    let mut here: Vec<(String, String, bool)> = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let name = format!("{above}{file_name}");
        // Temporary files, and anything else that is not an object's
        // name (or a directory of them), are not the enclave's.
        if name.len() > MAX_NAME || ObjectName::new(name.clone()).is_err() {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            here.push((format!("{name}/"), file_name, true));
        } else if kind.is_file() {
            here.push((name, file_name, false));
        }
    }
    here.sort();
    for (key, file_name, is_dir) in here {
        if found.len() >= most {
            return Ok(());
        }
        if is_dir {
            if key.starts_with(prefix) || prefix.starts_with(&key) {
                walk(&dir.join(file_name), &key, prefix, most, found)?;
            }
        } else if key.starts_with(prefix)
            && let Ok(name) = ObjectName::new(key)
        {
            found.push(name);
        }
    }
    Ok(())
}

/// What the control listener's store links are served from.
pub struct HostStore {
    files: Option<FileStore>,
    credentials: Credentials,
    metrics: Arc<Metrics>,
}

impl HostStore {
    /// The files of `--store` (if given) and the credentials of
    /// `--aws-credentials`, counted in `metrics`.
    pub fn new(files: Option<FileStore>, credentials: Credentials, metrics: Arc<Metrics>) -> Self {
        HostStore {
            files,
            credentials,
            metrics,
        }
    }

    fn files(&self) -> Result<&FileStore, String> {
        self.files.as_ref().ok_or_else(|| NO_STORE.to_string())
    }

    /// Counts and logs the end of one operation.
    fn done<T>(&self, op: &'static str, name: &str, r: &Result<T, String>, ok: &'static str) {
        match r {
            Ok(_) => {
                self.metrics.store_op(op, ok);
                tracing::debug!(op, name, result = ok, "store");
            }
            Err(why) => {
                self.metrics.store_op(op, "failed");
                tracing::warn!(op, name, "store request failed: {why}");
            }
        }
    }

    /// Fetches the credentials once (not counted), logging the outcome.
    pub async fn check_credentials(&self) {
        match self.credentials.get().await {
            Ok(c) => tracing::info!(
                access_key_id = %c.access_key_id,
                expires_unix = c.expires_unix.unwrap_or(0),
                "AWS credentials for the enclave are available"
            ),
            Err(why) => tracing::warn!("{why}"),
        }
    }

    /// Counts a link refused for being over the cap.
    pub fn busy(&self) {
        self.metrics.store_op("unknown", "busy");
    }
}

impl Store for HostStore {
    async fn get(&self, name: &ObjectName) -> Result<Option<Vec<u8>>, String> {
        let r = match self.files() {
            Ok(files) => files.get(name).await,
            Err(e) => Err(e),
        };
        let ok = match &r {
            Ok(Some(data)) => {
                self.metrics.store_bytes("read", data.len());
                "ok"
            }
            _ => "absent",
        };
        self.done("get", name.as_str(), &r, ok);
        r
    }

    async fn put(&self, name: &ObjectName, data: Vec<u8>) -> Result<(), String> {
        let len = data.len();
        let r = match self.files() {
            Ok(files) => files.put(name, data).await,
            Err(e) => Err(e),
        };
        if r.is_ok() {
            self.metrics.store_bytes("written", len);
        }
        self.done("put", name.as_str(), &r, "ok");
        r
    }

    async fn put_new(&self, name: &ObjectName, data: Vec<u8>) -> Result<bool, String> {
        let len = data.len();
        let r = match self.files() {
            Ok(files) => files.put_new(name, data).await,
            Err(e) => Err(e),
        };
        let ok = match r {
            Ok(true) => {
                self.metrics.store_bytes("written", len);
                "ok"
            }
            _ => "exists",
        };
        self.done("put_new", name.as_str(), &r, ok);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectName>, String> {
        let r = match self.files() {
            Ok(files) => files.list(prefix).await,
            Err(e) => Err(e),
        };
        self.done("list", prefix, &r, "ok");
        r
    }

    async fn delete(&self, name: &ObjectName) -> Result<(), String> {
        let r = match self.files() {
            Ok(files) => files.delete(name).await,
            Err(e) => Err(e),
        };
        self.done("delete", name.as_str(), &r, "ok");
        r
    }

    async fn credentials(&self) -> Result<AwsCredentials, String> {
        let r = self.credentials.get().await;
        self.done("credentials", "", &r, "ok");
        r
    }

    fn refused(&self, op: &'static str, why: &str) {
        self.metrics.store_op(op, "refused");
        tracing::warn!(op, "store request refused: {why}");
    }
}

#[cfg(test)]
mod tests;
