//! What the copy reports while it runs: human lines on a terminal or in a log, or JSON
//! lines (`--json`) for whatever supervises it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::pretty_bytes;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CopyEvent {
    Message {
        text: String,
    },
    /// A table or a chunk of one is committed on the target.
    UnitDone {
        relation: String,
        /// 1-based.
        chunk: i32,
        chunks: i32,
        rows: u64,
        bytes: u64,
        seconds: f64,
        binary: bool,
        frozen: bool,
    },
    /// The change stream's state, every few seconds.
    Cdc(crate::stream::CdcMetrics),
    /// Totals, every second.
    Progress(CopyProgress),
}

/// The copy's totals so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CopyProgress {
    pub units_done: usize,
    pub units_total: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Of the planned table bytes, by units done.
    pub percent: f64,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
}

pub type Events = Arc<dyn Fn(CopyEvent) + Send + Sync>;

impl fmt::Display for CopyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyEvent::Message { text } => f.write_str(text),
            CopyEvent::Cdc(m) => write!(
                f,
                "  applied up to {} (source at {}): lag {} ({:.1} s), {:.0} transactions/s, {:.0} rows/s",
                m.applied_lsn,
                m.source_lsn,
                pretty_bytes(m.lag_bytes as i64),
                m.lag_seconds,
                m.transactions_per_second,
                m.rows_per_second
            ),
            CopyEvent::UnitDone {
                relation,
                chunk,
                chunks,
                rows,
                bytes,
                seconds,
                binary,
                frozen,
            } => {
                let part = if *chunks > 1 {
                    format!(" [{chunk}/{chunks}]")
                } else {
                    String::new()
                };
                write!(
                    f,
                    "  copied {relation}{part}: {rows} rows, {} in {seconds:.1} s ({}/s, {}{})",
                    pretty_bytes(*bytes as i64),
                    pretty_bytes((*bytes as f64 / seconds.max(0.001)) as i64),
                    if *binary { "binary" } else { "text" },
                    if *frozen { ", frozen" } else { "" }
                )
            }
            CopyEvent::Progress(CopyProgress {
                units_done,
                units_total,
                rows,
                bytes,
                percent,
                bytes_per_second,
                eta_seconds,
            }) => {
                write!(
                    f,
                    "  ... {units_done}/{units_total} units, {rows} rows, {} copied, {percent:.0}% of the planned bytes, {}/s{}",
                    pretty_bytes(*bytes as i64),
                    pretty_bytes(*bytes_per_second as i64),
                    match eta_seconds {
                        Some(s) => format!(", about {s:.0} s left"),
                        None => String::new(),
                    }
                )
            }
        }
    }
}

/// A text line as an event.
pub fn message(text: impl Into<String>) -> CopyEvent {
    CopyEvent::Message { text: text.into() }
}
