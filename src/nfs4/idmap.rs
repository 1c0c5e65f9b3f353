//! Owner strings (RFC 7530 §5.9) to the numeric ids the server keeps.
//!
//! Clients send owners as all-digit strings (macOS maps those straight to
//! uids, and sends them so), as `user@domain`, or as a bare name. The server
//! keeps one form, the decimal id, so that the same owner set two ways
//! compares equal and a Mac reads it back as a uid. A name is resolved by
//! the local user and group databases; one that names nobody is BADOWNER.

use std::ffi::CString;

use super::consts::Status;

/// Which database a name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

/// The decimal id an owner string stands for.
pub fn canonical(s: &str, kind: IdKind) -> Result<String, Status> {
    let name = match s.split_once('@') {
        Some((local, _domain)) => local,
        None => s,
    };
    if name.is_empty() {
        return Err(Status::BadOwner);
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse::<u32>()
            .map(|id| id.to_string())
            .map_err(|_| Status::BadOwner);
    }
    resolve(name, kind)
        .map(|id| id.to_string())
        .ok_or(Status::BadOwner)
}

/// Looks `name` up in the system's user or group database.
fn resolve(name: &str, kind: IdKind) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    match kind {
        IdKind::User => {
            // SAFETY: all pointers point at live, correctly sized storage;
            // getpwnam_r writes only into `pwd` and `buf`.
            unsafe {
                let mut pwd: libc::passwd = std::mem::zeroed();
                let mut out: *mut libc::passwd = std::ptr::null_mut();
                let rc = libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut out,
                );
                (rc == 0 && !out.is_null()).then_some(pwd.pw_uid)
            }
        }
        IdKind::Group => {
            // SAFETY: as above, for getgrnam_r.
            unsafe {
                let mut grp: libc::group = std::mem::zeroed();
                let mut out: *mut libc::group = std::ptr::null_mut();
                let rc = libc::getgrnam_r(
                    cname.as_ptr(),
                    &mut grp,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut out,
                );
                (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_become_decimal_ids() {
        assert_eq!(canonical("501", IdKind::User).unwrap(), "501");
        assert_eq!(canonical("0501", IdKind::User).unwrap(), "501");
        assert_eq!(canonical("501@example.com", IdKind::User).unwrap(), "501");
        assert_eq!(canonical("root", IdKind::User).unwrap(), "0");
        assert_eq!(canonical("root@localdomain", IdKind::User).unwrap(), "0");
        assert_eq!(canonical("root", IdKind::Group).unwrap(), "0");
        for bad in ["", "@x", "99999999999", "no-such-user-here"] {
            assert_eq!(canonical(bad, IdKind::User), Err(Status::BadOwner), "{bad}");
        }
    }
}
