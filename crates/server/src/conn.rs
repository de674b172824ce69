//! Accepting client connections under a cap, and the clocks every connection runs under.
//!
//! Why this is ours and not `axum::serve`: a gateway that anyone can open sockets to must bound how many it
//! keeps and for how long. Here every connection
//! - needs a permit of `server.max_connections` to be served; above the cap it gets a 503 in the OpenAI
//!   error shape at once and is closed, and the cap being hit is logged (rate-limited);
//! - must deliver each request's headers within `server.header_read_timeout` (from its accept for the
//!   first request, from the first byte for later ones), which ends silent sockets and slowloris;
//! - is closed after `server.idle_timeout` with no request in progress (keep-alive);
//! - is closed when a write has waited `server.write_timeout` for a client that takes nothing.
//!
//! The clocks live in [`Clocked`], a wrapper around the socket that arms a timer only when a read or
//! write has nothing to do, so a busy connection pays no timer per read or write. Which read clock applies
//! depends on where the connection is between requests; the service tells it through [`ConnState`].
//! The request body's own timeout is the handler's (it answers 408).
//!
//! The accept loop never dies and never spins: when accepting fails for want of file descriptors it
//! frees a reserved descriptor to accept and refuse one waiting client, logs, and backs off briefly.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::errors::{out_of_descriptors_bytes, over_capacity_bytes};
use crate::throttle::{more, Throttled};

/// Connections a process may hold besides its clients' (listener, logs, DNS, image fetches, connections
/// being refused, idle upstream connections beyond one per client), kept free when the cap is sized.
pub const FD_RESERVE: u64 = 256;
/// The cap when none is configured and the open-file limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Refusals in progress at once (each holds its socket for a moment while the 503 drains); past this,
/// extra connections are closed without the answer.
const MAX_REFUSING: usize = 64;
/// How long a refused socket is kept so that the client reads the 503 instead of a reset.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Pause after an accept failure that no reserved descriptor could relieve.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static CAP_HIT: Throttled = Throttled::new("max_connections");
static ACCEPT_FAILED: Throttled = Throttled::new("accept_failed");
static HEADER_TIMEOUTS: Throttled = Throttled::new("header_read_timeout");
static WRITE_TIMEOUTS: Throttled = Throttled::new("write_timeout");

/// The connection limits in force, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits for these settings, with the connection cap fitted to the process's open-file limit
    /// (`fd_limit`, when known): by default at most half of what the limit leaves after [`FD_RESERVE`],
    /// since each client connection may need an upstream one. A configured cap is kept as it is, with a
    /// warning when it does not fit. Returns the warning to log, if any.
    pub fn new(s: &switchyard_engine::config::ServerSettings, fd_limit: Option<u64>) -> (Self, Option<String>) {
        let fits = fd_limit.map(|l| usize::try_from(l.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX).max(1));
        let (max_connections, warning) = match (s.max_connections, fits) {
            (Some(n), Some(fits)) if n > fits => (
                n,
                Some(format!(
                    "server.max_connections is {n}, but the open-file limit ({}) leaves room for about {fits} client connections with one upstream connection each; raise the limit (ulimit -n, systemd LimitNOFILE) or lower server.max_connections",
                    fd_limit.unwrap_or_default()
                )),
            ),
            (Some(n), _) => (n, None),
            (None, Some(fits)) => (DEFAULT_MAX_CONNECTIONS.min(fits), None),
            (None, None) => (DEFAULT_MAX_CONNECTIONS, None),
        };
        let limits = ConnectionLimits {
            max_connections,
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
            write_timeout: s.write_timeout,
        };
        (limits, warning)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish their
/// requests (idle ones are closed at once) and returns when all are gone.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()> + Send + 'static) {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusal: Bytes = over_capacity_bytes(limits.max_connections).into();
    let no_fd = out_of_descriptors_bytes();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut reserve = reserve_fd();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, _)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(connection(tcp, app.clone(), limits.clone(), permit, stop_rx.clone()));
                }
                Err(_) => {
                    if let Some(n) = CAP_HIT.hit() {
                        tracing::warn!(
                            "refused a connection with 503: {} connections are open (server.max_connections){}",
                            limits.max_connections,
                            more(n)
                        );
                    }
                    refuse(tcp, &refusing, &refusal);
                }
            },
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                // Most likely out of file descriptors: the waiting client cannot even be told. Give the
                // reserved descriptor back for a moment to accept it and answer 503, so clients are not left
                // hanging in the backlog, then take it again.
                let shed = match reserve.take() {
                    Some(fd) => {
                        drop(fd);
                        let told = match accept_now(&listener).await {
                            Some(tcp) => {
                                // No time to read its request: this descriptor must be given back at once.
                                let _ = tcp.try_write(&no_fd);
                                true
                            }
                            None => false,
                        };
                        reserve = reserve_fd();
                        told
                    }
                    None => {
                        reserve = reserve_fd();
                        false
                    }
                };
                if let Some(n) = ACCEPT_FAILED.hit() {
                    let told = if shed { "; answered a waiting client 503" } else { "" };
                    tracing::warn!(
                        "cannot accept connections: {e}{told}; is the open-file limit too low for server.max_connections ({})?{}",
                        limits.max_connections,
                        more(n)
                    );
                }
                if !shed {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends; having them all back means all are gone.
    let all = u32::try_from(limits.max_connections.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// Errors that concern one connection that went away before it was accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// A descriptor held back for the moment the process runs out of them.
fn reserve_fd() -> Option<std::fs::File> {
    if cfg!(unix) {
        std::fs::File::open("/dev/null").ok()
    } else {
        None
    }
}

/// Accepts a connection that is already waiting, without waiting for one.
async fn accept_now(listener: &TcpListener) -> Option<TcpStream> {
    std::future::poll_fn(|cx| match listener.poll_accept(cx) {
        Poll::Ready(Ok((tcp, _))) => Poll::Ready(Some(tcp)),
        Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Answers 503 on a connection over the cap and closes it. The request's head is read first (HTTP
/// clients take an answer that arrives before their request for a broken connection), and the socket is
/// kept a moment after the answer to drain what the client still sends, since closing with unread data
/// makes the kernel send a reset that can destroy the answer.
fn refuse(mut tcp: TcpStream, refusing: &Arc<Semaphore>, refusal: &Bytes) {
    let Ok(slot) = refusing.clone().try_acquire_owned() else {
        // Too many refusals in progress: close at once rather than hold more sockets.
        return;
    };
    let refusal = refusal.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            let mut buf = [0u8; 4096];
            let mut seen: Vec<u8> = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 << 10 {
                match tcp.read(&mut buf).await? {
                    0 => break,
                    n => seen.extend_from_slice(&buf[..n]),
                }
            }
            tcp.write_all(&refusal).await?;
            tcp.shutdown().await?;
            let mut drained = 0usize;
            while drained < 64 << 10 {
                match tcp.read(&mut buf).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

async fn connection(
    tcp: TcpStream,
    app: Router,
    limits: Arc<ConnectionLimits>,
    _permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    // With Nagle on, the last small write of a response waits for the client's delayed ACK (about 40 ms
    // on Linux) on every keep-alive request.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Clocked::new(tcp, state.clone(), limits));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = BusyGuard::start(state.clone());
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our clocks replace hyper's header timer, which would also cut idle keep-alive connections at the
    // header timeout.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// Where a connection is between requests, for its read clock.
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// Shared by a connection's socket wrapper and its service (both run on the connection's task).
struct ConnState {
    origin: Instant,
    phase: AtomicU8,
    /// Microseconds after `origin` at which the phase began.
    since_us: AtomicU64,
    /// The task of the last read that found nothing. A response ending makes the connection idle without
    /// any read being polled, so hyper would not look at the socket (and the idle clock would not be
    /// armed) until the client sent something; waking it arms the clock.
    reader: AtomicWaker,
}

impl ConnState {
    fn new() -> Self {
        // A new connection is waiting for its first request's headers, timed from its accept.
        ConnState { origin: Instant::now(), phase: AtomicU8::new(HEAD), since_us: AtomicU64::new(0), reader: AtomicWaker::new() }
    }

    fn enter(&self, phase: u8) {
        self.since_us.store(self.origin.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// The first byte of a request after an idle spell starts its header clock.
    fn on_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD);
        }
    }

    fn since(&self) -> Instant {
        self.origin + Duration::from_micros(self.since_us.load(Ordering::Relaxed))
    }
}

/// Marks the connection busy from the request's headers until its response body is done with.
struct BusyGuard(Arc<ConnState>);

impl BusyGuard {
    fn start(state: Arc<ConnState>) -> Self {
        state.enter(BUSY);
        BusyGuard(state)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.enter(IDLE);
        self.0.reader.wake();
    }
}

/// A response body that keeps its connection marked busy until hyper drops it.
struct Tracked {
    body: Body,
    _busy: BusyGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[derive(Clone, Copy)]
enum ReadClock {
    Header,
    Idle,
}

/// The client socket with the connection's clocks on it.
struct Clocked {
    tcp: TcpStream,
    state: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
    /// Armed only while a read waits, for the deadline in `read_at`.
    read_timer: Option<Pin<Box<Sleep>>>,
    read_at: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    write_at: Option<Instant>,
    /// Since when writes have been waiting for the client to take data.
    write_blocked_since: Option<Instant>,
}

impl Clocked {
    fn new(tcp: TcpStream, state: Arc<ConnState>, limits: Arc<ConnectionLimits>) -> Self {
        Clocked { tcp, state, limits, read_timer: None, read_at: None, write_timer: None, write_at: None, write_blocked_since: None }
    }

    fn read_deadline(&self) -> Option<(Instant, ReadClock)> {
        match self.state.phase.load(Ordering::Relaxed) {
            HEAD => Some((self.state.since() + self.limits.header_read_timeout, ReadClock::Header)),
            IDLE => Some((self.state.since() + self.limits.idle_timeout, ReadClock::Idle)),
            _ => None,
        }
    }

    /// Called when a read found nothing: `Ready(err)` once the read clock has run out.
    fn poll_read_clock(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((deadline, clock)) = self.read_deadline() else { return Poll::Pending };
        if !poll_timer(&mut self.read_timer, &mut self.read_at, deadline, cx) {
            return Poll::Pending;
        }
        let limits = &self.limits;
        let msg = match clock {
            ReadClock::Header => {
                // A slow or idle client, which the limit is there for: nothing for the operator to do.
                if let Some(n) = HEADER_TIMEOUTS.hit() {
                    tracing::info!(
                        "closed a connection that sent no complete request headers within {} (server.header_read_timeout){}",
                        switchyard_engine::human::duration(limits.header_read_timeout),
                        more(n)
                    );
                }
                "no complete request headers within server.header_read_timeout"
            }
            ReadClock::Idle => {
                tracing::debug!(
                    "closed a keep-alive connection idle for {} (server.idle_timeout)",
                    switchyard_engine::human::duration(limits.idle_timeout)
                );
                "idle for server.idle_timeout"
            }
        };
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, msg))
    }

    /// Called when a write could not proceed: `Ready(err)` once it has waited `write_timeout`.
    fn poll_write_clock(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let since = *self.write_blocked_since.get_or_insert_with(Instant::now);
        let deadline = since + self.limits.write_timeout;
        if !poll_timer(&mut self.write_timer, &mut self.write_at, deadline, cx) {
            return Poll::Pending;
        }
        // The client stopped reading; the limit protected the gateway. INFO, like every client's doing.
        if let Some(n) = WRITE_TIMEOUTS.hit() {
            tracing::info!(
                "closed a connection whose client took no response data for {} (server.write_timeout){}",
                switchyard_engine::human::duration(self.limits.write_timeout),
                more(n)
            );
        }
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "the client took no data for server.write_timeout"))
    }
}

/// Polls a lazily created timer set to `deadline`; true once it has fired.
fn poll_timer(timer: &mut Option<Pin<Box<Sleep>>>, armed_for: &mut Option<Instant>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if Instant::now() >= deadline {
        return true;
    }
    let t = match timer {
        Some(t) => {
            if *armed_for != Some(deadline) {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    *armed_for = Some(deadline);
    t.as_mut().poll(cx).is_ready()
}

impl AsyncRead for Clocked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.state.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.state.reader.register(cx.waker());
                self.poll_read_clock(cx).map(Err)
            }
        }
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.tcp).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_write_clock(cx).map(Err),
        }
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.write_blocked_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_write_clock(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchyard_engine::config::ServerSettings;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let d = ServerSettings::default();
        assert_eq!(ConnectionLimits::new(&d, None).0.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(ConnectionLimits::new(&d, Some(1 << 20)).0.max_connections, DEFAULT_MAX_CONNECTIONS);
        // 1024 descriptors: 256 kept back, half of the rest for clients.
        let (l, warning) = ConnectionLimits::new(&d, Some(1024));
        assert_eq!((l.max_connections, warning), (384, None));
        assert_eq!(ConnectionLimits::new(&d, Some(10)).0.max_connections, 1);
        let set = ServerSettings { max_connections: Some(5000), ..d };
        let (l, warning) = ConnectionLimits::new(&set, Some(1024));
        assert_eq!(l.max_connections, 5000, "a configured cap is kept");
        assert!(warning.unwrap().contains("server.max_connections is 5000"));
        assert_eq!(ConnectionLimits::new(&set, Some(1 << 20)).1, None);
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer() {
        let bytes = over_capacity_bytes(7);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert!(v["error"]["message"].as_str().unwrap().contains("7 open connections"));
    }
}
