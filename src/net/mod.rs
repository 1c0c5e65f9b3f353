//! The network side: a listener with tuned sockets and a pipelined
//! connection handler. Knows the RPC record format and the dispatcher,
//! nothing of NFS.

mod connection;
mod listener;

pub use connection::handle_connection;
pub use listener::{bind, serve};
