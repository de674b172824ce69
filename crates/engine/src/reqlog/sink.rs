//! The request log's way in and its upkeep: a [`RequestSink`] that queues each finished record for the
//! batch writer, and the task that prunes by age and row count.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{LogRow, RequestLogStore};
use crate::batch::{BatchSettings, Batcher};
use crate::observe::{RequestRecord, RequestSink};

const DROPPED: &str = "switchyard_request_log_dropped_total";
const WRITTEN: &str = "switchyard_request_log_written_total";
const QUEUED: &str = "switchyard_request_log_queue";

/// Queues records for the writer; never waits (a full queue drops and counts).
#[derive(Debug, Clone)]
pub struct LogSink(Batcher<Arc<RequestRecord>>);

impl LogSink {
    /// The sink and its writer task, which writes batches into `store` until [`LogSink::stop`], then
    /// writes what is still queued and ends: await its handle at shutdown. `settings` carries the queue's
    /// sizes; its metric is always `switchyard_request_log_dropped_total`.
    pub fn start(store: Arc<dyn RequestLogStore>, settings: BatchSettings) -> (LogSink, JoinHandle<()>) {
        // Registered now so that /metrics shows them at 0 before anything happens.
        metrics::counter!(DROPPED).increment(0);
        metrics::counter!(WRITTEN).increment(0);
        metrics::gauge!(QUEUED).set(0.0);
        let settings = BatchSettings { dropped_metric: DROPPED, ..settings };
        let (b, writer) = Batcher::start(settings, move |batch: Vec<Arc<RequestRecord>>| {
            let store = Arc::clone(&store);
            async move {
                let n = batch.len();
                // Deriving the filter columns here keeps that work off the requests' tasks.
                let rows: Vec<LogRow> = batch.into_iter().map(LogRow::new).collect();
                match store.write_batch(rows).await {
                    Ok(()) => {
                        metrics::counter!(WRITTEN).increment(n as u64);
                        0
                    }
                    Err(e) => {
                        tracing::warn!(records = n, "the request log could not be written: {e}");
                        n
                    }
                }
            }
        });
        (LogSink(b), writer)
    }

    pub fn stop(&self) {
        self.0.stop();
    }
}

impl RequestSink for LogSink {
    fn record(&self, r: &Arc<RequestRecord>) {
        self.0.send(Arc::clone(r));
        metrics::gauge!(QUEUED).set(self.0.queued() as f64);
    }
}

/// How often the log is pruned: a tenth of the retention, between 1 s and 1 min.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Prunes `store` now and then: rows older than `retention` or beyond `max_rows` (the oldest), rollups
/// older than `rollup_retention`. Runs until aborted.
pub fn prune_task(store: Arc<dyn RequestLogStore>, retention: Duration, max_rows: u64, rollup_retention: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(prune_interval(retention));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = crate::governance::meter::now_ms();
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            match store.prune(now.saturating_sub(ms(retention)), max_rows, now.saturating_sub(ms(rollup_retention))).await {
                Ok(p) => {
                    failing = false;
                    if p.aged + p.over > 0 {
                        tracing::debug!(aged = p.aged, over_max_rows = p.over, "request log pruned");
                    }
                }
                // Said once until it works again, not every tick.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("the request log could not be pruned: {e}");
                }
                Err(_) => {}
            }
        }
    })
}
