//! How much memory an action script holds. Rhai's own limits bound each array, map and string,
//! but not what they nest: a map of arrays assigned by index grew the daemon by 729 MB in one
//! run. The process's allocator therefore counts, per thread, the bytes allocated minus the
//! bytes freed; a script runs on a thread of its own, and its progress check stops it once the
//! count since the run started passes [`SCRIPT_MEMORY_LIMIT`].
//!
//! The count is a thread-local integer without a destructor, so the allocator may touch it at
//! any time, thread teardown included. Memory a script's thread frees that another thread
//! allocated (or the reverse) makes the count drift by that much, which is small next to the
//! limit: what the host functions pass between threads is a droplet listing or an HTTP answer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The most memory one action run may hold at once.
pub const SCRIPT_MEMORY_LIMIT: i64 = 256 * 1024 * 1024;

thread_local! {
    static NET_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    let _ = NET_BYTES.try_with(|net| net.set(net.get().wrapping_add(bytes)));
}

/// Bytes allocated minus bytes freed by the calling thread since it started.
pub fn thread_net_bytes() -> i64 {
    NET_BYTES.try_with(Cell::get).unwrap_or(0)
}

/// The system allocator, counting per thread.
pub struct CountingAllocator;

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged
// and only adds bookkeeping on a thread-local integer (no allocation, no locking).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            add(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            add(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `pointer` came from this allocator with `layout`.
        unsafe { System.dealloc(pointer, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_follows_this_threads_allocations() {
        let before = thread_net_bytes();
        let big = vec![0u8; 8 << 20];
        assert!(thread_net_bytes() - before >= 8 << 20);
        drop(big);
        assert!(thread_net_bytes() - before < 1 << 20);
    }
}
