//! What a worker publishes while it runs: the change stream's position and lag (both
//! engines), or the copy's totals. Kept in the task store (describe, list), served on the
//! metrics endpoint, and read back as this type.

use serde::{Deserialize, Serialize};

use crate::snapshot::CopyProgress;
use crate::state::LagSample;
use crate::stream::CdcMetrics;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metrics {
    /// The change stream: the stream engine's apply, or the native subscription's state.
    Cdc(CdcMetrics),
    /// The stream engine's initial copy.
    Copy(CopyProgress),
}

impl Metrics {
    pub fn cdc(&self) -> Option<&CdcMetrics> {
        match self {
            Metrics::Cdc(m) => Some(m),
            Metrics::Copy(_) => None,
        }
    }

    /// The sample kept for the lag's history (change stream only).
    pub fn lag_sample(&self) -> Option<LagSample> {
        self.cdc().map(|m| LagSample {
            lag_bytes: m.lag_bytes as i64,
            lag_seconds: m.lag_seconds,
            rows_per_second: m.rows_per_second,
        })
    }
}

/// The native subscription's state as change-stream metrics.
pub fn from_native(p: &crate::native::Progress) -> CdcMetrics {
    let confirmed = p.confirmed_lsn.clone().unwrap_or_default();
    CdcMetrics {
        applied_lsn: confirmed.clone(),
        received_lsn: confirmed,
        source_lsn: p.current_lsn.clone().unwrap_or_default(),
        lag_bytes: p.lag_bytes.unwrap_or(0).max(0) as u64,
        lag_seconds: p.lag_seconds.unwrap_or(0.0),
        tables_streaming: Some(p.streaming),
        tables: Some(p.total),
        errors: p.errors,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_as_what_was_published() {
        let cdc = Metrics::Cdc(CdcMetrics {
            applied_lsn: "0/16B3748".into(),
            lag_bytes: 5,
            ..Default::default()
        });
        let copy = Metrics::Copy(CopyProgress {
            units_done: 3,
            units_total: 4,
            percent: 75.0,
            ..Default::default()
        });
        for m in [cdc, copy] {
            let json = serde_json::to_string(&m).unwrap();
            let back: Metrics = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
        let v: serde_json::Value =
            serde_json::to_value(Metrics::Cdc(CdcMetrics::default())).unwrap();
        assert!(v.get("applied_lsn").is_some() && v.get("tables").is_none());
    }
}
