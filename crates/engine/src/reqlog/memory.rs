//! The request log of a gateway without a data directory: the newest records in a bounded ring in memory,
//! so that `serve --demo` with no flags still shows its requests. Stats are computed by scanning the ring,
//! which is small; the answers are the same as a database's (same filters, same histogram).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;

use super::{latency_bucket, Counters, Cursor, LogPage, LogQuery, LogRow, Pruned, RequestLogStore, StatRow, StatsQuery, LATENCY_BUCKETS};
use crate::governance::store::StoreFuture;
use crate::observe::RequestRecord;

/// Records kept by default.
pub const MEMORY_ROWS: usize = 10_000;

/// The newest `capacity` records.
#[derive(Debug)]
pub struct MemoryLog {
    capacity: usize,
    rows: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    rows: VecDeque<LogRow>,
    ids: HashSet<String>,
}

impl MemoryLog {
    pub fn new(capacity: usize) -> MemoryLog {
        MemoryLog { capacity: capacity.max(1), rows: Mutex::new(Ring::default()) }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn page(&self, q: &LogQuery) -> LogPage {
        let ring = self.ring();
        let mut candidates: Vec<&LogRow> = ring.rows.iter().filter(|r| q.matches_indexed(r)).collect();
        candidates.sort_by(|a, b| (b.record.at_ms, &b.record.id).cmp(&(a.record.at_ms, &a.record.id)));
        let bound = if q.scans() { q.scan_limit.max(1) } else { usize::MAX };
        let mut records = Vec::new();
        let mut next_cursor = None;
        for (looked, r) in candidates.iter().enumerate() {
            if looked >= bound {
                // The scan stopped here: the next page goes on after the last row looked at.
                next_cursor = Some(Cursor::of(&candidates[looked - 1].record));
                break;
            }
            if !q.matches_scanned(r) {
                continue;
            }
            if records.len() == q.limit {
                next_cursor = records.last().map(Cursor::of);
                break;
            }
            records.push(RequestRecord { request_body: None, response_body: None, ..(*r.record).clone() });
        }
        LogPage { records, next_cursor }
    }

    fn rows_for(&self, q: &StatsQuery) -> Vec<StatRow> {
        let ring = self.ring();
        let mut cells: BTreeMap<(i64, Vec<Option<String>>), StatRow> = BTreeMap::new();
        for r in ring.rows.iter() {
            // Whole rollup buckets, as the databases count them.
            let width = super::rollup_width(q.interval_ms);
            let at = r.record.at_ms.div_euclid(width) * width;
            if at < q.from_ms || at >= q.to_ms || !q.matches(&r.dims) {
                continue;
            }
            let t_ms = at.div_euclid(q.interval_ms) * q.interval_ms;
            let keys: Vec<Option<String>> = q.group_by.iter().map(|d| d.of(&r.dims)).collect();
            let cell = cells.entry((t_ms, keys.clone())).or_insert_with(|| StatRow {
                t_ms,
                keys,
                key_name: None,
                counters: Counters::default(),
                hist: vec![0; LATENCY_BUCKETS],
            });
            if q.group_by.contains(&super::StatsDim::VirtualKey) {
                cell.key_name = r.dims.virtual_key_name.clone();
            }
            cell.counters.add(&Counters::of(&r.record));
            cell.hist[latency_bucket(r.record.latency_ms)] += 1;
        }
        cells.into_values().collect()
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog::new(MEMORY_ROWS)
    }
}

impl RequestLogStore for MemoryLog {
    fn write_batch(&self, batch: Vec<LogRow>) -> StoreFuture<'_, ()> {
        let mut ring = self.ring();
        for row in batch {
            if !ring.ids.insert(row.record.id.clone()) {
                continue;
            }
            ring.rows.push_back(row);
            while ring.rows.len() > self.capacity {
                if let Some(old) = ring.rows.pop_front() {
                    ring.ids.remove(&old.record.id);
                }
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn query(&self, q: LogQuery) -> StoreFuture<'_, LogPage> {
        let page = self.page(&q);
        Box::pin(async move { Ok(page) })
    }

    fn get(&self, id: String) -> StoreFuture<'_, Option<RequestRecord>> {
        let found = self.ring().rows.iter().rev().find(|r| r.record.id == id).map(|r| (*r.record).clone());
        Box::pin(async move { Ok(found) })
    }

    fn stat_rows(&self, q: StatsQuery) -> StoreFuture<'_, Vec<StatRow>> {
        let rows = self.rows_for(&q);
        Box::pin(async move { Ok(rows) })
    }

    fn prune(&self, before_ms: i64, max_rows: u64, _rollups_before_ms: i64) -> StoreFuture<'_, Pruned> {
        let mut ring = self.ring();
        let Ring { rows, ids } = &mut *ring;
        let before = rows.len();
        rows.retain(|r| {
            let keep = r.record.at_ms >= before_ms;
            if !keep {
                ids.remove(&r.record.id);
            }
            keep
        });
        let aged = (before - rows.len()) as u64;
        let mut over = 0;
        if rows.len() as u64 > max_rows {
            // The oldest by arrival go first.
            rows.make_contiguous().sort_by(|a, b| (a.record.at_ms, &a.record.id).cmp(&(b.record.at_ms, &b.record.id)));
            let n = rows.len() - usize::try_from(max_rows).unwrap_or(usize::MAX);
            for r in rows.drain(..n) {
                ids.remove(&r.record.id);
            }
            over = n as u64;
        }
        Box::pin(async move { Ok(Pruned { aged, over }) })
    }
}
