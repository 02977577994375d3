//! Statements sent to the target without waiting for each answer. tokio-postgres sends a
//! request when its future is first polled and answers requests in the order they were
//! sent, so polling each statement once as it is made keeps source order on the wire while
//! the target works through them; the answers are collected later, in the same order. At
//! most `MAX_IN_FLIGHT` statements wait for their answer, which bounds memory whatever the
//! size of a source transaction.
//!
//! A COMMIT can be in flight while the next target transaction's statements are already
//! sent; the commit's source position counts as applied only once its answer is in, and a
//! second COMMIT is sent only after the first one's answer, so a failed commit can never be
//! followed by a later one that would record a position past it.
//!
//! A long run of inserts into one table goes as one COPY: while it is open, nothing else
//! can be sent on the session, so any other statement ends it first. Its end (CopyDone)
//! is only sent while its answer is being awaited, so before the session is used directly
//! (a prepare, a catalog query) a COPY that is open or ending is waited for: a request
//! queued behind a COPY that never ends would wait forever.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use pgoutput::Value;
use tokio_postgres::{Client, CopyInSink, Statement};

use super::text::TextValue;
use crate::error::{sql_error, Error};

const MAX_IN_FLIGHT: usize = 64;
/// COPY data is handed to the connection in pieces of about this size.
const COPY_CHUNK: usize = 256 * 1024;

/// A statement's answer: the rows it touched, and for an UPDATE or DELETE of several rows
/// the 1-based ordinals of the rows it found (it returns them).
pub struct Found {
    pub count: u64,
    pub ordinals: Option<Vec<i32>>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Found, tokio_postgres::Error>> + Send>>;

fn counted(r: Result<u64, tokio_postgres::Error>) -> Result<Found, tokio_postgres::Error> {
    r.map(|count| Found {
        count,
        ordinals: None,
    })
}

/// A row an UPDATE or DELETE must find: its key (or, under REPLICA IDENTITY FULL, its old
/// columns) and the commit LSN of its source transaction. Not `strict` inside a resumed
/// copy's window, where the copy may already hold the change.
pub struct Expected {
    pub key: Vec<Value>,
    pub lsn: u64,
    pub strict: bool,
}

/// A change whose row was not on the target: the target differs from the source.
#[derive(Clone, Debug)]
pub struct MissingRow {
    pub what: String,
    /// `(col, ...)=(value, ...)`, values shortened.
    pub key: String,
    pub lsn: u64,
}

/// What a statement was doing, for its error message; and for an UPDATE or DELETE, which
/// rows it must find, so that a row missing on the target is never silent.
pub struct Sent {
    pub what: String,
    /// A COMMIT recording this source position in the replication origin.
    pub commits: Option<u64>,
    /// The rows, in the order of the ordinals the statement returns (or its one row).
    pub expected: Vec<Expected>,
    /// The names of the columns in each `Expected::key`.
    pub key_names: Vec<String>,
    /// The target checks the rows itself (pg_temp.pgtransit_expect_rows): a missing one
    /// comes back as an error with SQLSTATE `MISSING_ROWS` and their ordinals.
    pub server_checked: bool,
}

impl Sent {
    pub fn plain(what: String) -> Sent {
        Sent {
            what,
            commits: None,
            expected: Vec::new(),
            key_names: Vec::new(),
            server_checked: false,
        }
    }
}

struct InFlight {
    answer: Answer,
    /// Set when the first poll already produced the answer (an error sending it).
    ready: Option<Result<Found, tokio_postgres::Error>>,
    sent: Sent,
}

pub struct Pipeline {
    client: Arc<Client>,
    in_flight: VecDeque<InFlight>,
    /// Rows an UPDATE or DELETE had to find but did not (outside a resumed copy's
    /// window), in source order; taken by the caller, who decides to stop or go on.
    pub missing: Vec<MissingRow>,
    /// The first error among the answers collected, reported once everything is in.
    failed: Option<Error>,
    /// The source position of the last COMMIT the target confirmed.
    pub committed: u64,
    copy: Option<Copy>,
    /// A COPY's end is in flight.
    copy_ending: bool,
}

/// An open COPY FROM STDIN: the rows not yet handed over, and what it is doing.
struct Copy {
    /// Whose rows these are (the caller's tag: the source relation).
    owner: u32,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    what: String,
}

impl Pipeline {
    pub fn new(client: Arc<Client>) -> Pipeline {
        Pipeline {
            client,
            in_flight: VecDeque::new(),
            missing: Vec::new(),
            failed: None,
            committed: 0,
            copy: None,
            copy_ending: false,
        }
    }

    /// The session, for a request awaited at once: after any COPY is over.
    pub async fn direct(&mut self) -> Result<&Client, Error> {
        if self.copy.is_some() || self.copy_ending {
            self.drain().await?;
        }
        Ok(&self.client)
    }

    /// Send a prepared statement with text parameters.
    pub async fn execute(
        &mut self,
        st: &Statement,
        params: Vec<TextValue>,
        sent: Sent,
    ) -> Result<(), Error> {
        let client = self.client.clone();
        let st = st.clone();
        self.push(
            Box::pin(async move { counted(client.execute_raw(&st, params).await) }),
            sent,
        )
        .await
    }

    /// Send a prepared UPDATE or DELETE of several rows that returns the ordinal (an int4)
    /// of each row it found.
    pub async fn execute_returning(
        &mut self,
        st: &Statement,
        params: Vec<TextValue>,
        sent: Sent,
    ) -> Result<(), Error> {
        let client = self.client.clone();
        let st = st.clone();
        self.push(
            Box::pin(async move {
                use futures_util::TryStreamExt;
                let rows: Vec<tokio_postgres::Row> =
                    client.query_raw(&st, params).await?.try_collect().await?;
                Ok(Found {
                    count: rows.len() as u64,
                    ordinals: Some(rows.iter().map(|r| r.get(0)).collect()),
                })
            }),
            sent,
        )
        .await
    }

    /// Send SQL through the simple protocol (transaction control, TRUNCATE).
    pub async fn simple(&mut self, sql: String, what: String) -> Result<(), Error> {
        self.simple_sent(sql, Sent::plain(what)).await
    }

    /// Send the SQL that commits the open transaction with `position` in the origin, once
    /// the previous commit is confirmed.
    pub async fn commit(&mut self, sql: String, position: u64) -> Result<(), Error> {
        self.wait_commits().await?;
        self.simple_sent(
            sql,
            Sent {
                commits: Some(position),
                ..Sent::plain("recording the source position and committing on the target".into())
            },
        )
        .await
    }

    async fn simple_sent(&mut self, sql: String, sent: Sent) -> Result<(), Error> {
        let client = self.client.clone();
        self.push(
            Box::pin(async move { counted(client.batch_execute(&sql).await.map(|_| 0)) }),
            sent,
        )
        .await
    }

    /// Wait for the answers up to the last COMMIT sent.
    async fn wait_commits(&mut self) -> Result<(), Error> {
        while self.in_flight.iter().any(|f| f.sent.commits.is_some()) {
            self.collect_one().await;
        }
        self.take_failure().await
    }

    /// Take in the answers already there, without waiting.
    pub fn collect_ready(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(f) = self.in_flight.front_mut() {
            if f.ready.is_none() {
                match f.answer.as_mut().poll(&mut cx) {
                    Poll::Ready(r) => f.ready = Some(r),
                    Poll::Pending => return,
                }
            }
            let f = self.in_flight.pop_front().expect("an answer");
            self.take(f.ready.expect("an answer"), f.sent);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Open a COPY FROM STDIN (`st` is the prepared COPY statement); rows follow with
    /// `copy_row`, and any other statement, `drain` or `copy_end` ends it.
    pub async fn copy_begin(
        &mut self,
        st: &Statement,
        owner: u32,
        what: String,
    ) -> Result<(), Error> {
        self.direct().await?;
        let client = self.client.clone();
        match client.copy_in::<_, Bytes>(st).await {
            Ok(sink) => {
                self.copy = Some(Copy {
                    owner,
                    sink: Box::pin(sink),
                    buf: BytesMut::with_capacity(COPY_CHUNK + 4096),
                    what,
                });
                Ok(())
            }
            Err(e) => {
                // An earlier statement's failure explains this one better.
                self.drain().await?;
                Err(sql_error(&what, e))
            }
        }
    }

    /// Whose COPY is open, if one is.
    pub fn copying(&self) -> Option<u32> {
        self.copy.as_ref().map(|c| c.owner)
    }

    /// One row of the open COPY, in COPY's text format.
    pub async fn copy_row(&mut self, row: &[Value]) -> Result<(), Error> {
        let copy = self.copy.as_mut().expect("an open COPY");
        encode_copy_row(&mut copy.buf, row);
        if copy.buf.len() >= COPY_CHUNK {
            let chunk = copy.buf.split().freeze();
            if let Err(e) = copy.sink.send(chunk).await {
                let what = copy.what.clone();
                self.copy = None;
                self.drain().await?;
                return Err(sql_error(&what, e));
            }
        }
        Ok(())
    }

    /// End the open COPY, if any; its answer is collected like any other.
    pub async fn copy_end(&mut self) -> Result<(), Error> {
        let Some(mut copy) = self.copy.take() else {
            return Ok(());
        };
        let rest = copy.buf.split().freeze();
        let answer: Answer = Box::pin(async move {
            if !rest.is_empty() {
                copy.sink.send(rest).await?;
            }
            counted(copy.sink.as_mut().finish().await)
        });
        self.copy_ending = true;
        self.push(answer, Sent::plain(copy.what)).await
    }

    async fn push(&mut self, answer: Answer, sent: Sent) -> Result<(), Error> {
        // Nothing else can go on the session while a COPY is open.
        if self.copy.is_some() {
            Box::pin(self.copy_end()).await?;
        }
        self.push_after_copy(answer, sent).await
    }

    async fn push_after_copy(&mut self, mut answer: Answer, sent: Sent) -> Result<(), Error> {
        // The first poll puts the request on the connection; the answer is awaited later.
        let mut cx = Context::from_waker(Waker::noop());
        let ready = match answer.as_mut().poll(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        };
        self.in_flight.push_back(InFlight {
            answer,
            ready,
            sent,
        });
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.collect_one().await;
        }
        self.take_failure().await
    }

    /// The first failure among the answers collected, after the rest are in.
    async fn take_failure(&mut self) -> Result<(), Error> {
        match self.failed.take() {
            Some(e) => {
                self.drain().await.ok();
                Err(e)
            }
            None => Ok(()),
        }
    }

    async fn collect_one(&mut self) {
        let Some(f) = self.in_flight.pop_front() else {
            return;
        };
        let result = match f.ready {
            Some(r) => r,
            None => f.answer.await,
        };
        self.take(result, f.sent);
    }

    fn take(&mut self, result: Result<Found, tokio_postgres::Error>, sent: Sent) {
        match result {
            Ok(found) => {
                if !sent.expected.is_empty() && !sent.server_checked {
                    self.note_missing(&found, &sent);
                }
                if let Some(position) = sent.commits {
                    self.committed = self.committed.max(position);
                }
            }
            Err(e) => {
                // Later statements of the same transaction fail only because this one did.
                if self.failed.is_none() {
                    self.failed = Some(match missing_on_target(&e, &sent) {
                        Some(rows) => missing_row_error(&rows),
                        None => sql_error(&sent.what, e),
                    });
                }
            }
        }
    }

    /// Record the expected rows a statement did not find.
    fn note_missing(&mut self, found: &Found, sent: &Sent) {
        let missed: Vec<usize> = match &found.ordinals {
            Some(ords) => {
                let mut seen = vec![false; sent.expected.len()];
                for &o in ords {
                    if let Some(s) = usize::try_from(o - 1).ok().and_then(|i| seen.get_mut(i)) {
                        *s = true;
                    }
                }
                (0..seen.len()).filter(|&i| !seen[i]).collect()
            }
            // A statement of one row: its count says.
            None if found.count == 0 => (0..sent.expected.len()).collect(),
            None => Vec::new(),
        };
        for i in missed {
            let e = &sent.expected[i];
            if e.strict {
                self.missing.push(MissingRow {
                    what: sent.what.clone(),
                    key: describe_key(&sent.key_names, &e.key),
                    lsn: e.lsn,
                });
            }
        }
    }

    /// A request made directly on the session failed: an earlier statement still in
    /// flight may have failed first (the transaction is then aborted and everything after
    /// it fails alike), and its error is the one that explains.
    pub async fn explain(&mut self, e: Error) -> Error {
        match self.drain().await {
            Err(earlier) => earlier,
            Ok(()) => e,
        }
    }

    /// Wait for every answer; the first error, if any.
    pub async fn drain(&mut self) -> Result<(), Error> {
        if self.copy.is_some() {
            Box::pin(self.copy_end()).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await;
        }
        self.copy_ending = false;
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The SQLSTATE of pg_temp.pgtransit_expect_rows: rows an UPDATE or DELETE had to find
/// were not on the target (the ordinals in the error's DETAIL).
pub const MISSING_ROWS: &str = "PTMIS";

/// The function the apply session creates for itself (pg_temp: gone with the session,
/// nothing left on the target): it aborts the transaction when one of the `required`
/// ordinals (NULL: all of 1..n) is not among those it `got` (`found` would be PL/pgSQL's
/// own FOUND). All n found is the common case and costs one comparison; otherwise the
/// missing ones are a hashed set difference, never a scan per row.
pub const EXPECT_ROWS_FUNCTION: &str = "CREATE FUNCTION pg_temp.pgtransit_expect_rows(got int[], n int, required int[]) \
     RETURNS int LANGUAGE plpgsql AS $f$ \
     DECLARE missing int[]; \
     BEGIN \
       IF coalesce(cardinality(got), 0) = n THEN RETURN n; END IF; \
       missing := ARRAY(SELECT r FROM (SELECT unnest(coalesce(required, ARRAY(SELECT generate_series(1, n)))) \
                        EXCEPT SELECT unnest(coalesce(got, '{}'))) x(r) ORDER BY r); \
       IF cardinality(missing) > 0 THEN \
         RAISE EXCEPTION 'pgtransit: % row(s) not found on the target', cardinality(missing) \
           USING ERRCODE = 'PTMIS', DETAIL = array_to_string(missing, ','); \
       END IF; \
       RETURN coalesce(cardinality(got), 0); \
     END $f$";

/// The rows a server-checked statement did not find, from its error.
fn missing_on_target(e: &tokio_postgres::Error, sent: &Sent) -> Option<Vec<MissingRow>> {
    let db = e.as_db_error()?;
    if db.code().code() != MISSING_ROWS || sent.expected.is_empty() {
        return None;
    }
    let rows: Vec<MissingRow> = db
        .detail()?
        .split(',')
        .filter_map(|o| o.trim().parse::<usize>().ok())
        .filter_map(|o| sent.expected.get(o.checked_sub(1)?))
        .map(|x| MissingRow {
            what: sent.what.clone(),
            key: describe_key(&sent.key_names, &x.key),
            lsn: x.lsn,
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// The apply stops: the target lacks rows the source changed.
pub fn missing_row_error(rows: &[MissingRow]) -> Error {
    let first = &rows[0];
    Error::failed(format!(
        "the target differs from the source: {} found no row {} (source transaction committing \
         at {}){}. Nothing of this transaction was committed and the slot keeps every change. \
         Find what differs with `pgtransit verify --mode checksum`, repair the target (or \
         recreate the task), then start it again; to count such rows and go on instead, set \
         the task's `on_missing_row: log` (`--on-missing-row log`).",
        first.what,
        first.key,
        super::lsn_text(first.lsn),
        if rows.len() > 1 {
            format!("; {} rows of that statement are missing", rows.len())
        } else {
            String::new()
        }
    ))
}

/// `(a, b)=(1, 'x')` for messages, each value shortened to 60 characters.
pub fn describe_key(names: &[String], key: &[Value]) -> String {
    let values: Vec<String> = key
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::UnchangedToast => "(unchanged TOAST)".to_string(),
            Value::Text(b) | Value::Binary(b) => {
                let t = String::from_utf8_lossy(b);
                let mut short: String = t.chars().take(60).collect();
                if short.len() < t.len() {
                    short.push_str("...");
                }
                crate::quote::literal(&short)
            }
        })
        .collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}

/// A row in COPY's text format: tab-separated, `\N` for NULL, and the four characters
/// that COPY treats specially escaped.
fn encode_copy_row(buf: &mut BytesMut, row: &[Value]) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        match v {
            Value::Text(b) | Value::Binary(b)
                if !b.iter().any(|c| matches!(c, b'\\' | b'\n' | b'\r' | b'\t')) =>
            {
                buf.put_slice(b)
            }
            Value::Text(b) | Value::Binary(b) => {
                for &c in b.iter() {
                    match c {
                        b'\\' => buf.put_slice(b"\\\\"),
                        b'\n' => buf.put_slice(b"\\n"),
                        b'\r' => buf.put_slice(b"\\r"),
                        b'\t' => buf.put_slice(b"\\t"),
                        c => buf.put_u8(c),
                    }
                }
            }
            Value::Null | Value::UnchangedToast => buf.put_slice(b"\\N"),
        }
    }
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_what_copy_treats_specially() {
        let mut buf = BytesMut::new();
        let row = [
            Value::Text(Bytes::from_static(b"a\tb\nc\\d\re")),
            Value::Null,
            Value::Text(Bytes::from_static(b"{\"x y\"}")),
        ];
        encode_copy_row(&mut buf, &row);
        assert_eq!(&buf[..], b"a\\tb\\nc\\\\d\\re\t\\N\t{\"x y\"}\n");
    }
}
