//! TEMPORARY stub of the log API until the log module lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Noop,
    Put { key: &'a [u8], value: &'a [u8] },
    Del { key: &'a [u8] },
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub epoch: u64,
    pub index: u64,
    pub op: Op<'a>,
}
pub fn encode(entry: &Entry<'_>, out: &mut Vec<u8>) {
    let _ = (entry, out);
}
