//! The reply a COMPOUND gives in place of its held one when a change it
//! made cannot be made durable (see `export::held_reply`): the reply cut at
//! that change's operation, with the operation's error, as if the COMPOUND
//! had stopped there — what the operation would have answered had it
//! waited. Operations after it have run in memory; like the failed change,
//! they are then not durable either (a journal that cannot be written
//! fails every change).

use super::compound::failure_words;
use super::consts::Status;
use crate::rpc::Reply;

/// An operation's place in a COMPOUND reply: its number, where its result
/// begins, and how many results the reply holds up to and with it.
#[derive(Clone, Copy, Default)]
pub(crate) struct OpAt {
    pub opnum: u32,
    pub result_at: usize,
    pub results: u32,
}

/// Where a COMPOUND reply's overall status and result count are.
#[derive(Clone, Copy)]
pub(crate) struct ReplyShape {
    pub status_at: usize,
    pub count_at: usize,
}

/// `reply` cut at `failed`'s result, which becomes `status`.
pub(crate) fn ended_at(reply: &Reply, shape: ReplyShape, failed: OpAt, status: Status) -> Reply {
    let mut bytes = reply.prefix(failed.result_at);
    bytes.extend_from_slice(&failed.opnum.to_be_bytes());
    bytes.extend_from_slice(&status.code().to_be_bytes());
    for word in failure_words(failed.opnum, status) {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    for (at, word) in [
        (shape.status_at, status.code()),
        (shape.count_at, failed.results),
    ] {
        if let Some(b) = bytes.get_mut(at..at + 4) {
            b.copy_from_slice(&word.to_be_bytes());
        }
    }
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs4::consts::op;
    use crate::nfs4::tests::words;
    use crate::rpc::ReplyPart;

    /// An RPC header stand-in, then a COMPOUND reply: status, tag "t",
    /// count, PUTFH ok, then `opnum` ok with a body, then GETFH ok with a
    /// handle sent as its own part.
    fn reply(opnum: u32) -> (Reply, ReplyShape, OpAt) {
        let mut head = words(&[0xAAAA_AAAA; 6]);
        let status_at = head.len();
        head.extend(words(&[0, 1, u32::from_be_bytes(*b"t\0\0\0"), 3]));
        let count_at = status_at + 12;
        head.extend(words(&[op::PUTFH, 0]));
        let result_at = head.len();
        head.extend(words(&[opnum, 0, 7, 7, 7, op::GETFH, 0, 8]));
        let parts = vec![
            ReplyPart::Bytes(head),
            ReplyPart::Data(bytes::Bytes::from_static(b"handle!!")),
        ];
        let op = OpAt {
            opnum,
            result_at,
            results: 2,
        };
        (
            Reply { parts },
            ReplyShape {
                status_at,
                count_at,
            },
            op,
        )
    }

    #[test]
    fn a_failed_change_ends_the_reply_at_its_operation_with_its_status() {
        let (full, shape, op) = reply(op::REMOVE);
        let cut = ended_at(&full, shape, op, Status::ServerFault).to_vec();
        let fault = Status::ServerFault.code();
        let mut want = words(&[0xAAAA_AAAA; 6]);
        want.extend(words(&[fault, 1, u32::from_be_bytes(*b"t\0\0\0"), 2]));
        want.extend(words(&[op::PUTFH, 0, op::REMOVE, fault]));
        assert_eq!(cut, want);
        // SETATTR's result keeps its (empty) attrsset on error.
        let (full, shape, op) = reply(op::SETATTR);
        let cut = ended_at(&full, shape, op, Status::Io).to_vec();
        assert_eq!(
            cut[cut.len() - 12..],
            words(&[op::SETATTR, Status::Io.code(), 0])
        );
    }
}
