//! `Objects.Pull`, served and read by hand so an object's bytes are copied
//! once on each side: the server writes each `Chunk` as a small header (gRPC
//! prefix, `id`, `total`, `offset`, the key and length of `data`) followed by
//! the object's bytes as they lie in the store; the puller parses the frames
//! as they arrive and copies `data` straight into the object it assembles,
//! hashing it on the way. The generated code would copy the bytes into an
//! encode buffer, a decode buffer and the object: three copies instead of one.
//!
//! The wire format is plain gRPC with the messages of `proto/ferray.proto`, so
//! any gRPC client can pull (the tests read this server with the generated
//! client). The puller accepts what ferray's servers send: `Chunk` fields in
//! field order (as prost writes them), `data` last, no compression.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use ferray_core::{Error, ObjectId};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::{Authed, CHUNK_BYTES, MAX_MESSAGE_BYTES, from_status, id_bytes, object_id, v1};

/// The path of `Objects.Pull`.
pub const PULL_PATH: &str = "/ferray.v1.Objects/Pull";

/// The largest `Chunk` header (everything before `data`'s bytes) a puller
/// accepts: a 32-byte id and two varints need under 64.
const HEAD_MAX: usize = 128;

/// Where an object server finds the objects it serves.
pub trait ObjectSource: Send + Sync + 'static {
    /// The bytes of object `id`, or why not.
    fn object(&self, id: &ObjectId) -> Result<Bytes, Error>;

    /// Fault injection for tests: flip a byte of this transfer. Only with
    /// the `testing` feature, which no release build has.
    #[cfg(feature = "testing")]
    fn corrupt_next(&self) -> bool {
        false
    }
}

/// The `Objects` service over an [`ObjectSource`] (put it behind the token
/// check with [`crate::objects_server`]).
#[derive(Clone)]
pub struct ObjectsService {
    source: Arc<dyn ObjectSource>,
}

impl ObjectsService {
    pub fn new(source: impl ObjectSource) -> ObjectsService {
        ObjectsService {
            source: Arc::new(source),
        }
    }
}

impl NamedService for ObjectsService {
    const NAME: &'static str = "ferray.v1.Objects";
}

impl tower::Service<http::Request<Body>> for ObjectsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let source = self.source.clone();
        Box::pin(async move {
            Ok(match serve(&*source, req).await {
                Ok(body) => {
                    let mut resp = http::Response::new(body);
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    resp
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

async fn serve(source: &dyn ObjectSource, req: http::Request<Body>) -> Result<Body, Status> {
    if req.uri().path() != PULL_PATH {
        return Err(Status::unimplemented(format!(
            "no method {} on the objects service",
            req.uri().path()
        )));
    }
    // One small message: a gRPC prefix and an `ObjectKey`.
    let body = http_body_util::Limited::new(req.into_body(), 1024)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("a pull request: {e}")))?
        .to_bytes();
    let msg = match body.split_first() {
        Some((0, rest)) if rest.len() >= 4 => {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest.get(4..)
                .filter(|m| m.len() == len)
                .ok_or_else(|| Status::invalid_argument("a pull request of the wrong length"))?
        }
        Some((1, _)) => return Err(Status::unimplemented("compressed pull requests")),
        _ => return Err(Status::invalid_argument("a pull request without a message")),
    };
    let key = v1::ObjectKey::decode(msg)
        .map_err(|e| Status::invalid_argument(format!("a pull request: {e}")))?;
    let id = object_id(&key.id).map_err(|e| crate::to_status(&e))?;
    let bytes = source.object(&id).map_err(|e| crate::to_status(&e))?;
    #[cfg(feature = "testing")]
    let corrupt = source.corrupt_next();
    #[cfg(not(feature = "testing"))]
    let corrupt = false;
    if corrupt {
        tracing::warn!("testing: corrupting a chunk of object {}", id.short());
    }
    Ok(Body::new(http_body_util::StreamBody::new(frames(
        id, bytes, corrupt,
    ))))
}

/// The response body: per chunk a header frame and the chunk's bytes (a
/// slice of the stored object, not a copy), then the `grpc-status` trailer.
fn frames(
    id: ObjectId,
    bytes: Bytes,
    corrupt: bool,
) -> impl futures::Stream<Item = Result<http_body::Frame<Bytes>, Status>> + Send + 'static {
    let chunks = crate::chunk_iter(id, bytes).flat_map(move |mut head| {
        let mut data = std::mem::take(&mut head.data);
        if corrupt && head.offset == 0 && !data.is_empty() {
            let mut d = data.to_vec();
            d[0] ^= 0xff;
            data = Bytes::from(d);
        }
        let data_key_len = 1 + prost::length_delimiter_len(data.len());
        let msg_len = head.encoded_len() + data_key_len + data.len();
        let mut h = BytesMut::with_capacity(5 + head.encoded_len() + data_key_len);
        h.put_u8(0);
        // A chunk is at most CHUNK_BYTES plus a small header: it fits a u32.
        h.put_u32(msg_len as u32);
        head.encode_raw(&mut h);
        prost::encoding::encode_key(4, prost::encoding::WireType::LengthDelimited, &mut h);
        prost::encoding::encode_varint(data.len() as u64, &mut h);
        let head = http_body::Frame::data(h.freeze());
        if data.is_empty() {
            vec![head]
        } else {
            vec![head, http_body::Frame::data(data)]
        }
    });
    let mut ok = http::HeaderMap::new();
    ok.insert("grpc-status", http::HeaderValue::from_static("0"));
    futures::stream::iter(
        chunks
            .chain(std::iter::once(http_body::Frame::trailers(ok)))
            .map(Ok),
    )
}

/// A client of `Objects` (a channel with the cluster token).
#[derive(Clone)]
pub struct ObjectsClient(pub(crate) Authed);

impl ObjectsClient {
    /// Parses a `Pull` response body given as its data frames, as [`pull`]
    /// does, expecting object `expect` (any object when `None`). Only for
    /// the fuzzer (`fuzz/`): it reaches the parser without a server.
    #[doc(hidden)]
    pub fn parse_frames(
        expect: Option<ObjectId>,
        frames: impl IntoIterator<Item = Bytes>,
    ) -> Result<(ObjectId, Bytes), Error> {
        let mut parser = Parser::new(Assembler::new(expect, crate::MAX_OBJECT_BYTES));
        for frame in frames {
            parser.feed(frame)?;
        }
        parser.finish()
    }
}

/// Pull object `id` from the object server behind `client`, checked against
/// the id (`addr` names the server in errors).
pub async fn pull(client: &mut ObjectsClient, addr: &str, id: ObjectId) -> Result<Bytes, Error> {
    let what = || format!("pulling from {addr}");
    let key = v1::ObjectKey { id: id_bytes(&id) };
    let mut msg = BytesMut::with_capacity(5 + key.encoded_len());
    msg.put_u8(0);
    msg.put_u32(key.encoded_len() as u32);
    key.encode_raw(&mut msg);
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(PULL_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(http_body_util::Full::new(msg.freeze())))
        .map_err(|e| Error::System(format!("{}: {e}", what())))?;
    let resp = client
        .0
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| Error::System(format!("{}: unreachable: {e}", what())))?;
    if let Some(s) = Status::from_header_map(resp.headers()).filter(|s| s.code() != tonic::Code::Ok)
    {
        return Err(from_status(&what(), s));
    }
    if resp.status() != http::StatusCode::OK {
        return Err(Error::System(format!(
            "{}: the server answered HTTP {}",
            what(),
            resp.status()
        )));
    }
    let mut body = resp.into_body();
    let mut parser = Parser::new(Assembler::new(Some(id), crate::MAX_OBJECT_BYTES));
    let mut status = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|s| from_status(&what(), s))?;
        match frame.into_data() {
            Ok(data) => parser.feed(data)?,
            Err(frame) => {
                if let Some(t) = frame.trailers_ref() {
                    status = Status::from_header_map(t);
                }
            }
        }
    }
    match status {
        Some(s) if s.code() == tonic::Code::Ok => {}
        Some(s) => return Err(from_status(&what(), s)),
        None => {
            return Err(Error::System(format!(
                "{}: the transfer ended without a status",
                what()
            )));
        }
    }
    let (_, bytes) = parser.finish()?;
    Ok(bytes)
}

/// Where the parser is in the stream of length-prefixed `Chunk` messages.
enum State {
    /// Reading the 5-byte gRPC prefix (`have` of it so far).
    Prefix { have: usize },
    /// Reading a message's fields before `data` into `head`; `left` bytes
    /// of the message have not been taken yet.
    Head { left: usize },
    /// Copying `left` bytes of `data`, which ends the message.
    Data { left: usize },
}

/// Parses `Chunk` messages from body frames of any size and boundaries,
/// handing their bytes to an [`Assembler`] without an intermediate buffer.
struct Parser {
    state: State,
    prefix: [u8; 5],
    head: Vec<u8>,
    asm: Assembler,
}

fn bad(what: &str) -> Error {
    Error::System(format!("a malformed object transfer: {what}"))
}

impl Parser {
    fn new(asm: Assembler) -> Parser {
        Parser {
            state: State::Prefix { have: 0 },
            prefix: [0; 5],
            head: Vec::with_capacity(HEAD_MAX),
            asm,
        }
    }

    fn feed(&mut self, mut data: Bytes) -> Result<(), Error> {
        while !data.is_empty() {
            match self.state {
                State::Prefix { have } => {
                    let n = (5 - have).min(data.len());
                    self.prefix[have..have + n].copy_from_slice(&data[..n]);
                    data = data.slice(n..);
                    if have + n < 5 {
                        self.state = State::Prefix { have: have + n };
                        continue;
                    }
                    if self.prefix[0] != 0 {
                        return Err(bad("a compressed message"));
                    }
                    let len = u32::from_be_bytes([
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                        self.prefix[4],
                    ]) as usize;
                    if len > MAX_MESSAGE_BYTES {
                        return Err(bad("a message past the size limit"));
                    }
                    self.head.clear();
                    self.state = State::Head { left: len };
                    if len == 0 {
                        self.parse_head()?;
                    }
                }
                State::Head { left } => {
                    // Take no more than a header can need, so `data`'s bytes
                    // are not copied here.
                    let room = HEAD_MAX.saturating_sub(self.head.len());
                    let n = left.min(data.len()).min(room);
                    if n == 0 {
                        return Err(bad("a chunk header past its size limit"));
                    }
                    self.head.extend_from_slice(&data[..n]);
                    data = data.slice(n..);
                    self.state = State::Head { left: left - n };
                    self.parse_head()?;
                }
                State::Data { left } => {
                    let n = left.min(data.len());
                    self.asm.data(&data[..n]);
                    data = data.slice(n..);
                    self.state = if n == left {
                        State::Prefix { have: 0 }
                    } else {
                        State::Data { left: left - n }
                    };
                }
            }
        }
        Ok(())
    }

    /// Parse the fields in `head`; once `data`'s key and length are there,
    /// start the chunk and pass on the bytes of `data` already taken.
    fn parse_head(&mut self) -> Result<(), Error> {
        let State::Head { left } = self.state else {
            return Ok(());
        };
        let mut fields = ChunkHead::default();
        let mut pos = 0;
        while let Some((key, n)) = varint(&self.head[pos..])? {
            let field = key >> 3;
            let wire = key & 7;
            let at = pos + n;
            match (field, wire) {
                (1 | 4, 2) => {
                    let Some((len, m)) = varint(&self.head[at..])? else {
                        break;
                    };
                    let start = at + m;
                    if field == 4 {
                        // `data` ends the message: what follows is its bytes.
                        let len = usize::try_from(len).map_err(|_| bad("a huge chunk"))?;
                        let after_key = self.head.len() - start + left;
                        if after_key != len {
                            return Err(bad("fields after a chunk's data"));
                        }
                        self.asm
                            .begin(fields.id.as_deref(), fields.total, fields.offset, len)?;
                        let taken = self.head.split_off(start);
                        self.state = if len == 0 {
                            State::Prefix { have: 0 }
                        } else {
                            State::Data { left: len }
                        };
                        if !taken.is_empty() {
                            self.feed(Bytes::from(taken))?;
                        }
                        return Ok(());
                    }
                    let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l))
                    else {
                        return Err(bad("a huge id"));
                    };
                    if end > self.head.len() {
                        break;
                    }
                    fields.id = Some(self.head[start..end].to_vec());
                    pos = end;
                }
                (2 | 3, 0) => {
                    let Some((v, m)) = varint(&self.head[at..])? else {
                        break;
                    };
                    if field == 2 {
                        fields.total = v;
                    } else {
                        fields.offset = v;
                    }
                    pos = at + m;
                }
                _ => return Err(bad("an unexpected field in a chunk")),
            }
        }
        if left == 0 {
            // The whole message is here and has no `data` (an empty chunk).
            if pos != self.head.len() {
                return Err(bad("a truncated chunk header"));
            }
            self.asm
                .begin(fields.id.as_deref(), fields.total, fields.offset, 0)?;
            self.state = State::Prefix { have: 0 };
        }
        Ok(())
    }

    fn finish(self) -> Result<(ObjectId, Bytes), Error> {
        if !matches!(self.state, State::Prefix { have: 0 }) {
            return Err(bad("the transfer ended inside a message"));
        }
        self.asm.finish()
    }
}

#[derive(Default)]
struct ChunkHead {
    id: Option<Vec<u8>>,
    total: u64,
    offset: u64,
}

/// A varint at the start of `b` and its length; `None` while incomplete.
fn varint(b: &[u8]) -> Result<Option<(u64, usize)>, Error> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if b.len() >= 10 {
        return Err(bad("a varint of more than 10 bytes"));
    }
    Ok(None)
}

/// Reassembles an object from its chunks in order and checks it against its
/// id (the expected one, or the one the chunks name). Out-of-order or
/// overlong chunks, a size past the limit, and bytes that do not hash to the
/// id are errors; the bytes are never returned then.
pub(crate) struct Assembler {
    id: Option<ObjectId>,
    max: u64,
    total: u64,
    buf: Option<Vec<u8>>,
    /// Hashed as it arrives, so the check costs no second pass.
    hasher: blake3::Hasher,
    /// Bytes the current chunk still owes.
    owed: usize,
}

impl Assembler {
    pub(crate) fn new(expect: Option<ObjectId>, max: u64) -> Assembler {
        Assembler {
            id: expect,
            max,
            total: 0,
            buf: None,
            hasher: blake3::Hasher::new(),
            owed: 0,
        }
    }

    /// A chunk of `len` bytes at `offset` of a `total`-byte object `id`.
    pub(crate) fn begin(
        &mut self,
        id: Option<&[u8]>,
        total: u64,
        offset: u64,
        len: usize,
    ) -> Result<(), Error> {
        let cid = object_id(id.unwrap_or_default())?;
        match self.id {
            Some(want) if want != cid => {
                return Err(Error::InvalidArgument(format!(
                    "a chunk of {} arrived for {}",
                    cid.short(),
                    want.short()
                )));
            }
            _ => self.id = Some(cid),
        }
        if self.owed != 0 {
            return Err(bad("a chunk began before the last one ended"));
        }
        let b = match &mut self.buf {
            Some(b) => b,
            None => {
                if total > self.max {
                    return Err(Error::InvalidArgument(format!(
                        "an object of {total} bytes is larger than the limit of {}",
                        self.max
                    )));
                }
                self.total = total;
                // The claimed size is reserved up to 1 GiB (untouched pages
                // cost nothing); beyond that the buffer grows as chunks come.
                let first = if total <= 1 << 30 {
                    total as usize
                } else {
                    2 * CHUNK_BYTES
                };
                self.buf.insert(crate::buffers::take(first))
            }
        };
        if total != self.total
            || offset != b.len() as u64
            || b.len() as u64 + len as u64 > self.total
        {
            return Err(Error::InvalidArgument(format!(
                "a chunk at offset {offset} of {len} bytes does not follow {} of {} bytes",
                b.len(),
                self.total
            )));
        }
        self.owed = len;
        Ok(())
    }

    /// Bytes of the current chunk (never more than [`Assembler::begin`]
    /// announced: the parser hands over exactly that many).
    pub(crate) fn data(&mut self, d: &[u8]) {
        debug_assert!(d.len() <= self.owed);
        self.owed -= d.len();
        self.hasher.update(d);
        if let Some(b) = &mut self.buf {
            b.extend_from_slice(d);
        }
    }

    pub(crate) fn finish(self) -> Result<(ObjectId, Bytes), Error> {
        let Some(id) = self.id else {
            return Err(Error::InvalidArgument("an empty transfer".into()));
        };
        let bytes = self.buf.map(crate::buffers::freeze).unwrap_or_default();
        if bytes.len() as u64 != self.total || self.owed != 0 {
            return Err(Error::System(format!(
                "the transfer of {} ended after {} of {} bytes",
                id.short(),
                bytes.len(),
                self.total
            )));
        }
        if self.hasher.finalize().as_bytes() != id.as_bytes() {
            return Err(Error::Corrupt { id: id.to_hex() });
        }
        Ok((id, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn object(len: usize) -> Bytes {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The data frames the server writes for `bytes`, joined.
    fn wire(bytes: &Bytes, corrupt: bool) -> Vec<u8> {
        let id = ObjectId::of(bytes);
        let frames: Vec<_> =
            futures::executor::block_on(frames(id, bytes.clone(), corrupt).collect::<Vec<_>>());
        let mut out = Vec::new();
        let mut trailers = 0;
        for f in frames {
            match f.expect("frame").into_data() {
                Ok(d) => out.extend_from_slice(&d),
                Err(f) => {
                    let t = f.trailers_ref().expect("trailers");
                    assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
                    trailers += 1;
                }
            }
        }
        assert_eq!(trailers, 1);
        out
    }

    /// Parse `wire` fed in pieces of `piece` bytes.
    fn parse(wire: &[u8], expect: ObjectId, piece: usize) -> Result<Bytes, Error> {
        let mut p = Parser::new(Assembler::new(Some(expect), crate::MAX_OBJECT_BYTES));
        for part in wire.chunks(piece.max(1)) {
            p.feed(Bytes::copy_from_slice(part))?;
        }
        p.finish().map(|(_, b)| b)
    }

    #[test]
    fn chunks_are_read_back_whatever_the_frame_boundaries() {
        for len in [
            0,
            1,
            100,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES + CHUNK_BYTES / 2,
        ] {
            let bytes = object(len);
            let id = ObjectId::of(&bytes);
            let w = wire(&bytes, false);
            for piece in [1, 5, 63, 4096, 1 << 20, usize::MAX] {
                if piece == 1 && len > CHUNK_BYTES {
                    continue; // a byte at a time is slow for megabytes; 5 covers it
                }
                let got = parse(&w, id, piece).unwrap_or_else(|e| panic!("{len}/{piece}: {e}"));
                assert_eq!(got, bytes, "object of {len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn prost_encoded_chunks_parse_too() {
        // What a generic gRPC server would send: prost's encoding, one
        // message per chunk.
        let bytes = object(2 * CHUNK_BYTES + 10);
        let id = ObjectId::of(&bytes);
        let mut w = Vec::new();
        let chunks: Vec<v1::Chunk> =
            futures::executor::block_on(crate::chunks(id, bytes.clone()).collect());
        for c in chunks {
            w.push(0);
            w.extend_from_slice(&(c.encoded_len() as u32).to_be_bytes());
            c.encode(&mut w).expect("encode");
        }
        assert_eq!(parse(&w, id, 777).expect("parse"), bytes);
    }

    #[test]
    fn a_corrupted_byte_is_an_error_never_the_bytes() {
        let bytes = object(CHUNK_BYTES + 5);
        let id = ObjectId::of(&bytes);
        let w = wire(&bytes, true);
        assert!(matches!(parse(&w, id, 4096), Err(Error::Corrupt { .. })));
        // A flipped byte on the wire, anywhere in the data, too.
        let mut w = wire(&bytes, false);
        let at = w.len() - 3;
        w[at] ^= 1;
        assert!(matches!(parse(&w, id, 4096), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn malformed_streams_are_errors() {
        let bytes = object(CHUNK_BYTES + 5);
        let id = ObjectId::of(&bytes);
        let w = wire(&bytes, false);
        // Cut short, at any point.
        for cut in [1, 4, 5, 20, 60, CHUNK_BYTES, w.len() - 1] {
            assert!(parse(&w[..cut], id, 4096).is_err(), "cut at {cut}");
        }
        // Another object than the one asked for.
        let other = ObjectId::of(b"other");
        assert!(parse(&w, other, 4096).is_err());
        // Compressed.
        let mut c = w.clone();
        c[0] = 1;
        assert!(parse(&c, id, 4096).is_err());
        // A message length past the limit.
        let mut c = w.clone();
        c[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&c, id, 4096).is_err());
        // A field after `data`: the message claims one byte more than its
        // data's length.
        let mut m = Vec::new();
        let head = v1::Chunk {
            id: id_bytes(&id),
            total: 3,
            offset: 0,
            data: Bytes::new(),
        };
        head.encode_raw(&mut m);
        m.extend_from_slice(&[0x22, 3, 1, 2, 3, 0x10]);
        let mut c = vec![0];
        c.extend_from_slice(&(m.len() as u32).to_be_bytes());
        c.extend_from_slice(&m);
        assert!(parse(&c, id, 4096).is_err());
        // A header that never ends (an id field claiming 1000 bytes).
        let mut m = vec![0x0a];
        m.extend_from_slice(&[0xe8, 0x07]);
        m.extend_from_slice(&[0u8; 1000]);
        let mut c = vec![0];
        c.extend_from_slice(&(m.len() as u32).to_be_bytes());
        c.extend_from_slice(&m);
        assert!(parse(&c, id, 4096).is_err());
        // A chunk out of place: the second chunk first.
        let first_len = 5 + u32::from_be_bytes([w[1], w[2], w[3], w[4]]) as usize;
        let mut c = w[first_len..].to_vec();
        c.extend_from_slice(&w[..first_len]);
        assert!(parse(&c, id, 4096).is_err());
    }

    #[test]
    fn freed_large_objects_lend_their_buffers_to_the_next() {
        // A size class no other test uses.
        let bytes = object(37 << 20);
        let id = ObjectId::of(&bytes);
        let w = wire(&bytes, false);
        let first = parse(&w, id, 1 << 20).expect("first");
        let at = first.as_ptr();
        assert_eq!(first, bytes);
        drop(first);
        assert!(crate::buffers::pooled_bytes() >= 38 << 20);
        let second = parse(&w, id, 1 << 20).expect("second");
        assert_eq!(second.as_ptr(), at, "the freed buffer was used again");
        assert_eq!(second, bytes);
    }
}
