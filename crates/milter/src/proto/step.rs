pub const NOCONNECT: u32 = 0x01;
pub const NOHELO: u32 = 0x02;
pub const NOMAIL: u32 = 0x04;
pub const NORCPT: u32 = 0x08;
pub const NOBODY: u32 = 0x10;
pub const NOHDRS: u32 = 0x20;
pub const NOEOH: u32 = 0x40;
pub const NR_HDR: u32 = 0x80;
pub const NOUNKNOWN: u32 = 0x100;
pub const NODATA: u32 = 0x200;
pub const SKIP: u32 = 0x400;
pub const RCPT_REJ: u32 = 0x800;
pub const NR_CONN: u32 = 0x1000;
pub const NR_HELO: u32 = 0x2000;
pub const NR_MAIL: u32 = 0x4000;
pub const NR_RCPT: u32 = 0x8000;
pub const NR_DATA: u32 = 0x10000;
pub const NR_UNKN: u32 = 0x20000;
pub const NR_EOH: u32 = 0x40000;
pub const NR_BODY: u32 = 0x80000;
pub const HDR_LEADSPC: u32 = 0x100000;
/// What we offer: every NO* and NR_* step, SKIP and HDR_LEADSPC; not
/// RCPT_REJ (refused recipients are never shown) nor larger chunks.
pub const OFFERED: u32 = NOCONNECT
    | NOHELO
    | NOMAIL
    | NORCPT
    | NOBODY
    | NOHDRS
    | NOEOH
    | NR_HDR
    | NOUNKNOWN
    | NODATA
    | SKIP
    | NR_CONN
    | NR_HELO
    | NR_MAIL
    | NR_RCPT
    | NR_DATA
    | NR_UNKN
    | NR_EOH
    | NR_BODY
    | HDR_LEADSPC;
