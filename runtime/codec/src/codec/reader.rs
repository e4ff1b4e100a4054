//! Reading the canonical encoding: bounds-checked, strict varints, lengths
//! checked against the input left.

use super::{CodecError, Result, ValuePath};

/// A cursor over untrusted input: every read is bounds-checked and every
/// error names its offset.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub(super) fn malformed(&self, offset: usize, message: impl Into<String>) -> CodecError {
        CodecError::Malformed {
            path: ValuePath::default(),
            offset,
            message: message.into(),
        }
    }

    pub(super) fn eof(&self, needed: usize) -> CodecError {
        CodecError::UnexpectedEnd {
            path: ValuePath::default(),
            offset: self.buf.len(),
            needed,
        }
    }

    pub(super) fn byte(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.eof(1)),
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.eof(n))?;
        match self.buf.get(self.pos..end) {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes)
            }
            None => Err(self.eof(n - self.remaining())),
        }
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// An unsigned LEB128 varint of a `bits`-wide integer, by postcard's
    /// rules (at most ceil(bits/7) bytes, no bits beyond `bits`) plus one
    /// more for canonicity: no superfluous trailing zero bytes.
    pub(super) fn varint(&mut self, bits: u32) -> Result<u64> {
        debug_assert!(!bits.is_multiple_of(7) && bits <= 64);
        let start = self.pos;
        let max_bytes = bits.div_ceil(7);
        let max_last = (1u8 << (bits % 7)) - 1;
        let mut out: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > max_last {
                    return Err(self.malformed(start, format!("varint overflows u{bits}")));
                }
                if i > 0 && b == 0 {
                    return Err(self.malformed(start, "overlong (non-minimal) varint"));
                }
                return Ok(out);
            }
        }
        Err(self.malformed(
            start,
            format!("varint longer than {max_bytes} bytes for u{bits}"),
        ))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        // `varint(32)` never returns more than 32 bits.
        Ok(self.varint(32)? as u32)
    }

    /// The length of a string, list or map, checked against the input left:
    /// every element takes at least one byte, so a longer list cannot be
    /// valid, and nothing is allocated for it.
    pub(super) fn length(&mut self, what: &str) -> Result<usize> {
        let start = self.pos;
        let n = self.u32()? as usize;
        if n > self.remaining() {
            return Err(self.malformed(
                start,
                format!(
                    "{what} length {n} exceeds the {} byte(s) left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    pub(super) fn discriminant(
        &mut self,
        cases: usize,
        what: impl FnOnce() -> String,
    ) -> Result<usize> {
        let start = self.pos;
        let index = self.u32()? as usize;
        if index >= cases {
            return Err(self.malformed(
                start,
                format!(
                    "case index {index} out of range for {} ({cases} cases)",
                    what()
                ),
            ));
        }
        Ok(index)
    }
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}
