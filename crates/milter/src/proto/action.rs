pub const ADDHDRS: u32 = 0x01;
pub const CHGBODY: u32 = 0x02;
pub const ADDRCPT: u32 = 0x04;
pub const DELRCPT: u32 = 0x08;
pub const CHGHDRS: u32 = 0x10;
pub const QUARANTINE: u32 = 0x20;
pub const CHGFROM: u32 = 0x40;
pub const ADDRCPT_PAR: u32 = 0x80;
pub const SETSYMLIST: u32 = 0x100;
/// Everything we can apply.
pub const ALL: u32 = 0x1ff;
