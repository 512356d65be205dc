//! The host's side of a store link: [`serve`] reads each request, checks
//! it, asks the [`Store`], and answers.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    AwsCredentials, MAX_NAMES, MAX_OBJECT, MAX_WHY, ObjectName, StoreError, check_prefix,
    frame_kind, read_raw,
};
use crate::v1::store_request::Op;
use crate::v1::store_response::Result as Answer;
use crate::v1::{self, StoreResponse};
use crate::{Body, Frame, FrameError, MAX_FRAME, bounded, encode_frame, read_frame};

/// Where a host keeps the enclave's objects, and where it gets AWS
/// credentials for it. Errors are the host's words for the enclave's log
/// (no secrets in them); [`serve`] bounds them.
pub trait Store: Send + Sync + 'static {
    /// The object called `name`, if there is one.
    fn get(
        &self,
        name: &ObjectName,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, String>> + Send;

    /// Keeps `data` (at most [`MAX_OBJECT`] bytes) as `name`, replacing
    /// any object of that name: once this returns Ok, the object is
    /// durable; if it fails, the old one (or none) is still there, whole.
    fn put(
        &self,
        name: &ObjectName,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Keeps `data` (at most [`MAX_OBJECT`] bytes) as `name` only if there
    /// is no object of that name (a create-only put): `true` once the new
    /// object is durable; `false` if one was there, which is left as it
    /// was, nothing written. Atomic against other calls for the same name:
    /// of two racing, at most one returns `true`. If it fails, no object
    /// of that name was made (none partial either).
    fn put_new(
        &self,
        name: &ObjectName,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<bool, String>> + Send;

    /// The names that start with `prefix` (already checked to be a prefix
    /// of names), sorted. It may stop after [`MAX_NAMES`] + 1: [`serve`]
    /// sends the first [`MAX_NAMES`] and says the list is truncated.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectName>, String>> + Send;

    /// Removes the object called `name`; Ok if there was none.
    fn delete(&self, name: &ObjectName) -> impl Future<Output = Result<(), String>> + Send;

    /// AWS credentials for the enclave, valid for a while yet.
    fn credentials(&self) -> impl Future<Output = Result<AwsCredentials, String>> + Send;

    /// Told of each request [`serve`] refused before it reached the store
    /// (`op` is `get`, `put`, `put_new` (a create-only put), `list`,
    /// `delete`, `credentials`, or `unknown`), to count or log; does
    /// nothing unless implemented.
    fn refused(&self, op: &'static str, why: &str) {
        let _ = (op, why);
    }
}

/// How long a parting answer (a failure before closing the link) may take
/// to write; the other side may not be reading.
const PARTING: Duration = Duration::from_secs(1);

/// Serves a store link after the Hellos: one request, one answer, until
/// the other side closes (Ok) or sends what is not a request it can
/// answer (Err, after a best-effort failure answer saying why; only this
/// link ends). A request the link stays in step after (a bad name, say)
/// gets a failure answer and the link goes on; frames of kinds this build
/// does not know are skipped.
pub async fn serve<S, T>(stream: &mut S, store: &T) -> Result<(), StoreError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    loop {
        let frame = match read_frame(stream).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => {
                let why = format!("cannot read a request: {e}; closing the store link");
                store.refused("unknown", &why);
                parting(stream, &why).await;
                return Err(e.into());
            }
        };
        let request = match frame.body {
            Some(Body::StoreRequest(request)) => request,
            // A kind of frame of a later version.
            None => continue,
            Some(other) => {
                let why = format!(
                    "a {} frame on a store link, where only requests go; closing it",
                    frame_kind(&other)
                );
                store.refused("unknown", &why);
                parting(stream, &why).await;
                return Err(StoreError::Protocol(why));
            }
        };
        answer(stream, store, request.op).await?;
    }
}

/// Answers one request.
async fn answer<S, T>(stream: &mut S, store: &T, op: Option<Op>) -> Result<(), StoreError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    match op {
        None => {
            let why = "a request this host proxy does not know: upgrade it";
            store.refused("unknown", why);
            send(stream, failed(why)).await
        }
        Some(Op::Get(get)) => answer_get(stream, store, get).await,
        Some(Op::Put(put)) => answer_put(stream, store, put).await,
        Some(Op::List(list)) => answer_list(stream, store, list).await,
        Some(Op::Delete(delete)) => {
            let result = match name(store, "delete", delete.name) {
                Err(answer) => answer,
                Ok(name) => match store.delete(&name).await {
                    Ok(()) => Answer::Done(v1::StoreDone {}),
                    Err(why) => failed(&why),
                },
            };
            send(stream, result).await
        }
        Some(Op::Credentials(_)) => {
            let result = match store.credentials().await {
                Ok(c) => Answer::Credentials(c.into()),
                Err(why) => failed(&why),
            };
            send(stream, result).await
        }
    }
}

/// Answers a get: the object's length, then its bytes raw; or absent, or
/// a failure.
async fn answer_get<S, T>(stream: &mut S, store: &T, get: v1::StoreGet) -> Result<(), StoreError>
where
    S: AsyncWrite + Unpin,
    T: Store,
{
    let name = match name(store, "get", get.name) {
        Err(answer) => return send(stream, answer).await,
        Ok(name) => name,
    };
    let result = match store.get(&name).await {
        Ok(Some(data)) if data.len() as u64 > MAX_OBJECT => failed(&format!(
            "{name} is {} bytes, over the {MAX_OBJECT}-byte limit",
            data.len()
        )),
        Ok(Some(data)) => {
            let object = v1::StoreObject {
                length: data.len() as u64,
            };
            send(stream, Answer::Object(object)).await?;
            stream.write_all(&data).await?;
            stream.flush().await?;
            return Ok(());
        }
        Ok(None) => Answer::Absent(v1::StoreAbsent {}),
        Err(why) => failed(&why),
    };
    send(stream, result).await
}

/// Answers a put, plain or create-only, after reading its raw bytes
/// (skipping them if the name is refused); one over [`MAX_OBJECT`] ends
/// the link.
async fn answer_put<S, T>(stream: &mut S, store: &T, put: v1::StorePut) -> Result<(), StoreError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Store,
{
    let op = if put.if_absent { "put_new" } else { "put" };
    if put.length > MAX_OBJECT {
        // Its bytes are on their way and too many to skip: the
        // link cannot be kept in step.
        let why = format!(
            "an object of {} bytes, over the {MAX_OBJECT}-byte limit; closing the store link",
            put.length
        );
        store.refused(op, &why);
        parting(stream, &why).await;
        return Err(StoreError::Protocol(why));
    }
    let name = match name(store, op, put.name) {
        Err(answer) => {
            skip(stream, put.length).await?;
            return send(stream, answer).await;
        }
        Ok(name) => name,
    };
    // Read whole either way, so the link stays in step.
    let data = read_raw(stream, put.length).await?;
    let result = if put.if_absent {
        match store.put_new(&name, data).await {
            Ok(true) => Answer::Done(v1::StoreDone {}),
            Ok(false) => Answer::Exists(v1::StoreExists {}),
            Err(why) => failed(&why),
        }
    } else {
        match store.put(&name, data).await {
            Ok(()) => Answer::Done(v1::StoreDone {}),
            Err(why) => failed(&why),
        }
    };
    send(stream, result).await
}

/// Answers a list: the names under its prefix, in as many frames as they
/// take.
async fn answer_list<S, T>(stream: &mut S, store: &T, list: v1::StoreList) -> Result<(), StoreError>
where
    S: AsyncWrite + Unpin,
    T: Store,
{
    if let Err(why) = check_prefix(&list.prefix) {
        store.refused("list", &why);
        return send(stream, failed(&why)).await;
    }
    match store.list(&list.prefix).await {
        Ok(names) => {
            for frame in names_frames(names, &list.prefix) {
                write(stream, &frame).await?;
            }
            Ok(())
        }
        Err(why) => send(stream, failed(&why)).await,
    }
}

/// `name` checked, or the failure answer (counted as refused).
fn name<T: Store>(store: &T, op: &'static str, name: String) -> Result<ObjectName, Answer> {
    ObjectName::new(name).map_err(|e| {
        let why = match e {
            StoreError::Protocol(why) => why,
            e => e.to_string(),
        };
        store.refused(op, &why);
        failed(&why)
    })
}

/// A failure answer, its words bounded.
fn failed(why: &str) -> Answer {
    Answer::Failed(v1::StoreFailed {
        why: bounded::cut(why, MAX_WHY).into_owned(),
    })
}

fn response(result: Answer) -> Frame {
    Frame {
        body: Some(Body::StoreResponse(StoreResponse {
            result: Some(result),
        })),
    }
}

/// Sends one answer; one that does not fit a frame (credentials from a
/// runaway environment variable) goes as a failure instead.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, result: Answer) -> Result<(), StoreError> {
    let frame = response(result);
    if encode_frame(&frame).is_err() {
        let frame = response(failed("the answer does not fit a frame"));
        return write(stream, &frame).await;
    }
    write(stream, &frame).await
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, frame: &Frame) -> Result<(), StoreError> {
    stream.write_all(&encode_frame(frame)?).await?;
    stream.flush().await?;
    Ok(())
}

/// A failure answer before the link is closed, if it can be written soon.
async fn parting<S: AsyncWrite + Unpin>(stream: &mut S, why: &str) {
    let frame = response(failed(why));
    let _ = tokio::time::timeout(PARTING, write(stream, &frame)).await;
}

/// Reads and drops the `len` raw bytes of a put that is refused.
async fn skip<S: AsyncRead + Unpin>(stream: &mut S, len: u64) -> Result<(), StoreError> {
    use tokio::io::AsyncReadExt;
    let skipped = tokio::io::copy(&mut (&mut *stream).take(len), &mut tokio::io::sink()).await?;
    if skipped != len {
        return Err(FrameError::Truncated.into());
    }
    Ok(())
}

/// Room a name takes in a `StoreNames` frame: its tag, its length (two
/// bytes for up to 200) and itself.
fn name_cost(name: &ObjectName) -> usize {
    name.as_str().len() + 3
}

/// Protobuf bytes around the names of one frame at most: the frame's and
/// the answer's tags and lengths, and the flags.
const NAMES_FRAMING: usize = 32;

/// The frames of a list answer: `names` sorted, without repeats, those
/// starting with `prefix` only, at most [`MAX_NAMES`] (the last frame says
/// `truncated` if there were more), each frame within [`MAX_FRAME`] and
/// all but the last saying `more`.
pub(crate) fn names_frames(mut names: Vec<ObjectName>, prefix: &str) -> Vec<Frame> {
    names.retain(|n| n.as_str().starts_with(prefix));
    names.sort();
    names.dedup();
    let truncated = names.len() > MAX_NAMES;
    names.truncate(MAX_NAMES);
    let mut parts: Vec<v1::StoreNames> = Vec::new();
    let mut part = v1::StoreNames::default();
    let mut room = MAX_FRAME - NAMES_FRAMING;
    for name in names {
        if name_cost(&name) > room {
            parts.push(std::mem::take(&mut part));
            room = MAX_FRAME - NAMES_FRAMING;
        }
        room -= name_cost(&name);
        part.names.push(name.into_string());
    }
    part.truncated = truncated;
    parts.push(part);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, mut part)| {
            part.more = i < last;
            response(Answer::Names(part))
        })
        .collect()
}
