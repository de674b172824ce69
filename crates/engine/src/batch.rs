//! A bounded queue drained in batches by one writer task: how everything a request leaves behind (its
//! usage in the ledger, its row in the request log, its spans) reaches a store or a collector without the
//! request ever waiting on it.
//!
//! Sending never waits: when the writer cannot keep up, the item is dropped and counted in the queue's
//! metric, so a slow database or collector never slows a request. At shutdown [`Batcher::stop`] makes the
//! writer take what is queued, write it and end; the caller awaits the writer's handle with a time limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

/// The sending side; cheap to clone.
#[derive(Debug)]
pub struct Batcher<T> {
    tx: mpsc::Sender<T>,
    stop: Arc<Notify>,
    /// The counter incremented for each dropped item.
    dropped: &'static str,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone(), stop: Arc::clone(&self.stop), dropped: self.dropped }
    }
}

/// How a queue is sized and drained.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Items held at most.
    pub queue: usize,
    /// Items handed to one write at most.
    pub batch: usize,
    /// After a write, how long items may gather before the next: larger batches, none held back long.
    pub linger: Duration,
    /// The counter incremented for each item dropped (queue full, or a failed write's items when the
    /// writer reports them).
    pub dropped_metric: &'static str,
}

impl<T: Send + 'static> Batcher<T> {
    /// The queue and its writer. `write` gets each batch (never empty) and returns how many of its items
    /// it could not write, which are counted as dropped.
    pub fn start<F, Fut>(s: BatchSettings, mut write: F) -> (Batcher<T>, tokio::task::JoinHandle<()>)
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = usize> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<T>(s.queue.max(1));
        let stop = Arc::new(Notify::new());
        let stopped = Arc::clone(&stop);
        let dropped = s.dropped_metric;
        let max = s.batch.max(1);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max.min(1024));
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, max) => {
                        if n == 0 {
                            return;
                        }
                        let lost = write(std::mem::take(&mut batch)).await;
                        if lost > 0 {
                            metrics::counter!(dropped).increment(lost as u64);
                        }
                        // A stop asked while lingering is taken at once: shutdown waits for this
                        // writer only so long, and a long linger must not make it lose the queue.
                        tokio::select! {
                            _ = tokio::time::sleep(s.linger) => {}
                            _ = stopped.notified() => stopped.notify_one(),
                        }
                    }
                    _ = stopped.notified() => {
                        rx.close();
                        loop {
                            let n = rx.recv_many(&mut batch, max).await;
                            if n == 0 {
                                return;
                            }
                            let lost = write(std::mem::take(&mut batch)).await;
                            if lost > 0 {
                                metrics::counter!(dropped).increment(lost as u64);
                            }
                        }
                    }
                }
            }
        });
        (Batcher { tx, stop, dropped }, writer)
    }

    /// Queues `item`, or drops and counts it when the queue is full or closed. True when queued.
    pub fn send(&self, item: T) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!(self.dropped).increment(1);
                false
            }
        }
    }

    /// Items waiting for the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Asks the writer to write what is queued and end (items sent afterwards are dropped).
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    fn settings(queue: usize, batch: usize) -> BatchSettings {
        BatchSettings { queue, batch, linger: Duration::from_millis(1), dropped_metric: "test_dropped_total" }
    }

    #[tokio::test]
    async fn everything_queued_before_stop_is_written_in_bounded_batches() {
        let seen = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let sink = Arc::clone(&seen);
        let (b, writer) = Batcher::start(settings(100, 7), move |batch: Vec<u32>| {
            sink.lock().unwrap().push(batch);
            async { 0 }
        });
        for i in 0..50 {
            assert!(b.send(i));
        }
        b.stop();
        writer.await.unwrap();
        let batches = seen.lock().unwrap();
        assert!(batches.iter().all(|x| !x.is_empty() && x.len() <= 7), "{batches:?}");
        assert_eq!(batches.concat(), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_stop_during_a_long_linger_drains_at_once() {
        let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
        let sink = Arc::clone(&seen);
        let s = BatchSettings { queue: 10, batch: 1, linger: Duration::from_secs(3600), dropped_metric: "test_dropped_total" };
        let (b, writer) = Batcher::start(s, move |batch: Vec<u32>| {
            sink.lock().unwrap().extend(batch);
            async { 0 }
        });
        b.send(1);
        // The writer takes the first item and lingers an hour; the rest wait in the queue.
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        b.send(2);
        b.send(3);
        b.stop();
        tokio::time::timeout(Duration::from_secs(10), writer).await.expect("the stop waited out the linger").unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        // The writer is held until released, so the queue of 3 fills.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let held = Arc::clone(&gate);
        let (b, writer) = Batcher::start(settings(3, 1), move |_batch: Vec<u32>| {
            let held = Arc::clone(&held);
            async move {
                let _ = held.acquire().await;
                0
            }
        });
        let mut queued = 0;
        for i in 0..20 {
            queued += usize::from(b.send(i));
        }
        // At most the queue plus the one item the writer took.
        assert!(queued <= 4, "{queued}");
        assert!(queued >= 3, "{queued}");
        gate.add_permits(100);
        b.stop();
        writer.await.unwrap();
    }
}
