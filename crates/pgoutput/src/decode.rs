//! Bytes to messages.

use bytes::{Buf, Bytes};

use crate::message::*;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("pgoutput message truncated: {0} needs more bytes")]
    Truncated(&'static str),
    #[error("unknown pgoutput message type {0:#04x}")]
    UnknownMessage(u8),
    #[error("unknown tuple value kind {0:#04x}")]
    UnknownValueKind(u8),
    #[error("unexpected byte {found:#04x} in {what}")]
    Unexpected { what: &'static str, found: u8 },
    #[error("string in {0} is not terminated or not UTF-8")]
    BadString(&'static str),
    #[error("{0} trailing byte(s) after a {1} message")]
    Trailing(usize, &'static str),
    #[error("empty pgoutput message")]
    Empty,
}

/// Decodes one message at a time, tracking whether a stream of an in-progress transaction
/// is open (inside one, changes carry their transaction's xid).
#[derive(Clone, Debug)]
pub struct Decoder {
    protocol_version: u32,
    in_stream: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(1)
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), Error> {
        if self.buf.remaining() < n {
            Err(Error::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, Error> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, Error> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, Error> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    fn cstring(&mut self, what: &'static str) -> Result<String, Error> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::BadString(what))?;
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        String::from_utf8(s.to_vec()).map_err(|_| Error::BadString(what))
    }
    fn done(&self, what: &'static str) -> Result<(), Error> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(Error::Trailing(n, what)),
        }
    }
}

impl Decoder {
    /// A decoder for the protocol version given in START_REPLICATION.
    pub fn new(protocol_version: u32) -> Decoder {
        Decoder {
            protocol_version,
            in_stream: false,
        }
    }

    /// Whether a Stream Start was seen without its Stream Stop.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decode one message (the payload of one XLogData).
    pub fn decode(&mut self, data: Bytes) -> Result<Message, Error> {
        let mut r = Reader { buf: data };
        if r.buf.is_empty() {
            return Err(Error::Empty);
        }
        let tag = r.u8("message type")?;
        let streamed = self.in_stream && self.protocol_version >= 2;
        let xid = |r: &mut Reader| -> Result<Option<Xid>, Error> {
            if streamed {
                Ok(Some(r.u32("streamed xid")?))
            } else {
                Ok(None)
            }
        };
        let (msg, what) = match tag {
            b'B' => (
                Message::Begin(Begin {
                    final_lsn: r.u64("Begin")?,
                    commit_time: r.i64("Begin")?,
                    xid: r.u32("Begin")?,
                }),
                "Begin",
            ),
            b'C' => (
                Message::Commit(Commit {
                    flags: r.u8("Commit")?,
                    commit_lsn: r.u64("Commit")?,
                    end_lsn: r.u64("Commit")?,
                    commit_time: r.i64("Commit")?,
                }),
                "Commit",
            ),
            b'O' => (
                Message::Origin(Origin {
                    commit_lsn: r.u64("Origin")?,
                    name: r.cstring("Origin")?,
                }),
                "Origin",
            ),
            b'R' => {
                let xid = xid(&mut r)?;
                let oid = r.u32("Relation")?;
                let namespace = r.cstring("Relation namespace")?;
                let name = r.cstring("Relation name")?;
                let replica_identity = r.u8("Relation")?;
                let n = r.u16("Relation column count")?;
                let mut columns = Vec::with_capacity(n.min(1600) as usize);
                for _ in 0..n {
                    columns.push(Column {
                        flags: r.u8("Relation column")?,
                        name: r.cstring("Relation column name")?,
                        type_oid: r.u32("Relation column")?,
                        type_modifier: r.i32("Relation column")?,
                    });
                }
                (
                    Message::Relation(Relation {
                        xid,
                        oid,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    }),
                    "Relation",
                )
            }
            b'Y' => (
                Message::Type(TypeMessage {
                    xid: xid(&mut r)?,
                    oid: r.u32("Type")?,
                    namespace: r.cstring("Type namespace")?,
                    name: r.cstring("Type name")?,
                }),
                "Type",
            ),
            b'I' => {
                let xid = xid(&mut r)?;
                let relation = r.u32("Insert")?;
                expect(&mut r, b'N', "Insert")?;
                let new = tuple(&mut r)?;
                (Message::Insert(Insert { xid, relation, new }), "Insert")
            }
            b'U' => {
                let xid = xid(&mut r)?;
                let relation = r.u32("Update")?;
                let (old, new) = match r.u8("Update")? {
                    b'N' => (None, tuple(&mut r)?),
                    kind @ (b'K' | b'O') => {
                        let old = old_tuple(kind, tuple(&mut r)?);
                        expect(&mut r, b'N', "Update")?;
                        (Some(old), tuple(&mut r)?)
                    }
                    found => {
                        return Err(Error::Unexpected {
                            what: "Update",
                            found,
                        })
                    }
                };
                (
                    Message::Update(Update {
                        xid,
                        relation,
                        old,
                        new,
                    }),
                    "Update",
                )
            }
            b'D' => {
                let xid = xid(&mut r)?;
                let relation = r.u32("Delete")?;
                let kind = r.u8("Delete")?;
                if kind != b'K' && kind != b'O' {
                    return Err(Error::Unexpected {
                        what: "Delete",
                        found: kind,
                    });
                }
                let old = old_tuple(kind, tuple(&mut r)?);
                (Message::Delete(Delete { xid, relation, old }), "Delete")
            }
            b'T' => {
                let xid = xid(&mut r)?;
                let n = r.u32("Truncate")?;
                let options = r.u8("Truncate")?;
                r.need(n as usize * 4, "Truncate relations")?;
                let relations = (0..n).map(|_| r.buf.get_u32()).collect();
                (
                    Message::Truncate(Truncate {
                        xid,
                        options,
                        relations,
                    }),
                    "Truncate",
                )
            }
            b'M' => {
                let xid = xid(&mut r)?;
                let flags = r.u8("Message")?;
                let lsn = r.u64("Message")?;
                let prefix = r.cstring("Message prefix")?;
                let len = r.u32("Message")? as usize;
                let content = r.bytes(len, "Message content")?;
                (
                    Message::Message(LogicalMessage {
                        xid,
                        flags,
                        lsn,
                        prefix,
                        content,
                    }),
                    "Message",
                )
            }
            b'S' => {
                let m = StreamStart {
                    xid: r.u32("Stream Start")?,
                    first_segment: r.u8("Stream Start")? == 1,
                };
                self.in_stream = true;
                (Message::StreamStart(m), "Stream Start")
            }
            b'E' => {
                self.in_stream = false;
                (Message::StreamStop, "Stream Stop")
            }
            b'c' => (
                Message::StreamCommit(StreamCommit {
                    xid: r.u32("Stream Commit")?,
                    flags: r.u8("Stream Commit")?,
                    commit_lsn: r.u64("Stream Commit")?,
                    end_lsn: r.u64("Stream Commit")?,
                    commit_time: r.i64("Stream Commit")?,
                }),
                "Stream Commit",
            ),
            b'A' => {
                let xid = r.u32("Stream Abort")?;
                let subxid = r.u32("Stream Abort")?;
                // Protocol 4 with parallel streaming adds the abort position and time.
                let (abort_lsn, abort_time) = if r.buf.remaining() >= 16 {
                    (Some(r.u64("Stream Abort")?), Some(r.i64("Stream Abort")?))
                } else {
                    (None, None)
                };
                (
                    Message::StreamAbort(StreamAbort {
                        xid,
                        subxid,
                        abort_lsn,
                        abort_time,
                    }),
                    "Stream Abort",
                )
            }
            b'b' => (
                Message::BeginPrepare(PrepareInfo {
                    flags: 0,
                    prepare_lsn: r.u64("Begin Prepare")?,
                    end_lsn: r.u64("Begin Prepare")?,
                    prepare_time: r.i64("Begin Prepare")?,
                    xid: r.u32("Begin Prepare")?,
                    gid: r.cstring("Begin Prepare gid")?,
                }),
                "Begin Prepare",
            ),
            b'P' | b'p' => {
                let info = prepare_info(&mut r)?;
                if tag == b'P' {
                    (Message::Prepare(info), "Prepare")
                } else {
                    (Message::StreamPrepare(info), "Stream Prepare")
                }
            }
            b'K' => (
                Message::CommitPrepared(CommitPrepared {
                    flags: r.u8("Commit Prepared")?,
                    commit_lsn: r.u64("Commit Prepared")?,
                    end_lsn: r.u64("Commit Prepared")?,
                    commit_time: r.i64("Commit Prepared")?,
                    xid: r.u32("Commit Prepared")?,
                    gid: r.cstring("Commit Prepared gid")?,
                }),
                "Commit Prepared",
            ),
            b'r' => (
                Message::RollbackPrepared(RollbackPrepared {
                    flags: r.u8("Rollback Prepared")?,
                    prepare_end_lsn: r.u64("Rollback Prepared")?,
                    rollback_end_lsn: r.u64("Rollback Prepared")?,
                    prepare_time: r.i64("Rollback Prepared")?,
                    rollback_time: r.i64("Rollback Prepared")?,
                    xid: r.u32("Rollback Prepared")?,
                    gid: r.cstring("Rollback Prepared gid")?,
                }),
                "Rollback Prepared",
            ),
            other => return Err(Error::UnknownMessage(other)),
        };
        r.done(what)?;
        Ok(msg)
    }
}

fn expect(r: &mut Reader, want: u8, what: &'static str) -> Result<(), Error> {
    match r.u8(what)? {
        b if b == want => Ok(()),
        found => Err(Error::Unexpected { what, found }),
    }
}

fn old_tuple(kind: u8, t: Tuple) -> OldTuple {
    if kind == b'K' {
        OldTuple::Key(t)
    } else {
        OldTuple::Full(t)
    }
}

fn tuple(r: &mut Reader) -> Result<Tuple, Error> {
    let n = r.u16("TupleData column count")?;
    let mut values = Vec::with_capacity(n.min(1600) as usize);
    for _ in 0..n {
        values.push(match r.u8("TupleData value kind")? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => {
                let len = r.u32("TupleData text length")? as usize;
                Value::Text(r.bytes(len, "TupleData text")?)
            }
            b'b' => {
                let len = r.u32("TupleData binary length")? as usize;
                Value::Binary(r.bytes(len, "TupleData binary")?)
            }
            other => return Err(Error::UnknownValueKind(other)),
        });
    }
    Ok(Tuple(values))
}

fn prepare_info(r: &mut Reader) -> Result<PrepareInfo, Error> {
    Ok(PrepareInfo {
        flags: r.u8("Prepare")?,
        prepare_lsn: r.u64("Prepare")?,
        end_lsn: r.u64("Prepare")?,
        prepare_time: r.i64("Prepare")?,
        xid: r.u32("Prepare")?,
        gid: r.cstring("Prepare gid")?,
    })
}
