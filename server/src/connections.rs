//! HTTP/1.1 connections: the accept loop with its connection cap, the per-connection timers
//! (request head, idle keep-alive), and the open-file limit the cap is sized from.
//!
//! - **Cap.** At most `max_connections` connections are open; at the cap the loop stops
//!   accepting until one closes. New clients wait in the kernel's listen backlog and are served
//!   as soon as a slot frees, instead of being accepted and closed at once: pausing spends no
//!   file descriptor and no work per refused client, and a short burst above the cap is delayed
//!   rather than turned into connection errors. The timers below bound how long any slot is
//!   held, so the wait is bounded too.
//! - **Request head.** A request line and headers must arrive in full within `header_timeout`
//!   of the connection opening, or of the first byte after an idle keep-alive wait; otherwise
//!   the connection is closed (slowloris). Streams are not affected: the timer does not run
//!   while a response is being sent.
//! - **Idle keep-alive.** A connection with no request in progress and no byte received for
//!   `keep_alive_timeout` since its last response ended is closed. This timer is separate from
//!   the head timer (as Go's `IdleTimeout` is from `ReadHeaderTimeout`), so a keep-alive longer
//!   than a load balancer's idle timeout (60 s on many) can coexist with a short head timeout.
//!   hyper's own `header_read_timeout` cannot do that: it also runs while a kept-alive
//!   connection waits, so idle connections could never outlive the head timeout.
//! - **Stalled writes.** A response the client stops reading (its receive window closed, the
//!   socket's send buffer full) may wait at most `write_timeout` for the next byte to go out;
//!   then the connection is closed, which drops the response body and so cancels its
//!   generation (`http::generate`), freeing the engine slot. A client that reads slowly but
//!   steadily is not affected: every byte written restarts the timer.
//! - A request body that trickles in is bounded by `--body-timeout` where bodies are read
//!   (`http::json`).
//!
//! HTTP/2 is not served: no ALPN (the server has no TLS) and no h2c prior knowledge, so h2's
//! own timers and flow-control limits do not need configuring.
//!
//! This module does NOT route requests (see `http`) or decide when to shut down (see `serve`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::http::BodyWith;

/// File descriptors kept free for everything but connections (model file, downloads, the
/// runtime, the blocking pool) when the default cap is sized from `RLIMIT_NOFILE`.
pub const RESERVED_FILES: u64 = 128;

/// The default connection cap when the open-file limit allows more: beyond it memory, not file
/// descriptors, is the limit (each connection may buffer up to [`MAX_HEAD_BUFFER`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The most bytes a connection buffers while reading a request head (hyper's read buffer); a
/// larger head is refused with 431. Bounds the memory a slow client can pin per connection.
pub const MAX_HEAD_BUFFER: usize = 64 << 10;

/// The connection settings of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for a request head to arrive in full (see the module docs).
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait idle for its next request; zero turns keep-alive
    /// off (every response ends its connection).
    pub keep_alive_timeout: Duration,
    /// Time a write may wait for the client to make room (see the module docs).
    pub write_timeout: Duration,
    /// The most connections open at once; `None` sizes it from the open-file limit
    /// ([`default_max_connections`]).
    pub max_connections: Option<usize>,
}

/// The process's open-file limit (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before [`raise_file_limit`] raised it, if it did.
    pub raised_from: Option<u64>,
}

/// The current open-file limit, or `None` where it cannot be read.
// `rlim_t` is u64 on Linux, not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn file_limit() -> Option<FileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(FileLimit {
        soft: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
        raised_from: None,
    })
}

/// Raise the soft open-file limit to the hard limit (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do): a low soft limit (1024 on many systems) would otherwise make
/// `accept` fail long before memory runs out. Returns the limit now in force.
pub fn raise_file_limit() -> Option<FileLimit> {
    let before = file_limit()?;
    if before.soft >= before.hard {
        return Some(before);
    }
    let limit = libc::rlimit {
        rlim_cur: before.hard as libc::rlim_t,
        rlim_max: before.hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Some(before);
    }
    Some(FileLimit {
        soft: before.hard,
        raised_from: Some(before.soft),
        ..before
    })
}

/// The connections an open-file limit of `soft` leaves room for: all but
/// [`RESERVED_FILES`] (at least half of a tiny limit), at most [`DEFAULT_MAX_CONNECTIONS`].
pub fn default_max_connections(soft: u64) -> usize {
    let room = soft.saturating_sub(RESERVED_FILES).max(soft / 2).max(1);
    usize::try_from(room).map_or(DEFAULT_MAX_CONNECTIONS, |r| r.min(DEFAULT_MAX_CONNECTIONS))
}

/// `limits.max_connections`, or the default for the current open-file limit.
pub fn max_connections(limits: &ConnectionLimits) -> usize {
    limits.max_connections.unwrap_or_else(|| {
        file_limit().map_or(DEFAULT_MAX_CONNECTIONS, |l| default_max_connections(l.soft))
    })
}

/// Accept and serve connections until `stop` is cancelled; then stop accepting, let every
/// connection finish its response (keep-alive ends), and return once all are closed. Dropping
/// the returned future mid-way closes every connection at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let cap = max_connections(&limits);
    let slots = Arc::new(Semaphore::new(cap));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut at_cap_logged = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next() => {}
            permit = slots.clone().acquire_owned(), if slot.is_none() => {
                slot = Some(permit.expect("the semaphore is never closed"));
            }
            accepted = listener.accept(), if slot.is_some() => match accepted {
                Ok((tcp, _)) => {
                    let permit = slot.take().expect("accept runs with a slot");
                    connections.spawn(connection(tcp, app.clone(), limits, closing_rx.clone(), permit));
                    let open = cap - slots.available_permits();
                    if open == cap && !at_cap_logged {
                        tracing::warn!(
                            cap,
                            "connection cap reached: new connections wait in the listen \
                             backlog until one closes (--max-connections, \
                             BITNET_MAX_CONNECTIONS)"
                        );
                    }
                    at_cap_logged = open == cap;
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Errors of a connection that died in the backlog are skipped; anything else (out of file
/// descriptors or memory) is logged and retried after a pause, as hyper's and axum's loops do.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(
        "accepting a connection failed: {e}; retrying in 1 s. If this is `Too many open \
         files`, lower --max-connections or raise the open-file limit (ulimit -n, docker run \
         --ulimit nofile=N:N)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serve one connection until it ends, a timer closes it, or shutdown ends it gracefully.
async fn connection(
    tcp: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let request = Activity::request(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(BodyWith::new(body, request))),
                )
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None)
        .keep_alive(!limits.keep_alive_timeout.is_zero())
        .max_buf_size(MAX_HEAD_BUFFER);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(&limits);
        let changed = activity.changed.notified();
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closing.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                // Re-read: a byte or a request may have arrived since the deadline was taken.
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
        }
    }
}

/// Where a connection is, for its timers.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since then.
    Head(Instant),
    /// This many requests in progress (until their response bodies end).
    Busy(usize),
    /// The last response ended then, and no byte has arrived since.
    Idle(Instant),
}

#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    /// Since when a write has been waiting for the client to make room, if one is.
    write_blocked: Mutex<Option<Instant>>,
    /// Woken on every phase change, so the connection task re-arms its timer.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            write_blocked: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn set(&self, update: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = update(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    /// When the current phase's timer (or a stalled write's) fires, if one runs.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if let Some(since) = *self.write_blocked.lock().unwrap_or_else(|e| e.into_inner()) {
            return Some(since + limits.write_timeout);
        }
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Head(since) => Some(since + limits.header_timeout),
            // Without keep-alive hyper closes the connection once the response is written;
            // a timer here could cut its last bytes.
            Phase::Idle(_) if limits.keep_alive_timeout.is_zero() => None,
            Phase::Idle(since) => Some(since + limits.keep_alive_timeout),
            Phase::Busy(_) => None,
        }
    }

    /// Bytes arrived: an idle connection starts its next request head.
    fn received(&self) {
        if matches!(
            *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            Phase::Idle(_)
        ) {
            self.set(|phase| match phase {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    /// A write could not go out (`Pending`, `blocked`) or did (`!blocked`); the connection
    /// task is woken only when that changes, not on every write.
    fn write_blocked(&self, blocked: bool) {
        let mut since = self.write_blocked.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_some() != blocked {
            *since = blocked.then(Instant::now);
            drop(since);
            self.changed.notify_one();
        }
    }

    /// A request head was parsed: busy until the returned guard (held by the response body)
    /// is dropped.
    fn request(this: &Arc<Self>) -> RequestGuard {
        this.set(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        RequestGuard(this.clone())
    }
}

/// One request in progress on a connection.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.set(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// The TCP stream, telling [`Activity`] when bytes arrive and when writes stall.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_files_for_the_rest_and_stays_bounded() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(20_000), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(u64::MAX), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(100), 50);
        assert_eq!(default_max_connections(0), 1);
    }

    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_one() {
        let now = raise_file_limit().expect("RLIMIT_NOFILE is readable");
        assert_eq!(now.soft, now.hard, "{now:?}");
        assert_eq!(file_limit().map(|l| l.soft), Some(now.hard));
    }
}
