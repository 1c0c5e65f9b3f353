//! The network side: a listener with tuned sockets and a pipelined
//! connection handler that splices large WRITE payloads (Linux). Knows the
//! RPC record format and the dispatcher, nothing of NFS.

mod connection;
mod listener;
mod receive;
mod replies;
mod workers;

pub use connection::{connection_counts, handle_connection};
pub use listener::{bind, serve, serve_until};
pub use receive::{splice_counts, SpliceCounts};
