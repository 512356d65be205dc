//! The enclave's side of a store link.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::checks::Names;
use super::{
    AwsCredentials, MAX_OBJECT, ObjectName, StoreError, answer_kind, check_prefix, clean,
    frame_kind, read_raw,
};
use crate::v1::store_request::Op;
use crate::v1::store_response::Result as Answer;
use crate::v1::{self, StoreRequest};
use crate::{Body, Channel, Frame, handshake, hello, read_frame, write_frame};

/// Frames of unknown kinds skipped while waiting for one answer at most:
/// past this the host is stalling.
const MOST_SKIPPED: usize = 16;

/// A store link to the host proxy (its `--control-listen`), one request
/// at a time. Every answer is checked and bounded; after an error other
/// than [`StoreError::Failed`] (after which the link is still in step)
/// the link is not used again: each later call says so, and the caller
/// opens another.
///
/// Nothing here waits with a deadline of its own (an object may be
/// hundreds of MiB over a slow link): wrap calls in
/// `tokio::time::timeout` as the caller needs.
#[derive(Debug)]
pub struct StoreClient<S> {
    link: S,
    version: u32,
    host: String,
    broken: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StoreClient<S> {
    /// Says Hello on `stream` for the store channel, as `software` (e.g.
    /// `nacre-runtime 0.1.0`), and reads the host's: it must speak a
    /// version this build does and echo the store channel (a host proxy
    /// that does not serve the store answers with the log channel).
    pub async fn open(mut stream: S, software: &str) -> Result<StoreClient<S>, StoreError> {
        let mut ours = hello(software);
        ours.channel = Channel::Store as i32;
        let (version, theirs) = handshake(&mut stream, ours).await?;
        let host = clean(&theirs.software);
        if theirs.channel != Channel::Store as i32 {
            return Err(StoreError::Protocol(format!(
                "the host proxy ({host}) does not serve the store channel (its Hello answers channel {}): upgrade nacre-host-proxy",
                theirs.channel
            )));
        }
        Ok(StoreClient::ready(stream, version, host))
    }

    /// A client on a link whose Hellos were exchanged.
    pub(crate) fn ready(link: S, version: u32, host: String) -> StoreClient<S> {
        StoreClient {
            link,
            version,
            host,
            broken: None,
        }
    }

    /// The link, as the client leaves it: for tests of what was read.
    #[cfg(test)]
    pub(crate) fn into_link(self) -> S {
        self.link
    }

    /// The protocol version both sides speak.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The host's software, as its Hello says (cleaned, bounded).
    pub fn host_software(&self) -> &str {
        &self.host
    }

    /// The object called `name`, if the host has one (at most
    /// [`MAX_OBJECT`] bytes: [`StoreClient::get_at_most`] with that).
    pub async fn get(&mut self, name: &ObjectName) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_at_most(name, MAX_OBJECT).await
    }

    /// The object called `name`, if the host has one of at most `max`
    /// bytes (`max` over [`MAX_OBJECT`] is [`MAX_OBJECT`]). A longer one
    /// is a [`StoreError::Protocol`] naming the name, its length and the
    /// limit, found from the host's announced length before any of its
    /// bytes is read: none is, so the link is out of step and not used
    /// again (open another).
    pub async fn get_at_most(
        &mut self,
        name: &ObjectName,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.usable()?;
        let r = self.get_inner(name, max.min(MAX_OBJECT)).await;
        self.settle(r)
    }

    /// Stores `data` as `name` (replacing any object of that name); Ok
    /// once the host says it is durable. Over [`MAX_OBJECT`] bytes is
    /// refused before anything is sent.
    pub async fn put(&mut self, name: &ObjectName, data: &[u8]) -> Result<(), StoreError> {
        check_size(name, data)?;
        self.usable()?;
        let r = match self.put_inner(name, data, false).await {
            Ok(Answer::Done(_)) => Ok(()),
            Ok(other) => Err(unexpected("put", &other)),
            Err(e) => Err(e),
        };
        self.settle(r)
    }

    /// Stores `data` as `name` only if the host has no object of that
    /// name (a create-only put, `StorePut.if_absent`): `true` once the
    /// host says the new object is durable, `false` if one of that name
    /// was there (nothing is written, it is unchanged). Of two of these
    /// racing for one name, at most one gets `true`. Over [`MAX_OBJECT`]
    /// bytes is refused before anything is sent.
    ///
    /// Only for a host that knows create-only puts (`nacre-host-proxy`
    /// of this release or later): an older one ignores the flag, replaces
    /// the object and answers as to a plain put, which reads as `true`.
    pub async fn put_new(&mut self, name: &ObjectName, data: &[u8]) -> Result<bool, StoreError> {
        check_size(name, data)?;
        self.usable()?;
        let r = match self.put_inner(name, data, true).await {
            Ok(Answer::Done(_)) => Ok(true),
            Ok(Answer::Exists(_)) => Ok(false),
            Ok(other) => Err(unexpected("create-only put", &other)),
            Err(e) => Err(e),
        };
        self.settle(r)
    }

    /// The names the host has that start with `prefix` (empty: all), in
    /// byte order. More than [`super::MAX_NAMES`] is the host's failure
    /// ([`StoreError::Failed`]): list a narrower prefix. A prefix no name
    /// can start with is refused before anything is sent.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<ObjectName>, StoreError> {
        check_prefix(prefix).map_err(StoreError::Protocol)?;
        self.usable()?;
        let r = self.list_inner(prefix).await;
        self.settle(r)
    }

    /// Removes the object called `name` (Ok if there was none).
    pub async fn delete(&mut self, name: &ObjectName) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.delete_inner(name).await;
        self.settle(r)
    }

    /// The AWS credentials the host holds for the enclave.
    pub async fn credentials(&mut self) -> Result<AwsCredentials, StoreError> {
        self.usable()?;
        let r = self.credentials_inner().await;
        self.settle(r)
    }

    fn usable(&self) -> Result<(), StoreError> {
        match &self.broken {
            Some(why) => Err(StoreError::Protocol(format!(
                "this store link failed earlier ({why}); open another"
            ))),
            None => Ok(()),
        }
    }

    /// Marks the link broken after an error it may be out of step after.
    fn settle<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && !matches!(e, StoreError::Failed(_))
        {
            self.broken = Some(e.to_string());
        }
        r
    }

    /// A get of an object of at most `max` (at most [`MAX_OBJECT`]) bytes.
    async fn get_inner(
        &mut self,
        name: &ObjectName,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let get = v1::StoreGet {
            name: name.to_string(),
        };
        match self.call(Op::Get(get), "get").await? {
            // Refused on its announced length: none of its bytes is read.
            Answer::Object(object) if object.length > max => Err(StoreError::Protocol(format!(
                "{name}: the host's object is {} bytes, over the {max}-byte limit",
                object.length
            ))),
            Answer::Object(object) => Ok(Some(read_raw(&mut self.link, object.length).await?)),
            Answer::Absent(_) => Ok(None),
            other => Err(unexpected("get", &other)),
        }
    }

    /// Sends a put (create-only if `if_absent`) and its bytes; the answer.
    async fn put_inner(
        &mut self,
        name: &ObjectName,
        data: &[u8],
        if_absent: bool,
    ) -> Result<Answer, StoreError> {
        let put = v1::StorePut {
            name: name.to_string(),
            length: data.len() as u64,
            if_absent,
        };
        write_frame(&mut self.link, &request(Op::Put(put))).await?;
        self.link.write_all(data).await?;
        self.link.flush().await?;
        self.answer(if if_absent { "create-only put" } else { "put" })
            .await
    }

    async fn list_inner(&mut self, prefix: &str) -> Result<Vec<ObjectName>, StoreError> {
        let list = v1::StoreList {
            prefix: prefix.to_string(),
        };
        let mut names = Names::new(prefix);
        let mut next = self.call(Op::List(list), "list").await?;
        loop {
            let Answer::Names(part) = next else {
                return Err(unexpected("list", &next));
            };
            if let Some(all) = names.add(part)? {
                return Ok(all);
            }
            next = self.answer("list").await?;
        }
    }

    async fn delete_inner(&mut self, name: &ObjectName) -> Result<(), StoreError> {
        let delete = v1::StoreDelete {
            name: name.to_string(),
        };
        match self.call(Op::Delete(delete), "delete").await? {
            Answer::Done(_) => Ok(()),
            other => Err(unexpected("delete", &other)),
        }
    }

    async fn credentials_inner(&mut self) -> Result<AwsCredentials, StoreError> {
        let op = Op::Credentials(v1::CredentialsGet {});
        match self.call(op, "credentials").await? {
            Answer::Credentials(c) => AwsCredentials::try_from(c),
            other => Err(unexpected("credentials", &other)),
        }
    }

    /// Sends a request without raw bytes and reads its answer.
    async fn call(&mut self, op: Op, what: &str) -> Result<Answer, StoreError> {
        write_frame(&mut self.link, &request(op)).await?;
        self.answer(what).await
    }

    /// The next answer; a failure is [`StoreError::Failed`].
    async fn answer(&mut self, what: &str) -> Result<Answer, StoreError> {
        for _ in 0..=MOST_SKIPPED {
            let frame = read_frame(&mut self.link).await?;
            match frame.body {
                // A kind of frame of a later version.
                None => continue,
                Some(Body::StoreResponse(response)) => {
                    return match response.result {
                        Some(Answer::Failed(f)) => Err(StoreError::Failed(clean(&f.why))),
                        Some(answer) => Ok(answer),
                        None => Err(StoreError::Protocol(format!(
                            "the host answered a {what} with an answer of a kind this build does not know"
                        ))),
                    };
                }
                Some(other) => {
                    return Err(StoreError::Protocol(format!(
                        "the host answered a {what} with a {} frame",
                        frame_kind(&other)
                    )));
                }
            }
        }
        Err(StoreError::Protocol(format!(
            "the host sent more than {MOST_SKIPPED} frames of unknown kinds instead of answering a {what}"
        )))
    }
}

/// `data` refused before anything is sent if over [`MAX_OBJECT`].
fn check_size(name: &ObjectName, data: &[u8]) -> Result<(), StoreError> {
    if data.len() as u64 > MAX_OBJECT {
        return Err(StoreError::Protocol(format!(
            "{name}: an object of {} bytes, over the {MAX_OBJECT}-byte limit",
            data.len()
        )));
    }
    Ok(())
}

fn request(op: Op) -> Frame {
    Frame {
        body: Some(Body::StoreRequest(StoreRequest { op: Some(op) })),
    }
}

fn unexpected(what: &str, answer: &Answer) -> StoreError {
    StoreError::Protocol(format!(
        "the host answered a {what} with {}",
        answer_kind(answer)
    ))
}
