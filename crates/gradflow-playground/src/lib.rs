//! # gradflow-playground
//!
//! A local web page, in the spirit of TensorFlow Playground, that trains small
//! networks live with the real gradflow engine: the page (HTML, JS and CSS
//! embedded in the binary, nothing fetched from elsewhere) sends the setup,
//! a thread per session runs forward, backward and optimizer steps, and frames
//! (decision boundary, per-neuron heatmaps, weights, losses, gradient flow)
//! stream back over server-sent events.
//!
//! ```no_run
//! let opts = gradflow_playground::ServerOptions::default(); // 127.0.0.1:8080
//! gradflow_playground::serve_blocking(&opts, |url| println!("open {url}")).unwrap();
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod server;

pub use config::Config;
pub use engine::{Engine, Frame, StateView, Walk};
pub use error::{Error, Result};
pub use server::{router, AppState, Limits};

use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where to listen, and the caps.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Host or IP address to bind (default 127.0.0.1: only this machine can connect).
    pub host: String,
    /// Port (0 picks a free one; the URL reports it).
    pub port: u16,
    /// Caps and pacing.
    pub limits: Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            limits: Limits::default(),
        }
    }
}

/// The page's URL for a bound address.
pub fn url_for(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}/", addr.port())
}

/// A TCP listener that serves at most N connections at once (the rest wait in the backlog).
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

/// A connection holding one of the listener's permits until it closes.
struct LimitedIo {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, SocketAddr) {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await, // the semaphore is never closed
        };
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let _ = io.set_nodelay(true);
        (LimitedIo { io, _permit: permit }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<AppState>,
    limits: Limits,
}

impl Server {
    /// Bind `opts.host:opts.port` (port 0 picks a free port).
    pub async fn bind(opts: &ServerOptions) -> io::Result<Server> {
        let listener = TcpListener::bind((opts.host.as_str(), opts.port)).await?;
        let addr = listener.local_addr()?;
        Ok(Server {
            app: AppState::new(opts.limits.clone(), addr),
            listener,
            addr,
            limits: opts.limits.clone(),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        url_for(self.addr)
    }

    /// The shared state (sessions), e.g. to close them all.
    pub fn state(&self) -> Arc<AppState> {
        self.app.clone()
    }

    /// Serve until the process ends (or the future is dropped).
    pub async fn run(self) -> io::Result<()> {
        let app = self.app.clone();
        let reaper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                app.reap();
            }
        });
        let listener = LimitedListener {
            inner: self.listener,
            permits: Arc::new(Semaphore::new(self.limits.max_connections.max(1))),
        };
        let result = axum::serve(listener, router(self.app.clone())).await;
        reaper.abort();
        self.app.close_all();
        result
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("playground-http")
        .enable_all()
        .build()
}

/// Bind, call `ready` with the URL, and serve forever on a runtime of its own.
pub fn serve_blocking(opts: &ServerOptions, ready: impl FnOnce(&str)) -> io::Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let server = Server::bind(opts).await?;
        ready(&server.url());
        server.run().await
    })
}

/// A server running on a background thread (for tests and embedding); dropping it stops the server
/// and closes every session.
pub struct Running {
    /// The page's URL.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    app: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.app.session_count()
    }
}

/// Start a server on a background thread and return once it listens.
pub fn start(opts: &ServerOptions) -> io::Result<Running> {
    let rt = runtime()?;
    let server = rt.block_on(Server::bind(opts))?;
    let (url, addr, app) = (server.url(), server.addr(), server.state());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("playground-server".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = server.run() => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(Running {
        url,
        addr,
        app,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Drop for Running {
    fn drop(&mut self) {
        self.app.close_all();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
