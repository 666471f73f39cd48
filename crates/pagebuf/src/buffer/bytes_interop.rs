//! With feature `bytes`: zero-copy conversion to `bytes::Bytes`, and the `bytes` traits.
//!
//! The only panics in pagebuf live here, because the `bytes` traits require them:
//! advancing a `Buf` or `BufMut` past its end panics, exactly as `bytes::Bytes` and
//! `bytes::BytesMut` do.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use bytes::buf::UninitSlice;

use super::{Buffer, BufferMut};

impl From<Buffer> for bytes::Bytes {
    /// Hands the buffer to `Bytes` as its owner: no copy; the memory returns to its
    /// origin when the last `Bytes` clone drops.
    fn from(buf: Buffer) -> bytes::Bytes {
        bytes::Bytes::from_owner(buf)
    }
}

impl From<BufferMut> for bytes::Bytes {
    fn from(buf: BufferMut) -> bytes::Bytes {
        bytes::Bytes::from_owner(buf.freeze())
    }
}

/// Reading consumes from the front: the view shrinks, the memory stays shared.
impl bytes::Buf for Buffer {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        self
    }

    fn advance(&mut self, cnt: usize) {
        self.advance_front(cnt);
    }
}

/// Writing appends after the content, up to `max_len()`; the spare bytes are already
/// initialized, so `advance_mut` never exposes uninitialized memory.
// SAFETY: `chunk_mut` returns exactly the spare bytes `[len, max_len)`, and
// `advance_mut` only grows `len` within `max_len`, as the trait requires.
unsafe impl bytes::BufMut for BufferMut {
    fn remaining_mut(&self) -> usize {
        self.max_len() - self.len()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let new_len = self.len().checked_add(cnt).filter(|&n| n <= self.max_len());
        match new_len {
            Some(n) => self.set_len(n).expect("checked against max_len"),
            None => panic!(
                "advance_mut({cnt}) past the end: only {} bytes remain",
                self.max_len() - self.len()
            ),
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let len = self.len();
        UninitSlice::new(&mut self.whole_mut()[len..])
    }
}
