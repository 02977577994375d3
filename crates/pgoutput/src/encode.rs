//! Messages to bytes, exactly as the server writes them. Used to test the decoder (every
//! message survives a round trip) and by tools that need to fabricate a stream.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::*;

fn cstring(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn xid(b: &mut BytesMut, x: Option<Xid>) {
    if let Some(x) = x {
        b.put_u32(x);
    }
}

fn tuple(b: &mut BytesMut, t: &Tuple) {
    b.put_u16(t.0.len() as u16);
    for v in &t.0 {
        match v {
            Value::Null => b.put_u8(b'n'),
            Value::UnchangedToast => b.put_u8(b'u'),
            Value::Text(d) => {
                b.put_u8(b't');
                b.put_u32(d.len() as u32);
                b.put_slice(d);
            }
            Value::Binary(d) => {
                b.put_u8(b'b');
                b.put_u32(d.len() as u32);
                b.put_slice(d);
            }
        }
    }
}

fn old(b: &mut BytesMut, o: &OldTuple) {
    match o {
        OldTuple::Key(t) => {
            b.put_u8(b'K');
            tuple(b, t);
        }
        OldTuple::Full(t) => {
            b.put_u8(b'O');
            tuple(b, t);
        }
    }
}

fn prepare(b: &mut BytesMut, tag: u8, p: &PrepareInfo, with_flags: bool) {
    b.put_u8(tag);
    if with_flags {
        b.put_u8(p.flags);
    }
    b.put_u64(p.prepare_lsn);
    b.put_u64(p.end_lsn);
    b.put_i64(p.prepare_time);
    b.put_u32(p.xid);
    cstring(b, &p.gid);
}

/// The bytes of `m`. The streamed xid of changes is written when the message carries one.
pub fn encode(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    match m {
        Message::Begin(x) => {
            b.put_u8(b'B');
            b.put_u64(x.final_lsn);
            b.put_i64(x.commit_time);
            b.put_u32(x.xid);
        }
        Message::Commit(x) => {
            b.put_u8(b'C');
            b.put_u8(x.flags);
            b.put_u64(x.commit_lsn);
            b.put_u64(x.end_lsn);
            b.put_i64(x.commit_time);
        }
        Message::Origin(x) => {
            b.put_u8(b'O');
            b.put_u64(x.commit_lsn);
            cstring(&mut b, &x.name);
        }
        Message::Relation(x) => {
            b.put_u8(b'R');
            xid(&mut b, x.xid);
            b.put_u32(x.oid);
            cstring(&mut b, &x.namespace);
            cstring(&mut b, &x.name);
            b.put_u8(x.replica_identity);
            b.put_u16(x.columns.len() as u16);
            for c in &x.columns {
                b.put_u8(c.flags);
                cstring(&mut b, &c.name);
                b.put_u32(c.type_oid);
                b.put_i32(c.type_modifier);
            }
        }
        Message::Type(x) => {
            b.put_u8(b'Y');
            xid(&mut b, x.xid);
            b.put_u32(x.oid);
            cstring(&mut b, &x.namespace);
            cstring(&mut b, &x.name);
        }
        Message::Insert(x) => {
            b.put_u8(b'I');
            xid(&mut b, x.xid);
            b.put_u32(x.relation);
            b.put_u8(b'N');
            tuple(&mut b, &x.new);
        }
        Message::Update(x) => {
            b.put_u8(b'U');
            xid(&mut b, x.xid);
            b.put_u32(x.relation);
            if let Some(o) = &x.old {
                old(&mut b, o);
            }
            b.put_u8(b'N');
            tuple(&mut b, &x.new);
        }
        Message::Delete(x) => {
            b.put_u8(b'D');
            xid(&mut b, x.xid);
            b.put_u32(x.relation);
            old(&mut b, &x.old);
        }
        Message::Truncate(x) => {
            b.put_u8(b'T');
            xid(&mut b, x.xid);
            b.put_u32(x.relations.len() as u32);
            b.put_u8(x.options);
            for r in &x.relations {
                b.put_u32(*r);
            }
        }
        Message::Message(x) => {
            b.put_u8(b'M');
            xid(&mut b, x.xid);
            b.put_u8(x.flags);
            b.put_u64(x.lsn);
            cstring(&mut b, &x.prefix);
            b.put_u32(x.content.len() as u32);
            b.put_slice(&x.content);
        }
        Message::StreamStart(x) => {
            b.put_u8(b'S');
            b.put_u32(x.xid);
            b.put_u8(x.first_segment as u8);
        }
        Message::StreamStop => b.put_u8(b'E'),
        Message::StreamCommit(x) => {
            b.put_u8(b'c');
            b.put_u32(x.xid);
            b.put_u8(x.flags);
            b.put_u64(x.commit_lsn);
            b.put_u64(x.end_lsn);
            b.put_i64(x.commit_time);
        }
        Message::StreamAbort(x) => {
            b.put_u8(b'A');
            b.put_u32(x.xid);
            b.put_u32(x.subxid);
            if let (Some(l), Some(t)) = (x.abort_lsn, x.abort_time) {
                b.put_u64(l);
                b.put_i64(t);
            }
        }
        Message::BeginPrepare(p) => prepare(&mut b, b'b', p, false),
        Message::Prepare(p) => prepare(&mut b, b'P', p, true),
        Message::StreamPrepare(p) => prepare(&mut b, b'p', p, true),
        Message::CommitPrepared(x) => {
            b.put_u8(b'K');
            b.put_u8(x.flags);
            b.put_u64(x.commit_lsn);
            b.put_u64(x.end_lsn);
            b.put_i64(x.commit_time);
            b.put_u32(x.xid);
            cstring(&mut b, &x.gid);
        }
        Message::RollbackPrepared(x) => {
            b.put_u8(b'r');
            b.put_u8(x.flags);
            b.put_u64(x.prepare_end_lsn);
            b.put_u64(x.rollback_end_lsn);
            b.put_i64(x.prepare_time);
            b.put_i64(x.rollback_time);
            b.put_u32(x.xid);
            cstring(&mut b, &x.gid);
        }
    }
    b.freeze()
}
