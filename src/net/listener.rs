//! Binding with socket2 (buffers, reuse) and the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connection::handle_connection;
use crate::config::NetworkConfig;
use crate::rpc::Dispatcher;

/// Applies the socket options from tuning.toml to a connected socket.
pub(crate) fn tune(stream: &TcpStream, cfg: &NetworkConfig) {
    let sock = SockRef::from(stream);
    if let Err(e) = sock.set_nodelay(cfg.nodelay) {
        tracing::warn!(error = %e, "TCP_NODELAY");
    }
    if let Err(e) = sock.set_send_buffer_size(cfg.send_buffer) {
        tracing::warn!(error = %e, size = cfg.send_buffer, "SO_SNDBUF");
    }
    if let Err(e) = sock.set_recv_buffer_size(cfg.recv_buffer) {
        tracing::warn!(error = %e, size = cfg.recv_buffer, "SO_RCVBUF");
    }
}

/// Binds a listening socket; buffers are set before listen() so accepted
/// sockets inherit a window scale large enough for them.
pub fn bind(addr: SocketAddr, cfg: &NetworkConfig) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("creating the listening socket")?;
    socket.set_reuse_address(true)?;
    let _ = socket.set_recv_buffer_size(cfg.recv_buffer);
    let _ = socket.set_send_buffer_size(cfg.send_buffer);
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into()).context("registering the listener with tokio")
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, dispatcher: Arc<Dispatcher>, cfg: NetworkConfig) {
    let (_keep, never) = watch::channel(false);
    serve_until(listener, dispatcher, cfg, never).await
}

/// Accepts connections until `stop` turns true, then stops accepting
/// (the listening socket is closed: new connections are refused), lets
/// every connection finish the calls it has read and send their replies
/// (see [`handle_connection`]), and returns once they are all closed.
pub async fn serve_until(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    cfg: NetworkConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped as new ones come.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tune(&stream, &cfg);
                let dispatcher = dispatcher.clone();
                let cfg = cfg.clone();
                let stop = stop.clone();
                connections.spawn(async move {
                    handle_connection(stream, peer, dispatcher, cfg, stop).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    if !connections.is_empty() {
        tracing::info!(
            connections = connections.len(),
            "stopping: connections finish the calls they have read"
        );
    }
    while connections.join_next().await.is_some() {}
}
