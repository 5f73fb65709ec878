//! The listeners' edge, before any request: accepting connections under `max_connections` per
//! listener, closing those that do not finish their TLS handshake (with TLS on) and send their
//! opening (the HTTP/2 preface on gRPC, their first bytes on HTTP) within `header_read_timeout`,
//! and serving HTTP with hyper's header-read timeout and HTTP/2 keep-alive. Every connection
//! closed here is counted in `suivi_connections_refused_total{listener, reason}`. It knows
//! nothing of what is served, nor of where TLS certificates come from (`tls`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::telemetry;
use crate::tls::Acceptor;

/// What every HTTP/2 connection opens with.
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Connections whose opening arrived, waiting for their server to take them.
const OPENED_QUEUE: usize = 64;
/// The pause after a failed accept (such as too many open files) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The bounds of both listeners.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

/// Which listener, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// HTTP/1 and HTTP/2.
    Http,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Grpc => "grpc",
            Listener::Http => "http",
        }
    }
}

/// An accepted connection whose opening arrived in time. It holds its place under
/// `max_connections` until dropped, and replays the opening bytes before the rest.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    opening: Vec<u8>,
    replayed: usize,
    _place: Place,
}

/// A connection's place under its listener's bound.
#[derive(Debug)]
struct Place {
    _permit: OwnedSemaphorePermit,
    listener: Listener,
}

impl Place {
    fn new(permit: OwnedSemaphorePermit, listener: Listener) -> Place {
        telemetry::record_connection_open(listener.as_str(), 1.0);
        Place {
            _permit: permit,
            listener,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        telemetry::record_connection_open(self.listener.as_str(), -1.0);
    }
}

/// A connection's byte stream: as it came, or decrypted.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this
            .opening
            .get(this.replayed..)
            .filter(|rest| !rest.is_empty())
        {
            let count = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..count]);
            this.replayed += count;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.tcp().connect_info()
    }
}

/// Accepts connections on `listener` until `stop`: past `max_connections` open ones a new one is
/// closed at once; each other one is handed over once, within `header_read_timeout`, its TLS
/// handshake finished (with `tls`, on the configuration current when it was accepted) and its
/// opening arrived (on gRPC, the whole HTTP/2 preface), else closed.
pub fn accept(
    listener: TcpListener,
    which: Listener,
    settings: ListenerSettings,
    tls: Option<Acceptor>,
    stop: CancellationToken,
) -> impl futures::Stream<Item = io::Result<Connection>> + Send + 'static {
    let (opened, connections) = mpsc::channel(OPENED_QUEUE);
    let places = Arc::new(Semaphore::new(settings.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(listener = which.as_str(), error = %telemetry::chain(&error), "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = places.clone().try_acquire_owned() else {
                telemetry::record_connection_refused(which.as_str(), "too_many_connections");
                drop(stream);
                continue;
            };
            let place = Place::new(permit, which);
            let opened = opened.clone();
            let tls = tls.as_ref().map(|tls| TlsAcceptor::from(tls.current()));
            tokio::spawn(async move {
                // Small answers must not wait for Nagle's algorithm.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(error = %telemetry::chain(&error), "cannot set TCP_NODELAY");
                }
                let opening =
                    tokio::time::timeout(settings.header_read_timeout, open(stream, tls)).await;
                let (stream, opening) = match opening {
                    Ok(Ok(opened)) => opened,
                    Ok(Err(Unopened::TlsFailed(error))) => {
                        tracing::debug!(listener = which.as_str(), error = %telemetry::chain(&error), "TLS handshake failed");
                        telemetry::record_connection_refused(
                            which.as_str(),
                            "tls_handshake_failed",
                        );
                        return;
                    }
                    // Closed or reset by the client before it said anything: nothing to count.
                    Ok(Err(Unopened::Closed)) => return,
                    Err(_elapsed) => {
                        telemetry::record_connection_refused(which.as_str(), "handshake_timeout");
                        return;
                    }
                };
                if which == Listener::Grpc && opening != HTTP2_PREFACE {
                    telemetry::record_connection_refused(which.as_str(), "not_http2");
                    return;
                }
                let connection = Connection {
                    stream,
                    opening,
                    replayed: 0,
                    _place: place,
                };
                // The server stopped: the connection is closed with it.
                let _ = opened.send(Ok(connection)).await;
            });
        }
    });
    ReceiverStream::new(connections)
}

/// Why a connection did not open.
enum Unopened {
    /// Closed or reset by the client.
    Closed,
    /// Its TLS handshake failed.
    TlsFailed(io::Error),
}

/// Opens a connection: its TLS handshake with `tls`, if any, then its opening, read from the
/// decrypted stream.
async fn open(stream: TcpStream, tls: Option<TlsAcceptor>) -> Result<(Stream, Vec<u8>), Unopened> {
    let mut stream = match tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => Stream::Tls(Box::new(stream)),
            Err(error) if closed(&error) => return Err(Unopened::Closed),
            Err(error) => return Err(Unopened::TlsFailed(error)),
        },
    };
    let opening = read_opening(&mut stream)
        .await
        .map_err(|_| Unopened::Closed)?;
    Ok((stream, opening))
}

/// Whether `error` is the peer closing or resetting the connection, rather than a failure of
/// TLS itself.
fn closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads a connection's first bytes: the HTTP/2 preface whole, or up to where they differ from it.
async fn read_opening(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut opening = Vec::with_capacity(HTTP2_PREFACE.len());
    let mut buf = [0u8; HTTP2_PREFACE.len()];
    while opening.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&opening) {
        let read = stream
            .read(&mut buf[..HTTP2_PREFACE.len() - opening.len()])
            .await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        opening.extend_from_slice(&buf[..read]);
    }
    Ok(opening)
}

/// Serves `router` over HTTP/1 and HTTP/2 on `connections` until `stop`, then lets the
/// connections finish what they hold.
pub async fn serve_http(
    connections: impl futures::Stream<Item = io::Result<Connection>> + Send + 'static,
    router: Router,
    settings: ListenerSettings,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keepalive_interval)
        .keep_alive_timeout(settings.http2_keepalive_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = std::pin::pin!(connections);
    loop {
        let connection = tokio::select! {
            next = connections.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => break,
            },
            () = stop.cancelled() => break,
        };
        let served = builder
            .serve_connection_with_upgrades(
                TokioIo::new(connection),
                TowerToHyperService::new(router.clone()),
            )
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(error) = served.await {
                if error
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
                {
                    telemetry::record_connection_refused(
                        Listener::Http.as_str(),
                        "header_read_timeout",
                    );
                }
                tracing::debug!(error = %telemetry::chain(&*error), "HTTP connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
