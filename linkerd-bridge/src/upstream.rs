//! The HTTP/1 connections to the application, one pool per proxy runtime.
//!
//! Each proxy thread runs its own single-threaded runtime with its own [`Http1Pool`], so a
//! pooled connection is only ever used by the runtime that drives it. That makes the pool
//! hyper-util's legacy client with everything this case does not need taken out: one
//! destination (no pool key to hash), one thread (its lock is never contended), and no task
//! spawned per request to put a connection back once it is idle: a connection goes back when
//! its response body ends ([`AppBody`]), and a checkout takes the most recently returned one
//! that is ready for a request, so the busiest connections stay warm and the rest age out:
//! each return retires the oldest expired one, and a sweeper task ([`spawn_sweeper`]) closes
//! what is left once traffic stops.
//!
//! Errors behave as the legacy client's: a failed dial or a connection that fails before the
//! response is an error for the caller (`502`), and a request that a reused connection refused
//! before sending any of it (the application had just closed it) is retried once per reused
//! connection, on another one or a new one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::shared::lock;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The application could not be dialled.
    Connect,
    /// The connection failed before the response head arrived.
    Request,
}

/// A sender to an idle connection, with when it went idle.
struct Idle {
    send: SendRequest<Incoming>,
    since: Instant,
}

/// HTTP/1 keep-alive connections to one application address, for one runtime.
pub struct Http1Pool {
    connector: HttpConnector,
    /// The application's address, in the form the connector dials.
    target: http::Uri,
    /// Idle connections, the most recently returned last.
    idle: Mutex<VecDeque<Idle>>,
    /// How long a connection may stay idle before the pool closes it.
    idle_timeout: Duration,
}

impl Http1Pool {
    /// A pool dialling `target` (`http://ip:port/`) with `connector`, closing connections idle
    /// for longer than `idle_timeout`.
    pub fn new(connector: HttpConnector, target: http::Uri, idle_timeout: Duration) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `host` set) on a pooled connection or a new one; the
    /// response's body returns the connection to the pool when it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<AppBody>, SendError> {
        loop {
            let (mut send, reused) = match self.checkout() {
                Some(send) => (send, true),
                None => (self.connect().await?, false),
            };
            match send.try_send_request(req).await {
                Ok(resp) => {
                    let pool = Some((send, self.clone()));
                    return Ok(resp.map(|inner| AppBody { inner, pool }));
                }
                Err(mut e) => match e.take_message() {
                    // Nothing was sent: the connection had closed under us. A new connection
                    // refusing it is an error, as with the legacy client.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Request),
                },
            }
        }
    }

    /// The most recently returned idle connection that can take a request now; closed ones
    /// are dropped on the way.
    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = lock(&self.idle);
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].send.is_closed() {
                idle.remove(i);
            } else if idle[i].send.is_ready() {
                return idle.remove(i).map(|c| c.send);
            }
        }
        None
    }

    /// Returns a connection whose exchange is over; the oldest idle one goes if it has been
    /// idle too long (so a pool shrinks back after a burst while requests keep coming).
    fn checkin(&self, send: SendRequest<Incoming>) {
        if send.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        if idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) > self.idle_timeout)
        {
            idle.pop_front();
        }
        idle.push_back(Idle { send, since: now });
    }

    /// Closes every idle connection that has been idle too long or was closed by the
    /// application. Connections go idle in order, so the longest idle are at the front.
    fn close_expired(&self, now: Instant) {
        lock(&self.idle)
            .retain(|c| !c.send.is_closed() && now.duration_since(c.since) <= self.idle_timeout);
    }

    /// Dials the application and starts the connection's task (which also carries upgrades).
    async fn connect(&self) -> Result<SendRequest<Incoming>, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|_| SendError::Connect)?;
        let (send, conn) = http1::Builder::new()
            .handshake::<TokioIo<_>, Incoming>(io)
            .await
            .map_err(|_| SendError::Connect)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }
}

/// Starts the task that closes `pool`'s expired idle connections every half idle timeout, on
/// the current Tokio runtime (none outside one), until the pool is dropped. [`Http1Pool::checkin`] retires at most one
/// expired connection per returned one, so without this a pool whose traffic stopped would keep
/// a burst's connections (and the application's sockets) open indefinitely.
pub fn spawn_sweeper(pool: &Arc<Http1Pool>) {
    let pool = Arc::downgrade(pool);
    let period = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(10)),
        None => return,
    };
    // Outside a runtime there is nothing to run it on; `checkin` still retires connections.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the pool is empty then.
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(p) => p.close_expired(Instant::now()),
                None => return,
            }
        }
    });
}

/// The application's response body; returns its connection to the pool when it has ended.
pub struct AppBody {
    inner: Incoming,
    pool: Option<(SendRequest<Incoming>, Arc<Http1Pool>)>,
}

impl AppBody {
    /// A body whose connection is not pooled here (HTTP/2, where the client multiplexes).
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, pool: None }
    }

    /// Keeps the connection out of the pool: it was handed over to an upgrade.
    pub fn forget_connection(&mut self) {
        self.pool = None;
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // A body that failed leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.pool = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl AppBody {
    fn give_back(&mut self) {
        if let Some((send, pool)) = self.pool.take() {
            pool.checkin(send);
        }
    }
}

impl Drop for AppBody {
    fn drop(&mut self) {
        // hyper stops polling a body it knows has ended (a `content-length` reached); one
        // dropped before its end leaves the connection mid-message, which hyper closes.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A pool left idle closes its connections once they pass the idle timeout: the
    /// application sees each socket end without any further request through the pool.
    #[tokio::test]
    async fn idle_connections_close_without_further_requests() {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: http::Uri = format!("http://{}/", app.local_addr().unwrap())
            .parse()
            .unwrap();
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = app.accept().await {
                let closed = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    let _ = closed.send(());
                });
            }
        });
        let pool = Arc::new(Http1Pool::new(
            HttpConnector::new(),
            target,
            Duration::from_millis(100),
        ));
        spawn_sweeper(&pool);
        for _ in 0..3 {
            let send = pool.connect().await.unwrap();
            pool.checkin(send);
        }
        assert_eq!(lock(&pool.idle).len(), 3);
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
                .await
                .expect("an idle connection past its timeout was not closed")
                .unwrap();
        }
        assert_eq!(lock(&pool.idle).len(), 0);
    }

    /// The sweeper ends with its pool rather than keeping the runtime busy.
    #[tokio::test]
    async fn the_sweeper_stops_when_its_pool_is_dropped() {
        let pool = Arc::new(Http1Pool::new(
            HttpConnector::new(),
            "http://127.0.0.1:9/".parse().unwrap(),
            Duration::from_millis(20),
        ));
        spawn_sweeper(&pool);
        let weak = Arc::downgrade(&pool);
        drop(pool);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(weak.upgrade().is_none());
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(metrics.num_alive_tasks(), 0);
    }
}
