//! Property tests: every message survives encode → decode, in and out of streams, and no
//! input, however malformed, makes the decoder panic.

use bytes::Bytes;
use pgoutput::*;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::UnchangedToast),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Value::Text(Bytes::from(v))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Value::Binary(Bytes::from(v))),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(value(), 0..8).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn prepare() -> impl Strategy<Value = PrepareInfo> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u32>(),
        name(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| PrepareInfo {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            },
        )
}

/// A message, and whether its changes carry a streamed xid (`x`).
fn message(x: Option<u32>) -> impl Strategy<Value = Message> {
    let column = (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| Column {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    );
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time
            })
        ),
        (any::<u64>(), name())
            .prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec(column, 0..6)
        )
            .prop_map(move |(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    xid: x,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), name(), name()).prop_map(move |(oid, namespace, name)| Message::Type(
            TypeMessage {
                xid: x,
                oid,
                namespace,
                name
            }
        )),
        (any::<u32>(), tuple()).prop_map(move |(relation, new)| Message::Insert(Insert {
            xid: x,
            relation,
            new
        })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            move |(relation, old, new)| Message::Update(Update {
                xid: x,
                relation,
                old,
                new
            })
        ),
        (any::<u32>(), old_tuple()).prop_map(move |(relation, old)| Message::Delete(Delete {
            xid: x,
            relation,
            old
        })),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..5)).prop_map(
            move |(options, relations)| Message::Truncate(Truncate {
                xid: x,
                options,
                relations
            })
        ),
        (
            any::<u8>(),
            any::<u64>(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..30)
        )
            .prop_map(
                move |(flags, lsn, prefix, c)| Message::Message(LogicalMessage {
                    xid: x,
                    flags,
                    lsn,
                    prefix,
                    content: Bytes::from(c)
                })
            ),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>()
        )
            .prop_map(|(xid, flags, commit_lsn, end_lsn, commit_time)| {
                Message::StreamCommit(StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((any::<u64>(), any::<i64>()))
        )
            .prop_map(|(xid, subxid, at)| Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn: at.map(|a| a.0),
                abort_time: at.map(|a| a.1)
            })),
        prepare().prop_map(|mut p| {
            p.flags = 0;
            Message::BeginPrepare(p)
        }),
        prepare().prop_map(Message::Prepare),
        prepare().prop_map(Message::StreamPrepare),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(|(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                Message::CommitPrepared(CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    xid,
                    gid,
                })
            }),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(
                |(
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                )| Message::RollbackPrepared(RollbackPrepared {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid
                })
            ),
    ]
}

proptest! {
    #[test]
    fn outside_a_stream_every_message_round_trips(m in message(None)) {
        let mut d = Decoder::new(4);
        prop_assert_eq!(d.decode(encode(&m)).unwrap(), m);
    }

    #[test]
    fn inside_a_stream_changes_carry_their_xid(x in any::<u32>(), m in message(Some(7))) {
        let mut d = Decoder::new(2);
        let start = Message::StreamStart(StreamStart { xid: x, first_segment: true });
        prop_assert_eq!(d.decode(encode(&start)).unwrap(), start);
        prop_assert!(d.in_stream());
        prop_assert_eq!(d.decode(encode(&m)).unwrap(), m);
        prop_assert_eq!(d.decode(encode(&Message::StreamStop)).unwrap(), Message::StreamStop);
        prop_assert!(!d.in_stream());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), streamed in any::<bool>()) {
        let mut d = Decoder::new(4);
        if streamed {
            let _ = d.decode(encode(&Message::StreamStart(StreamStart { xid: 1, first_segment: false })));
        }
        let _ = d.decode(Bytes::from(data));
    }

    #[test]
    fn a_truncated_message_is_never_taken_for_the_whole(m in message(None), cut in 0usize..64) {
        let full = encode(&m);
        if cut < full.len() {
            // An error, or (Stream Abort without its optional protocol-4 fields) another
            // valid message: never the original, never a panic.
            let mut d = Decoder::new(4);
            prop_assert!(d.decode(full.slice(..cut)).map(|x| x != m).unwrap_or(true));
        }
    }
}

#[test]
fn a_real_insert_from_postgresql() {
    // I, relid 16390, N, 2 columns: text '42', null.
    let bytes = Bytes::from_static(b"I\x00\x00\x40\x06N\x00\x02t\x00\x00\x00\x0242n");
    let m = Decoder::default().decode(bytes).unwrap();
    assert_eq!(
        m,
        Message::Insert(Insert {
            xid: None,
            relation: 16390,
            new: Tuple(vec![Value::Text(Bytes::from_static(b"42")), Value::Null]),
        })
    );
}
