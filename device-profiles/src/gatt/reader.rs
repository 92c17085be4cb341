//! A cursor over a characteristic value with checked reads.
//!
//! Every decoder reads through this type and never indexes the input
//! itself: a short or malformed value becomes a [`Fault`] carrying the byte
//! offset, never a panic.

use super::error::{Fault, GattErrorKind};
use super::ieee11073::{Float, Sfloat};

/// Checked little-endian reads over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Fault> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Fault::new(
                self.pos,
                GattErrorKind::Truncated {
                    field,
                    needed: n,
                    available: self.remaining(),
                },
            )),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Fault> {
        let at = self.pos;
        let available = self.remaining();
        self.take(N, field)?.try_into().map_err(|_| {
            Fault::new(
                at,
                GattErrorKind::Truncated {
                    field,
                    needed: N,
                    available,
                },
            )
        })
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Fault> {
        self.array::<1>(field).map(|[b]| b)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Fault> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, Fault> {
        self.array(field).map(i16::from_le_bytes)
    }

    pub(crate) fn u24(&mut self, field: &'static str) -> Result<u32, Fault> {
        self.array::<3>(field)
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }

    pub(crate) fn sfloat(&mut self, field: &'static str) -> Result<Sfloat, Fault> {
        self.array(field).map(Sfloat::from_le_bytes)
    }

    pub(crate) fn float(&mut self, field: &'static str) -> Result<Float, Fault> {
        self.array(field).map(Float::from_le_bytes)
    }

    /// Fails unless every byte was consumed: a value longer than its flags
    /// announce means the flags (and so the layout) cannot be trusted.
    pub(crate) fn finish(&self) -> Result<(), Fault> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Fault::new(self.pos, GattErrorKind::TrailingBytes { count })),
        }
    }
}

/// Rejects `bits` of `value` (the RFU part of a flags field at `offset`).
pub(crate) fn reject_reserved(
    value: u32,
    reserved_mask: u32,
    offset: usize,
    field: &'static str,
) -> Result<(), Fault> {
    match value & reserved_mask {
        0 => Ok(()),
        bits => Err(Fault::new(
            offset,
            GattErrorKind::ReservedBits { field, bits },
        )),
    }
}

/// Little-endian writers for encoders.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u24(&mut self, v: u32);
    fn put_sfloat(&mut self, v: Sfloat);
    fn put_float(&mut self, v: Float);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u24(&mut self, v: u32) {
        let [a, b, c, _] = v.to_le_bytes();
        self.extend_from_slice(&[a, b, c]);
    }
    fn put_sfloat(&mut self, v: Sfloat) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_float(&mut self, v: Float) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_reads() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a"), Ok(0x0201));
        let e = r.u16("b").unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(
            e.kind,
            GattErrorKind::Truncated {
                field: "b",
                needed: 2,
                available: 1
            }
        );
        assert_eq!(
            r.finish().unwrap_err().kind,
            GattErrorKind::TrailingBytes { count: 1 }
        );
        assert_eq!(r.u8("c"), Ok(3));
        assert!(r.finish().is_ok());
        assert!(r.take(usize::MAX, "huge").is_err());
    }
}
