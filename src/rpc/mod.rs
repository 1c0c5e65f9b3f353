//! ONC RPC version 2 (RFC 5531) over TCP: record marking, call headers,
//! AUTH_NONE / AUTH_SYS credentials and reply encoding.
//!
//! This layer knows nothing of NFS: programs register with a [`Dispatcher`]
//! and get the procedure number, the credentials and the argument bytes.

pub mod complaints;
pub mod duplicates;
pub mod hold;
pub mod message;
pub mod record;
pub mod reply;

pub use duplicates::{CallKey, DuplicateReplies};
pub use hold::{Hold, Release};
pub use message::{
    AcceptError, AuthSys, BulkArgument, BulkData, BulkSpan, CallContext, Credentials, Dispatcher,
    Outcome, Program,
};
pub use reply::{Reply, ReplyBody, ReplyPart};
