//! RPC call headers, credentials, reply encoding and program dispatch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::reply::{Reply, ReplyBody};
use crate::pipe::Pipe;
use crate::xdr::{Decoder, Encoder, XdrResult};

const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;

const ACCEPT_SUCCESS: u32 = 0;
const ACCEPT_PROG_UNAVAIL: u32 = 1;
const ACCEPT_PROG_MISMATCH: u32 = 2;
const ACCEPT_PROC_UNAVAIL: u32 = 3;
const ACCEPT_GARBAGE_ARGS: u32 = 4;
const ACCEPT_SYSTEM_ERR: u32 = 5;

const REJECT_RPC_MISMATCH: u32 = 0;
const REJECT_AUTH_ERROR: u32 = 1;
const AUTH_BADCRED: u32 = 1;
const AUTH_TOOWEAK: u32 = 5;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;

/// Largest credential or verifier body (RFC 5531 §8.2).
const MAX_AUTH_BYTES: usize = 400;

/// AUTH_SYS parameters (RFC 5531 appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSys {
    pub stamp: u32,
    pub machine: String,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Sys(AuthSys),
}

impl Credentials {
    /// AUTH_SYS credentials (stamp 0) of `uid` and `gid` on `machine`, with
    /// the supplementary groups `gids`: what a client sends.
    pub fn sys(machine: &str, uid: u32, gid: u32, gids: &[u32]) -> Credentials {
        Credentials::Sys(AuthSys {
            stamp: 0,
            machine: machine.to_string(),
            uid,
            gid,
            gids: gids.to_vec(),
        })
    }

    /// The caller's uid, `nobody` (65534) for AUTH_NONE.
    pub fn uid(&self) -> u32 {
        match self {
            Credentials::Sys(s) => s.uid,
            Credentials::None => 65534,
        }
    }

    pub fn gid(&self) -> u32 {
        match self {
            Credentials::Sys(s) => s.gid,
            Credentials::None => 65534,
        }
    }

    /// Opaque identity of the principal (used to tell clients apart).
    pub fn principal(&self) -> String {
        match self {
            Credentials::Sys(s) => format!("sys:{}@{}", s.uid, s.machine),
            Credentials::None => "none".to_string(),
        }
    }
}

/// What a program sees of one call.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub xid: u32,
    pub version: u32,
    pub procedure: u32,
    pub credentials: Credentials,
    pub peer: Option<SocketAddr>,
    /// The call's bulk argument when the transport kept it out of the
    /// record (see [`BulkData`]).
    pub bulk: Option<Arc<BulkData>>,
    /// Tried in place on the network thread that read it (see
    /// [`Dispatcher::try_in_place`]): the program must not block, and
    /// answers [`AcceptError::NeedsThread`] before it would.
    pub in_place: bool,
}

impl CallContext {
    /// Who sent the call, for a duplicate request cache: the principal and
    /// the client's address (not its port: a retransmission may come on a
    /// new connection). Hashed in place, without building strings.
    pub fn caller_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match &self.credentials {
            Credentials::Sys(s) => (s.uid, s.machine.as_str()).hash(&mut h),
            Credentials::None => "none".hash(&mut h),
        }
        self.peer.map(|p| p.ip()).hash(&mut h);
        h.finish()
    }
}

/// Where a call's bulk argument (a WRITE payload) lies in its record, as
/// found from the record's head by [`Dispatcher::locate_bulk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSpan {
    /// Offset of the first data byte in the record.
    pub record_at: usize,
    /// The same offset counted from the start of the program's arguments.
    pub args_at: usize,
    /// Data bytes (the XDR padding after them is not counted).
    pub len: usize,
    /// Calls with the same key are run one at a time in arrival order on
    /// their connection (see [`BulkArgument::order`]).
    pub order: u64,
}

/// A call's bulk argument as its program locates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkArgument {
    /// Offset of the first data byte in the program's arguments.
    pub at: usize,
    /// Data bytes.
    pub len: usize,
    /// Which calls this one would only queue behind anyway — for a WRITE,
    /// the file's: the transport runs calls with the same key in arrival
    /// order, one at a time, instead of waking a thread for each to wait
    /// its turn on the file.
    pub order: u64,
}

/// A bulk argument that never entered user space: the transport moved it
/// from the socket into pipes (one after another, as each filled) and cut
/// it (with its XDR padding) out of the record, so the arguments go on
/// right after its length word. The operation that owns it writes it from
/// the pipes to its destination.
#[derive(Debug)]
pub struct BulkData {
    /// Offset, in the arguments, where the data would have started.
    pub at: usize,
    pub len: usize,
    /// The data in order: all of the first pipe's, then the next one's.
    pub pipes: Vec<Pipe>,
    /// [`BulkSpan::order`].
    pub order: u64,
}

/// The accept_stat failures a program can return instead of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    ProcUnavail,
    GarbageArgs,
    SystemErr,
    /// A call tried in place would block (or change state before it
    /// could find out): it is run again on a thread that may wait.
    NeedsThread,
}

/// An RPC program served by this server.
pub trait Program: Send + Sync {
    fn number(&self) -> u32;
    /// Lowest and highest version served.
    fn versions(&self) -> (u32, u32);
    /// Handles one call; writes the results (after the accept header) into
    /// `out`.
    fn call(&self, ctx: &CallContext, args: &[u8], out: &mut ReplyBody) -> Result<(), AcceptError>;
    /// Where the bulk argument of a call is, judged from the head of its arguments alone, or None when the call
    /// has none worth keeping out of the record.
    fn bulk_argument(
        &self,
        _version: u32,
        _procedure: u32,
        _args_head: &[u8],
    ) -> Option<BulkArgument> {
        None
    }
    /// Whether a call may be tried in place, on the network thread that
    /// read it, with `CallContext::in_place` set (see
    /// [`Dispatcher::try_in_place`]).
    fn may_run_in_place(&self, _version: u32, _procedure: u32) -> bool {
        false
    }
    /// Whether a call moves file data (READ, WRITE, COMMIT): such calls
    /// wait on the disk and run apart from the rest, so metadata calls do
    /// not queue behind them. Judged from the head of the arguments.
    fn is_data_call(&self, _version: u32, _procedure: u32, _args_head: &[u8]) -> bool {
        false
    }
    /// The file data a call's reply will carry at most (a READ's count),
    /// judged from the head of its arguments; 0 for calls with small
    /// replies. The transport budgets each connection's unsent replies
    /// with it.
    fn reply_data_hint(&self, _version: u32, _procedure: u32, _args_head: &[u8]) -> u32 {
        0
    }
}

/// See [`Dispatcher::admission`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub data: bool,
    pub reply_data: u32,
}

/// What to do with one received record.
#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// A reply to send once its hold lets it go (what it reports is not
    /// yet durable); the thread that ran the call is free meanwhile.
    Held(Reply, super::Hold),
    /// A REPLY message or other record that needs no answer.
    Ignore,
    /// The record cannot be answered (no xid): close the connection.
    Close(&'static str),
}

/// Routes calls to programs by number and version: one program number may
/// have several programs (NFS v3 and v4 are both program 100003).
#[derive(Default, Clone)]
pub struct Dispatcher {
    programs: HashMap<u32, Vec<Arc<dyn Program>>>,
}

struct CallHeader {
    xid: u32,
    rpcvers: u32,
    prog: u32,
    vers: u32,
    procedure: u32,
}

fn decode_auth(d: &mut Decoder<'_>) -> XdrResult<(u32, Vec<u8>)> {
    let flavor = d.u32()?;
    let body = d.opaque(MAX_AUTH_BYTES)?;
    Ok((flavor, body.to_vec()))
}

fn decode_auth_sys(body: &[u8]) -> XdrResult<AuthSys> {
    let mut d = Decoder::new(body);
    let stamp = d.u32()?;
    let machine = String::from_utf8_lossy(d.opaque(255)?).into_owned();
    let uid = d.u32()?;
    let gid = d.u32()?;
    let n = d.count(16, 4)?;
    let mut gids = Vec::with_capacity(n);
    for _ in 0..n {
        gids.push(d.u32()?);
    }
    Ok(AuthSys {
        stamp,
        machine,
        uid,
        gid,
        gids,
    })
}

fn reply_head(xid: u32) -> Encoder {
    let mut e = Encoder::with_buffer(Vec::with_capacity(256));
    e.u32(xid);
    e.u32(MSG_REPLY);
    e
}

fn accepted(xid: u32, stat: u32) -> Encoder {
    let mut e = reply_head(xid);
    e.u32(MSG_ACCEPTED);
    e.u32(AUTH_NONE); // verifier
    e.u32(0);
    e.u32(stat);
    e
}

fn reply_of(e: Encoder) -> Outcome {
    Outcome::Reply(e.buf.into())
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, program: Arc<dyn Program>) {
        self.programs
            .entry(program.number())
            .or_default()
            .push(program);
    }

    /// The program serving version `vers` of program number `prog`.
    fn program(&self, prog: u32, vers: u32) -> Option<&Arc<dyn Program>> {
        self.programs.get(&prog)?.iter().find(|p| {
            let (low, high) = p.versions();
            (low..=high).contains(&vers)
        })
    }

    /// Finds a call's bulk argument from the first bytes of its record
    /// (`head`), so the transport can move it without copying. None for
    /// anything that is not a well-formed call to a registered program that
    /// places one within `head`'s reach.
    pub fn locate_bulk(&self, head: &[u8]) -> Option<BulkSpan> {
        let (program, vers, procedure, args_start) = self.call_head(head)?;
        let arg = program.bulk_argument(vers, procedure, &head[args_start..])?;
        Some(BulkSpan {
            record_at: args_start + arg.at,
            args_at: arg.at,
            len: arg.len,
            order: arg.order,
        })
    }

    /// How the transport admits the call in `record`, from one reading of
    /// its header: whether it moves file data ([`Program::is_data_call`])
    /// and the file data its reply may carry
    /// ([`Program::reply_data_hint`]). Not data, 0 bytes, for anything not
    /// well-formed.
    pub fn admission(&self, record: &[u8]) -> Admission {
        self.call_head(record)
            .map_or(Admission::default(), |(program, vers, procedure, at)| {
                let args = &record[at..];
                Admission {
                    data: program.is_data_call(vers, procedure, args),
                    reply_data: program.reply_data_hint(vers, procedure, args),
                }
            })
    }

    /// The program, version and procedure a call record is for, and where
    /// its arguments start; None for anything but a well-formed call to a
    /// registered program.
    fn call_head(&self, head: &[u8]) -> Option<(&Arc<dyn Program>, u32, u32, usize)> {
        let mut d = Decoder::new(head);
        let _xid = d.u32().ok()?;
        if d.u32().ok()? != MSG_CALL || d.u32().ok()? != RPC_VERSION {
            return None;
        }
        let (prog, vers, procedure) = (d.u32().ok()?, d.u32().ok()?, d.u32().ok()?);
        for _ in 0..2 {
            // Credentials, then verifier: flavor and opaque body.
            let _flavor = d.u32().ok()?;
            d.opaque(MAX_AUTH_BYTES).ok()?;
        }
        let program = self.program(prog, vers)?;
        Some((program, vers, procedure, d.position()))
    }

    /// Decodes one record, calls the program and encodes the reply; a held
    /// reply is waited for here (callers taking one call at a time).
    pub fn dispatch(&self, record: &[u8], peer: Option<SocketAddr>) -> Outcome {
        match self.dispatch_with_bulk(record, None, peer) {
            Outcome::Held(reply, hold) => match hold.wait(reply) {
                Some(reply) => Outcome::Reply(reply),
                None => Outcome::Close("a held reply was dropped"),
            },
            outcome => outcome,
        }
    }

    /// [`Dispatcher::dispatch`] for a record whose bulk argument was cut
    /// out of it and travels in `bulk`.
    pub fn dispatch_with_bulk(
        &self,
        record: &[u8],
        bulk: Option<Arc<BulkData>>,
        peer: Option<SocketAddr>,
    ) -> Outcome {
        self.dispatch_as(record, bulk, peer, false)
            .unwrap_or(Outcome::Close(
                "a call not tried in place asked for a thread",
            ))
    }

    /// Runs a call on the calling thread if its program answers it from
    /// memory, without blocking: a hand-off to a metadata thread and back
    /// costs two thread wake-ups, more than a GETATTR or LOOKUP itself.
    /// None when the call must go to a thread that may wait (it has had no
    /// effect yet).
    pub fn try_in_place(&self, record: &[u8], peer: Option<SocketAddr>) -> Option<Outcome> {
        let (program, vers, procedure, _) = self.call_head(record)?;
        if !program.may_run_in_place(vers, procedure) {
            return None;
        }
        self.dispatch_as(record, None, peer, true)
    }

    /// Dispatch; None only in place, for a call that needs a thread.
    fn dispatch_as(
        &self,
        record: &[u8],
        bulk: Option<Arc<BulkData>>,
        peer: Option<SocketAddr>,
        in_place: bool,
    ) -> Option<Outcome> {
        let mut d = Decoder::new(record);
        let Ok(xid) = d.u32() else {
            return Some(Outcome::Close("record too short for an RPC header"));
        };
        match d.u32() {
            Ok(MSG_CALL) => {}
            Ok(MSG_REPLY) => return Some(Outcome::Ignore),
            _ => return Some(Outcome::Close("record is neither an RPC call nor a reply")),
        }
        let header = (|| -> XdrResult<CallHeader> {
            Ok(CallHeader {
                xid,
                rpcvers: d.u32()?,
                prog: d.u32()?,
                vers: d.u32()?,
                procedure: d.u32()?,
            })
        })();
        let Ok(h) = header else {
            return Some(reply_of(accepted(xid, ACCEPT_GARBAGE_ARGS)));
        };
        if h.rpcvers != RPC_VERSION {
            let mut e = reply_head(h.xid);
            e.u32(MSG_DENIED);
            e.u32(REJECT_RPC_MISMATCH);
            e.u32(RPC_VERSION);
            e.u32(RPC_VERSION);
            return Some(reply_of(e));
        }
        let auth_error = |stat: u32| {
            let mut e = reply_head(h.xid);
            e.u32(MSG_DENIED);
            e.u32(REJECT_AUTH_ERROR);
            e.u32(stat);
            reply_of(e)
        };
        let (Ok((flavor, body)), Ok(_verifier)) = (decode_auth(&mut d), decode_auth(&mut d)) else {
            return Some(auth_error(AUTH_BADCRED));
        };
        let credentials = match flavor {
            AUTH_NONE => Credentials::None,
            AUTH_SYS => match decode_auth_sys(&body) {
                Ok(s) => Credentials::Sys(s),
                Err(_) => return Some(auth_error(AUTH_BADCRED)),
            },
            _ => return Some(auth_error(AUTH_TOOWEAK)),
        };
        let Some(served) = self.programs.get(&h.prog) else {
            return Some(reply_of(accepted(h.xid, ACCEPT_PROG_UNAVAIL)));
        };
        let Some(program) = self.program(h.prog, h.vers) else {
            // The lowest and highest versions served (RFC 5531 §9).
            let low = served.iter().map(|p| p.versions().0).min().unwrap_or(0);
            let high = served.iter().map(|p| p.versions().1).max().unwrap_or(0);
            let mut e = accepted(h.xid, ACCEPT_PROG_MISMATCH);
            e.u32(low);
            e.u32(high);
            return Some(reply_of(e));
        };
        let ctx = CallContext {
            xid: h.xid,
            version: h.vers,
            procedure: h.procedure,
            credentials,
            peer,
            bulk,
            in_place,
        };
        let mut body = ReplyBody::new(accepted(h.xid, ACCEPT_SUCCESS).buf);
        let stat = match program.call(&ctx, d.rest(), &mut body) {
            Ok(()) => {
                return Some(match body.take_hold() {
                    Some(hold) => Outcome::Held(body.finish(), hold),
                    None => Outcome::Reply(body.finish()),
                })
            }
            Err(AcceptError::NeedsThread) if in_place => return None,
            Err(AcceptError::ProcUnavail) => ACCEPT_PROC_UNAVAIL,
            Err(AcceptError::GarbageArgs) => ACCEPT_GARBAGE_ARGS,
            Err(AcceptError::SystemErr | AcceptError::NeedsThread) => ACCEPT_SYSTEM_ERR,
        };
        Some(reply_of(accepted(h.xid, stat)))
    }
}

/// Builds a call header (used by the project's own client and by tests).
pub fn encode_call(
    e: &mut Encoder,
    xid: u32,
    prog: u32,
    vers: u32,
    procedure: u32,
    auth: &Credentials,
) {
    e.u32(xid);
    e.u32(MSG_CALL);
    e.u32(RPC_VERSION);
    e.u32(prog);
    e.u32(vers);
    e.u32(procedure);
    match auth {
        Credentials::None => {
            e.u32(AUTH_NONE);
            e.u32(0);
        }
        Credentials::Sys(s) => {
            let mut b = Encoder::new();
            b.u32(s.stamp);
            b.string(&s.machine);
            b.u32(s.uid);
            b.u32(s.gid);
            b.u32(s.gids.len() as u32);
            for g in &s.gids {
                b.u32(*g);
            }
            e.u32(AUTH_SYS);
            e.opaque(&b.buf);
        }
    }
    e.u32(AUTH_NONE);
    e.u32(0);
}

/// The status of a decoded reply, for clients and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyStatus {
    Success,
    ProgUnavail,
    ProgMismatch { low: u32, high: u32 },
    ProcUnavail,
    GarbageArgs,
    SystemErr,
    RpcMismatch { low: u32, high: u32 },
    AuthError(u32),
}

/// Decodes a reply header; returns (xid, status, offset of the results).
pub fn decode_reply(record: &[u8]) -> XdrResult<(u32, ReplyStatus, usize)> {
    let mut d = Decoder::new(record);
    let xid = d.u32()?;
    let _msg_type = d.u32()?;
    let status = match d.u32()? {
        MSG_ACCEPTED => {
            decode_auth(&mut d)?;
            match d.u32()? {
                ACCEPT_SUCCESS => ReplyStatus::Success,
                ACCEPT_PROG_UNAVAIL => ReplyStatus::ProgUnavail,
                ACCEPT_PROG_MISMATCH => ReplyStatus::ProgMismatch {
                    low: d.u32()?,
                    high: d.u32()?,
                },
                ACCEPT_PROC_UNAVAIL => ReplyStatus::ProcUnavail,
                ACCEPT_GARBAGE_ARGS => ReplyStatus::GarbageArgs,
                _ => ReplyStatus::SystemErr,
            }
        }
        _ => match d.u32()? {
            REJECT_RPC_MISMATCH => ReplyStatus::RpcMismatch {
                low: d.u32()?,
                high: d.u32()?,
            },
            _ => ReplyStatus::AuthError(d.u32()?),
        },
    };
    Ok((xid, status, d.position()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Program for Echo {
        fn number(&self) -> u32 {
            99
        }
        fn versions(&self) -> (u32, u32) {
            (1, 2)
        }
        fn call(
            &self,
            ctx: &CallContext,
            args: &[u8],
            out: &mut ReplyBody,
        ) -> Result<(), AcceptError> {
            match ctx.procedure {
                0 => Ok(()),
                1 => {
                    out.opaque_data(args.to_vec());
                    out.enc().u32(ctx.credentials.uid());
                    Ok(())
                }
                2 => Err(AcceptError::GarbageArgs),
                _ => Err(AcceptError::ProcUnavail),
            }
        }
    }

    fn call(prog: u32, vers: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new();
        let auth = Credentials::Sys(AuthSys {
            stamp: 1,
            machine: "m".into(),
            uid: 501,
            gid: 20,
            gids: vec![20, 12],
        });
        encode_call(&mut e, 7, prog, vers, procedure, &auth);
        e.buf.extend_from_slice(args);
        e.buf
    }

    fn status_of(o: Outcome) -> (ReplyStatus, Vec<u8>) {
        let Outcome::Reply(r) = o else {
            panic!("expected a reply, got {o:?}")
        };
        let v = r.to_vec();
        let (xid, st, off) = decode_reply(&v).unwrap();
        assert_eq!(xid, 7);
        (st, v[off..].to_vec())
    }

    #[test]
    fn accept_and_reject_paths() {
        let mut disp = Dispatcher::new();
        disp.register(Arc::new(Echo));
        let (st, body) = status_of(disp.dispatch(&call(99, 1, 1, &[1, 2, 3, 4, 5]), None));
        assert_eq!(st, ReplyStatus::Success);
        assert_eq!(body, [0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 1, 245]);
        assert_eq!(
            status_of(disp.dispatch(&call(98, 1, 0, &[]), None)).0,
            ReplyStatus::ProgUnavail
        );
        assert_eq!(
            status_of(disp.dispatch(&call(99, 3, 0, &[]), None)).0,
            ReplyStatus::ProgMismatch { low: 1, high: 2 }
        );
        assert_eq!(
            status_of(disp.dispatch(&call(99, 1, 9, &[]), None)).0,
            ReplyStatus::ProcUnavail
        );
        assert_eq!(
            status_of(disp.dispatch(&call(99, 1, 2, &[]), None)).0,
            ReplyStatus::GarbageArgs
        );
        let mut bad = call(99, 1, 0, &[]);
        bad[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            status_of(disp.dispatch(&bad, None)).0,
            ReplyStatus::RpcMismatch { low: 2, high: 2 }
        );
        let mut gss = call(99, 1, 0, &[]);
        gss[24..28].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(
            status_of(disp.dispatch(&gss, None)).0,
            ReplyStatus::AuthError(AUTH_TOOWEAK)
        );
        assert!(matches!(disp.dispatch(&[1, 2], None), Outcome::Close(_)));
    }
}
