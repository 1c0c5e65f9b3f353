//! NFSv4.0 protocol numbers (RFC 7530 / RFC 7531).

pub const NFS4_PROGRAM: u32 = 100_003;
pub const NFS4_VERSION: u32 = 4;
pub const PROC_NULL: u32 = 0;
pub const PROC_COMPOUND: u32 = 1;

pub const NFS4_FHSIZE: usize = 128;
pub const NFS4_OPAQUE_LIMIT: usize = 1024;
/// Longest name component accepted (bytes).
pub const MAX_NAME: usize = crate::catalog::MAX_NAME;

/// Operation numbers.
pub mod op {
    pub const ACCESS: u32 = 3;
    pub const CLOSE: u32 = 4;
    pub const COMMIT: u32 = 5;
    pub const CREATE: u32 = 6;
    pub const DELEGPURGE: u32 = 7;
    pub const DELEGRETURN: u32 = 8;
    pub const GETATTR: u32 = 9;
    pub const GETFH: u32 = 10;
    pub const LINK: u32 = 11;
    pub const LOCK: u32 = 12;
    pub const LOCKT: u32 = 13;
    pub const LOCKU: u32 = 14;
    pub const LOOKUP: u32 = 15;
    pub const LOOKUPP: u32 = 16;
    pub const NVERIFY: u32 = 17;
    pub const OPEN: u32 = 18;
    pub const OPENATTR: u32 = 19;
    pub const OPEN_CONFIRM: u32 = 20;
    pub const OPEN_DOWNGRADE: u32 = 21;
    pub const PUTFH: u32 = 22;
    pub const PUTPUBFH: u32 = 23;
    pub const PUTROOTFH: u32 = 24;
    pub const READ: u32 = 25;
    pub const READDIR: u32 = 26;
    pub const READLINK: u32 = 27;
    pub const REMOVE: u32 = 28;
    pub const RENAME: u32 = 29;
    pub const RENEW: u32 = 30;
    pub const RESTOREFH: u32 = 31;
    pub const SAVEFH: u32 = 32;
    pub const SECINFO: u32 = 33;
    pub const SETATTR: u32 = 34;
    pub const SETCLIENTID: u32 = 35;
    pub const SETCLIENTID_CONFIRM: u32 = 36;
    pub const VERIFY: u32 = 37;
    pub const WRITE: u32 = 38;
    pub const RELEASE_LOCKOWNER: u32 = 39;
    pub const ILLEGAL: u32 = 10044;
}

/// nfsstat4 values, as a type so an op's failure says what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Access = 13,
    Exist = 17,
    XDev = 18,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    RoFs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    BadHandle = 10001,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Delay = 10008,
    Same = 10009,
    Denied = 10010,
    Expired = 10011,
    Locked = 10012,
    Grace = 10013,
    FhExpired = 10014,
    ShareDenied = 10015,
    WrongSec = 10016,
    ClidInUse = 10017,
    Resource = 10018,
    Moved = 10019,
    NoFileHandle = 10020,
    MinorVersMismatch = 10021,
    StaleClientId = 10022,
    StaleStateId = 10023,
    OldStateId = 10024,
    BadStateId = 10025,
    BadSeqId = 10026,
    NotSame = 10027,
    LockRange = 10028,
    Symlink = 10029,
    RestoreFh = 10030,
    LeaseMoved = 10031,
    AttrNotSupp = 10032,
    NoGrace = 10033,
    ReclaimBad = 10034,
    ReclaimConflict = 10035,
    BadXdr = 10036,
    LocksHeld = 10037,
    OpenMode = 10038,
    BadOwner = 10039,
    BadChar = 10040,
    BadName = 10041,
    BadRange = 10042,
    LockNotSupp = 10043,
    OpIllegal = 10044,
    Deadlock = 10045,
    FileOpen = 10046,
    AdminRevoked = 10047,
    CbPathDown = 10048,
}

impl Status {
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl From<crate::xdr::XdrError> for Status {
    fn from(_: crate::xdr::XdrError) -> Status {
        Status::BadXdr
    }
}

/// Result of one operation: the error is the nfsstat4 it answers with.
pub type OpResult<T = ()> = Result<T, Status>;

/// nfs_ftype4
pub const NF4REG: u32 = 1;
pub const NF4DIR: u32 = 2;
pub const NF4BLK: u32 = 3;
pub const NF4CHR: u32 = 4;
pub const NF4LNK: u32 = 5;
pub const NF4SOCK: u32 = 6;
pub const NF4FIFO: u32 = 7;

/// Longest symlink target accepted (PATH_MAX on Linux and macOS).
pub const MAX_LINK_TARGET: usize = 4096;

/// ACCESS4 bits
pub const ACCESS4_READ: u32 = 0x01;
pub const ACCESS4_LOOKUP: u32 = 0x02;
pub const ACCESS4_MODIFY: u32 = 0x04;
pub const ACCESS4_EXTEND: u32 = 0x08;
pub const ACCESS4_DELETE: u32 = 0x10;
pub const ACCESS4_EXECUTE: u32 = 0x20;

/// OPEN constants
pub const OPEN4_SHARE_ACCESS_READ: u32 = 1;
pub const OPEN4_SHARE_ACCESS_WRITE: u32 = 2;
pub const OPEN4_SHARE_ACCESS_BOTH: u32 = 3;
pub const OPEN4_NOCREATE: u32 = 0;
pub const OPEN4_CREATE: u32 = 1;
pub const CLAIM_NULL: u32 = 0;
pub const CLAIM_PREVIOUS: u32 = 1;
pub const OPEN4_RESULT_CONFIRM: u32 = 0x2;
pub const OPEN4_RESULT_LOCKTYPE_POSIX: u32 = 0x4;
pub const OPEN_DELEGATE_NONE: u32 = 0;

/// RPC auth flavors listed by SECINFO.
pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;

/// Attribute numbers (fattr4_*).
pub mod attr {
    pub const SUPPORTED_ATTRS: u32 = 0;
    pub const TYPE: u32 = 1;
    pub const FH_EXPIRE_TYPE: u32 = 2;
    pub const CHANGE: u32 = 3;
    pub const SIZE: u32 = 4;
    pub const LINK_SUPPORT: u32 = 5;
    pub const SYMLINK_SUPPORT: u32 = 6;
    pub const NAMED_ATTR: u32 = 7;
    pub const FSID: u32 = 8;
    pub const UNIQUE_HANDLES: u32 = 9;
    pub const LEASE_TIME: u32 = 10;
    pub const RDATTR_ERROR: u32 = 11;
    pub const ACLSUPPORT: u32 = 13;
    pub const CANSETTIME: u32 = 15;
    pub const CASE_INSENSITIVE: u32 = 16;
    pub const CASE_PRESERVING: u32 = 17;
    pub const CHOWN_RESTRICTED: u32 = 18;
    pub const FILEHANDLE: u32 = 19;
    pub const FILEID: u32 = 20;
    pub const FILES_AVAIL: u32 = 21;
    pub const FILES_FREE: u32 = 22;
    pub const FILES_TOTAL: u32 = 23;
    /// UF_HIDDEN on the Mac (chflags hidden, Finder hides the item).
    pub const HIDDEN: u32 = 25;
    pub const HOMOGENEOUS: u32 = 26;
    pub const MAXFILESIZE: u32 = 27;
    pub const MAXLINK: u32 = 28;
    pub const MAXNAME: u32 = 29;
    pub const MAXREAD: u32 = 30;
    pub const MAXWRITE: u32 = 31;
    pub const MODE: u32 = 33;
    pub const NO_TRUNC: u32 = 34;
    pub const NUMLINKS: u32 = 35;
    pub const OWNER: u32 = 36;
    pub const OWNER_GROUP: u32 = 37;
    pub const RAWDEV: u32 = 41;
    pub const SPACE_AVAIL: u32 = 42;
    pub const SPACE_FREE: u32 = 43;
    pub const SPACE_TOTAL: u32 = 44;
    pub const SPACE_USED: u32 = 45;
    pub const TIME_ACCESS: u32 = 47;
    pub const TIME_CREATE: u32 = 50;
    pub const TIME_DELTA: u32 = 51;
    pub const TIME_METADATA: u32 = 52;
    pub const TIME_MODIFY: u32 = 53;
    pub const MOUNTED_ON_FILEID: u32 = 55;
}

/// An operation's name, as the latency report and metrics show it.
pub fn op_name(opnum: u32) -> &'static str {
    match opnum {
        op::ACCESS => "ACCESS",
        op::CLOSE => "CLOSE",
        op::COMMIT => "COMMIT",
        op::CREATE => "CREATE",
        op::DELEGPURGE => "DELEGPURGE",
        op::DELEGRETURN => "DELEGRETURN",
        op::GETATTR => "GETATTR",
        op::GETFH => "GETFH",
        op::LINK => "LINK",
        op::LOCK => "LOCK",
        op::LOCKT => "LOCKT",
        op::LOCKU => "LOCKU",
        op::LOOKUP => "LOOKUP",
        op::LOOKUPP => "LOOKUPP",
        op::NVERIFY => "NVERIFY",
        op::OPEN => "OPEN",
        op::OPENATTR => "OPENATTR",
        op::OPEN_CONFIRM => "OPEN_CONFIRM",
        op::OPEN_DOWNGRADE => "OPEN_DOWNGRADE",
        op::PUTFH => "PUTFH",
        op::PUTPUBFH => "PUTPUBFH",
        op::PUTROOTFH => "PUTROOTFH",
        op::READ => "READ",
        op::READDIR => "READDIR",
        op::READLINK => "READLINK",
        op::REMOVE => "REMOVE",
        op::RENAME => "RENAME",
        op::RENEW => "RENEW",
        op::RESTOREFH => "RESTOREFH",
        op::SAVEFH => "SAVEFH",
        op::SECINFO => "SECINFO",
        op::SETATTR => "SETATTR",
        op::SETCLIENTID => "SETCLIENTID",
        op::SETCLIENTID_CONFIRM => "SETCLIENTID_CONFIRM",
        op::VERIFY => "VERIFY",
        op::WRITE => "WRITE",
        op::RELEASE_LOCKOWNER => "RELEASE_LOCKOWNER",
        _ => "other",
    }
}
