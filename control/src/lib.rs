//! The control channel between `nacre-runtime --control` and
//! `nacre-host-proxy --control-listen`, in one place for both sides: the
//! protobuf messages (generated from
//! `proto/nacre/control/v1/control.proto`), their framing (a 4-byte
//! big-endian length, then the bytes) and the version handshake.
//!
//! [`exposition`] is the other way an operator sees inside: the classic
//! Prometheus text format both binaries serve next to OpenMetrics.
//! [`bounded`] holds records to sizes that always fit a frame, so what a
//! guest or a peer put in a record can neither end the link nor fill the
//! memory of either side.
//!
//! A connection carries one [`Channel`], named in the runtime's Hello: the
//! log link (the default) or a [`store`] link, on which the enclave keeps
//! its sealed objects with the host and asks it for AWS credentials.
//!
//! On the log link the runtime only sends what its operator may read: log
//! records and guests' output lines. The host is not trusted: everything
//! read from the link is checked ([`read_frame`] bounds the length and
//! decodes strictly; [`store::StoreClient`] bounds every answer).

use std::time::Duration;

pub mod bounded;
pub mod exposition;
#[doc(hidden)]
pub mod fuzzing;
pub mod store;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The generated messages of `nacre.control.v1`.
#[allow(missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/nacre.control.v1.rs"));
}

pub use v1::{Channel, Dropped, Frame, GuestOutput, Hello, Level, LogRecord, Stream, frame::Body};

/// The protocol versions this build speaks.
pub const VERSIONS: (u32, u32) = (1, 1);
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// How long a side waits for the other's Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong on the link.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other side closed the link between frames.
    #[error("the link was closed")]
    Closed,
    /// The link ended inside a frame.
    #[error("the link ended inside a frame (truncated)")]
    Truncated,
    /// A length over [`MAX_FRAME`].
    #[error("a frame of {0} bytes, over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Bytes that are not a Frame.
    #[error("a frame that is not protobuf of nacre.control.v1.Frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The first frame was not a Hello, or no Hello came in time.
    #[error("{0}")]
    Handshake(String),
    /// The two sides share no protocol version.
    #[error(
        "the other side speaks control protocol {their_min}..={their_max}, this one {}..={}: upgrade the older side",
        VERSIONS.0,
        VERSIONS.1
    )]
    Version {
        /// The other side's lowest version.
        their_min: u32,
        /// The other side's highest version.
        their_max: u32,
    },
    /// The transport failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `frame` as it goes on the link: its length, then its bytes. An error
/// (a frame over [`MAX_FRAME`]) is about that frame only: the sender
/// drops and counts it, and the link goes on.
pub fn encode_frame(frame: &Frame) -> std::io::Result<Vec<u8>> {
    let len = frame.encoded_len();
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes is over the {MAX_FRAME}-byte limit"
        )));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    frame
        .encode(&mut buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf)
}

/// Writes `frame` with its length in front.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&encode_frame(frame)?).await?;
    w.flush().await
}

/// Milliseconds since the Unix epoch, as records carry their time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The length a frame's head announces, if within [`MAX_FRAME`].
fn frame_len(head: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Err(FrameError::Closed),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = frame_len(head)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Frame::decode(body.as_slice())?)
}

/// This side's Hello, for a log link ([`Channel::Logs`]; set `channel`
/// for another).
pub fn hello(software: &str) -> Hello {
    Hello {
        min_version: VERSIONS.0,
        max_version: VERSIONS.1,
        software: software.to_string(),
        sync_advertise: String::new(),
        channel: Channel::Logs as i32,
    }
}

/// Sends this side's Hello (`ours`, from [`hello`]) and reads the other's
/// (within [`HELLO_TIMEOUT`]); the version both speak, and the other's
/// Hello.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut S,
    ours: Hello,
) -> Result<(u32, Hello), FrameError> {
    let frame = Frame {
        body: Some(Body::Hello(ours)),
    };
    write_frame(link, &frame).await?;
    let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(link))
        .await
        .map_err(|_| FrameError::Handshake(format!("no Hello within {HELLO_TIMEOUT:?}")))??;
    let Some(Body::Hello(theirs)) = frame.body else {
        return Err(FrameError::Handshake(
            "the first frame was not a Hello".into(),
        ));
    };
    let version = negotiate(&theirs)?;
    Ok((version, theirs))
}

/// The listening side's handshake (the host proxy's): reads the other's
/// Hello first (within [`HELLO_TIMEOUT`]), then sends `ours`, made from
/// it, so the answer can echo the channel asked for. The version both
/// speak, and the other's Hello. When they share no version this side's
/// Hello is still sent, so the other side can say why too.
pub async fn answer_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut S,
    ours: impl FnOnce(&Hello) -> Hello,
) -> Result<(u32, Hello), FrameError> {
    let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(link))
        .await
        .map_err(|_| FrameError::Handshake(format!("no Hello within {HELLO_TIMEOUT:?}")))??;
    let Some(Body::Hello(theirs)) = frame.body else {
        return Err(FrameError::Handshake(
            "the first frame was not a Hello".into(),
        ));
    };
    let frame = Frame {
        body: Some(Body::Hello(ours(&theirs))),
    };
    write_frame(link, &frame).await?;
    let version = negotiate(&theirs)?;
    Ok((version, theirs))
}

/// The highest version both sides speak.
pub fn negotiate(theirs: &Hello) -> Result<u32, FrameError> {
    let top = VERSIONS.1.min(theirs.max_version);
    if theirs.min_version > theirs.max_version || top < VERSIONS.0.max(theirs.min_version) {
        return Err(FrameError::Version {
            their_min: theirs.min_version,
            their_max: theirs.max_version,
        });
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(message: &str) -> Frame {
        Frame {
            body: Some(Body::Log(LogRecord {
                unix_ms: 1,
                level: Level::Info as i32,
                target: "t".into(),
                message: message.into(),
                fields: [("k".to_string(), "v".to_string())].into(),
            })),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_named() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, &log("hello")).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), log("hello"));

        // Too long a frame is refused before it is written or read.
        let huge = log(&"x".repeat(MAX_FRAME));
        assert!(write_frame(&mut a, &huge).await.is_err());
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(FrameError::TooLarge(_))
        ));

        // Garbage that claims to be a frame.
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(FrameError::Malformed(_))
        ));

        // A frame cut short, and a link closed between frames.
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b).await,
            Err(FrameError::Truncated)
        ));
        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::Closed)));
    }

    #[test]
    fn versions_meet_at_the_highest_both_speak() {
        let h = |min, max| Hello {
            min_version: min,
            max_version: max,
            software: String::new(),
            sync_advertise: String::new(),
            channel: 0,
        };
        assert_eq!(negotiate(&h(1, 1)).unwrap(), 1);
        // A newer side that still speaks 1.
        assert_eq!(negotiate(&h(1, 7)).unwrap(), 1);
        // Only newer versions, or nonsense.
        let e = negotiate(&h(2, 3)).unwrap_err();
        assert!(e.to_string().contains("upgrade the older side"), "{e}");
        assert!(negotiate(&h(0, 0)).is_err());
        assert!(negotiate(&h(3, 1)).is_err());
    }

    #[tokio::test]
    async fn the_handshake_wants_a_hello_first() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let other = tokio::spawn(async move {
            let mut ours = hello("host");
            ours.sync_advertise = "10.0.0.7:444".into();
            handshake(&mut b, ours).await
        });
        let (v, theirs) = handshake(&mut a, hello("runtime")).await.unwrap();
        assert_eq!((v, theirs.software.as_str()), (1, "host"));
        assert_eq!(theirs.sync_advertise, "10.0.0.7:444");
        assert_eq!(other.await.unwrap().unwrap().1.software, "runtime");

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut b, &log("not a hello")).await.unwrap();
        let e = handshake(&mut a, hello("runtime")).await.unwrap_err();
        assert!(e.to_string().contains("not a Hello"), "{e}");
    }

    #[tokio::test]
    async fn the_answering_side_reads_first_and_echoes() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let host = tokio::spawn(async move {
            answer_handshake(&mut b, |theirs| {
                let mut ours = hello("host");
                ours.channel = theirs.channel;
                ours
            })
            .await
        });
        let mut ours = hello("runtime");
        ours.channel = Channel::Store as i32;
        let (_, theirs) = handshake(&mut a, ours).await.unwrap();
        assert_eq!(theirs.channel(), Channel::Store);
        let (v, runtime) = host.await.unwrap().unwrap();
        assert_eq!((v, runtime.software.as_str()), (1, "runtime"));

        // No shared version: the answer still goes, then the error.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut ours = hello("future runtime");
        (ours.min_version, ours.max_version) = (5, 6);
        write_frame(
            &mut a,
            &Frame {
                body: Some(Body::Hello(ours)),
            },
        )
        .await
        .unwrap();
        let e = answer_handshake(&mut b, |_| hello("host"))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Version { .. }), "{e}");
        let answer = read_frame(&mut a).await.unwrap();
        assert!(matches!(answer.body, Some(Body::Hello(_))), "{answer:?}");

        // Not a Hello first: nothing is sent.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &log("hi")).await.unwrap();
        drop(a);
        let e = answer_handshake(&mut b, |_| hello("host"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a Hello"), "{e}");
    }
}
