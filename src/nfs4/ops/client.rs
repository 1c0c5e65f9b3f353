//! SETCLIENTID, SETCLIENTID_CONFIRM and RENEW.

use std::time::Instant;

use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{OpResult, NFS4_OPAQUE_LIMIT};
use crate::nfs4::view::catalog_status;
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

pub(crate) fn setclientid(
    c: &mut Compound<'_>,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let verifier: [u8; 8] = d.array()?;
    let id = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let _cb_program = d.u32()?;
    let _netid = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let _addr = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let _callback_ident = d.u32()?;
    let principal = c.ctx.credentials.principal();
    let result = c
        .srv
        .state
        .lock()
        .set_client_id(id, verifier, &principal, Instant::now());
    let (clientid, confirm) = result?;
    out.enc().u64(clientid);
    out.enc().fixed(&confirm);
    Ok(())
}

pub(crate) fn setclientid_confirm(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let clientid = d.u64()?;
    let confirm: [u8; 8] = d.array()?;
    let id = {
        let mut st = c.srv.state.lock();
        let id = st.confirm_client_id(clientid, confirm, Instant::now())?;
        st.spoke_for(c.ctx.peer, clientid);
        id
    };
    // Recorded before the reply, so it can reclaim after any later restart.
    c.prog
        .catalog()
        .record_nfs_client(&id)
        .wait()
        .map_err(|e| catalog_status(&e))
}

pub(crate) fn renew(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let clientid = d.u64()?;
    let mut st = c.srv.state.lock();
    st.renew(clientid, Instant::now())?;
    st.spoke_for(c.ctx.peer, clientid);
    Ok(())
}
