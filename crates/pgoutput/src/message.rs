//! The pgoutput messages, as PostgreSQL's documentation ("Logical Replication Message
//! Formats") describes them.

use bytes::Bytes;

/// A WAL position.
pub type Lsn = u64;
/// Microseconds since 2000-01-01 00:00 UTC.
pub type Timestamp = i64;
pub type Oid = u32;
pub type Xid = u32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(PrepareInfo),
    Prepare(PrepareInfo),
    CommitPrepared(CommitPrepared),
    RollbackPrepared(RollbackPrepared),
    StreamPrepare(PrepareInfo),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_time: Timestamp,
    pub xid: Xid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The end of the commit record: where a restart continues.
    pub end_lsn: Lsn,
    pub commit_time: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Bit 1: part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: Oid,
    pub type_modifier: i32,
}

impl Column {
    pub fn is_key(&self) -> bool {
        self.flags & 1 == 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// Set inside a stream (protocol 2+).
    pub xid: Option<Xid>,
    pub oid: Oid,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeMessage {
    pub xid: Option<Xid>,
    pub oid: Oid,
    pub namespace: String,
    pub name: String,
}

/// One column's value in a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    /// An unchanged TOASTed value: not sent, must not be written.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple(pub Vec<Value>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<Xid>,
    pub relation: Oid,
    pub new: Tuple,
}

/// The old row of an UPDATE or DELETE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns only (others null).
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<Xid>,
    pub relation: Oid,
    /// Present when the key changed, or always under REPLICA IDENTITY FULL.
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<Xid>,
    pub relation: Oid,
    pub old: OldTuple,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<Xid>,
    /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relations: Vec<Oid>,
}

impl Truncate {
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }
    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    pub xid: Option<Xid>,
    /// Bit 1: transactional.
    pub flags: u8,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: Xid,
    /// The first segment of this transaction's stream.
    pub first_segment: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: Xid,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: Xid,
    pub subxid: Xid,
    /// Protocol 4 (parallel streaming) only.
    pub abort_lsn: Option<Lsn>,
    pub abort_time: Option<Timestamp>,
}

/// Begin Prepare, Prepare and Stream Prepare share their layout (Begin Prepare has no
/// flags byte; its `flags` is 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareInfo {
    pub flags: u8,
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_time: Timestamp,
    pub xid: Xid,
    pub gid: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPrepared {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: Timestamp,
    pub xid: Xid,
    pub gid: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackPrepared {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_time: Timestamp,
    pub rollback_time: Timestamp,
    pub xid: Xid,
    pub gid: String,
}
