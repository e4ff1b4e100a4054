//! Buffers for large pulled objects, recycled when the object is freed.
//!
//! A fresh buffer costs a page fault per page and the kernel zeroes each page
//! before the object's bytes overwrite it: for a large object that costs more
//! than copying the bytes in. Like Ray's object store, which carves objects
//! out of memory it keeps, a node keeps the buffers of freed large objects
//! (up to [`POOL_BYTES`] in all, oldest given back first) and fills the next
//! object of the same size class into one of them, with no fault and no
//! zeroing. Fresh buffers ask for transparent huge pages, which makes their
//! first faults 512 times fewer.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// Objects from this size on get recycled buffers.
const MIN_POOLED: usize = 4 << 20;
/// Buffer sizes are rounded up to this (a huge page), so that objects of
/// similar sizes share a size class.
const CLASS: usize = 2 << 20;
/// The most memory that freed buffers keep, per process.
const POOL_BYTES: usize = 512 << 20;

struct Pool {
    /// Freed buffers, oldest first; each is empty with its class's capacity.
    free: VecDeque<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: VecDeque::new(),
    bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The pool's state is consistent after every statement: a panic while
    // it is held leaves nothing half done.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn class(len: usize) -> Option<usize> {
    (len >= MIN_POOLED).then(|| len.next_multiple_of(CLASS))
}

/// An empty buffer with room for `len` bytes: a freed one of its size class
/// when the pool has one.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let Some(cap) = class(len) else {
        return Vec::with_capacity(len);
    };
    {
        let mut p = pool();
        if let Some(i) = p.free.iter().position(|b| b.capacity() == cap)
            && let Some(b) = p.free.remove(i)
        {
            p.bytes -= cap;
            return b;
        }
    }
    let b = Vec::with_capacity(cap);
    advise_huge_pages(&b);
    b
}

/// The finished object: its buffer goes back to the pool when the last
/// reference to the bytes is dropped.
pub(crate) fn freeze(buf: Vec<u8>) -> Bytes {
    if class(buf.capacity()) == Some(buf.capacity()) && buf.capacity() <= POOL_BYTES {
        Bytes::from_owner(Recycled(buf))
    } else {
        Bytes::from(buf)
    }
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.0);
        b.clear();
        let cap = b.capacity();
        let mut p = pool();
        while p.bytes + cap > POOL_BYTES {
            match p.free.pop_front() {
                Some(old) => p.bytes -= old.capacity(),
                None => return,
            }
        }
        p.bytes += cap;
        p.free.push_back(b);
    }
}

/// Bytes the pool keeps now.
#[cfg(test)]
pub(crate) fn pooled_bytes() -> usize {
    pool().bytes
}

/// Ask for transparent huge pages under a large fresh buffer. Advice only:
/// where the kernel does not follow it, nothing changes.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(b: &Vec<u8>) {
    const PAGE: usize = 4096;
    let cap = b.capacity();
    if cap < 2 * CLASS {
        return;
    }
    let start = b.as_ptr() as usize;
    let aligned = start.next_multiple_of(PAGE);
    let len = (start + cap).saturating_sub(aligned) / PAGE * PAGE;
    // SAFETY: `[aligned, aligned + len)` lies inside the allocation of `b`
    // (rounded inward to whole pages), which lives across this call;
    // MADV_HUGEPAGE only changes how the kernel backs those pages, never
    // their contents or the mapping, so no Rust reference is invalidated.
    let _ = unsafe {
        rustix::mm::madvise(
            aligned as *mut std::ffi::c_void,
            len,
            rustix::mm::Advice::LinuxHugepage,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &Vec<u8>) {}
