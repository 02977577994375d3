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
use crate::native::{sql_error, StepError};

const MAX_IN_FLIGHT: usize = 64;
/// COPY data is handed to the connection in pieces of about this size.
const COPY_CHUNK: usize = 256 * 1024;

type Answer = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// What a statement was doing, for its error message; and how many rows it should touch,
/// so that rows missing on the target are counted.
pub struct Sent {
    pub what: String,
    pub expect_rows: Option<u64>,
    /// A COMMIT recording this source position in the replication origin.
    pub commits: Option<u64>,
}

struct InFlight {
    answer: Answer,
    /// Set when the first poll already produced the answer (an error sending it).
    ready: Option<Result<u64, tokio_postgres::Error>>,
    sent: Sent,
}

pub struct Pipeline {
    client: Arc<Client>,
    in_flight: VecDeque<InFlight>,
    /// Rows an UPDATE or DELETE expected to touch but did not find.
    pub not_found: u64,
    /// The first error among the answers collected, reported once everything is in.
    failed: Option<StepError>,
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
            not_found: 0,
            failed: None,
            committed: 0,
            copy: None,
            copy_ending: false,
        }
    }

    /// The session, for a request awaited at once: after any COPY is over.
    pub async fn direct(&mut self) -> Result<&Client, StepError> {
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
    ) -> Result<(), StepError> {
        let client = self.client.clone();
        let st = st.clone();
        self.push(
            Box::pin(async move { client.execute_raw(&st, params).await }),
            sent,
        )
        .await
    }

    /// Send SQL through the simple protocol (transaction control, TRUNCATE).
    pub async fn simple(&mut self, sql: String, what: String) -> Result<(), StepError> {
        self.simple_sent(
            sql,
            Sent {
                what,
                expect_rows: None,
                commits: None,
            },
        )
        .await
    }

    /// Send the SQL that commits the open transaction with `position` in the origin, once
    /// the previous commit is confirmed.
    pub async fn commit(&mut self, sql: String, position: u64) -> Result<(), StepError> {
        self.wait_commits().await?;
        self.simple_sent(
            sql,
            Sent {
                what: "recording the source position and committing on the target".into(),
                expect_rows: None,
                commits: Some(position),
            },
        )
        .await
    }

    async fn simple_sent(&mut self, sql: String, sent: Sent) -> Result<(), StepError> {
        let client = self.client.clone();
        self.push(
            Box::pin(async move { client.batch_execute(&sql).await.map(|_| 0) }),
            sent,
        )
        .await
    }

    /// Wait for the answers up to the last COMMIT sent.
    async fn wait_commits(&mut self) -> Result<(), StepError> {
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
    ) -> Result<(), StepError> {
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
    pub async fn copy_row(&mut self, row: &[Value]) -> Result<(), StepError> {
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
    pub async fn copy_end(&mut self) -> Result<(), StepError> {
        let Some(mut copy) = self.copy.take() else {
            return Ok(());
        };
        let rest = copy.buf.split().freeze();
        let answer: Answer = Box::pin(async move {
            if !rest.is_empty() {
                copy.sink.send(rest).await?;
            }
            copy.sink.as_mut().finish().await
        });
        self.copy_ending = true;
        self.push(
            answer,
            Sent {
                what: copy.what,
                expect_rows: None,
                commits: None,
            },
        )
        .await
    }

    async fn push(&mut self, answer: Answer, sent: Sent) -> Result<(), StepError> {
        // Nothing else can go on the session while a COPY is open.
        if self.copy.is_some() {
            Box::pin(self.copy_end()).await?;
        }
        self.push_after_copy(answer, sent).await
    }

    async fn push_after_copy(&mut self, mut answer: Answer, sent: Sent) -> Result<(), StepError> {
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
    async fn take_failure(&mut self) -> Result<(), StepError> {
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

    fn take(&mut self, result: Result<u64, tokio_postgres::Error>, sent: Sent) {
        match result {
            Ok(n) => {
                if let Some(want) = sent.expect_rows {
                    self.not_found += want.saturating_sub(n);
                }
                if let Some(position) = sent.commits {
                    self.committed = self.committed.max(position);
                }
            }
            Err(e) => {
                // Later statements of the same transaction fail only because this one did.
                if self.failed.is_none() {
                    self.failed = Some(sql_error(&sent.what, e));
                }
            }
        }
    }

    /// Wait for every answer; the first error, if any.
    pub async fn drain(&mut self) -> Result<(), StepError> {
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
