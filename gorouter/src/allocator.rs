//! The process's global allocator: the C library's `malloc`, with small blocks aligned past
//! 16 bytes carved out of plain `malloc` blocks instead of `posix_memalign`.
//!
//! tokio aligns two allocations of every connection to a cache line (its task and the
//! socket's registration). glibc's `posix_memalign` serves them by allocating a larger chunk,
//! splitting it and freeing the pieces around the aligned part: about 800 instructions each,
//! where a `malloc` from its per-thread cache takes about 50 (BENCHMARKS.md). Here such a
//! block is a `malloc` of `size + align` bytes, aligned inside, with the `malloc` pointer kept
//! in the 8 bytes before the block for `free`. Everything else goes to [`System`] unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// The alignment `malloc` guarantees on 64-bit Linux; [`System`] serves up to it with
/// `malloc` itself.
const MALLOC_ALIGN: usize = 16;

/// Alignments above this go to [`System`] (page-aligned blocks are rare and large, where the
/// extra `align` bytes would be a page).
const MAX_CARVED_ALIGN: usize = 512;

/// Larger over-aligned blocks go to [`System`] too: they are made once (runtime and table
/// structures), where `posix_memalign`'s cost does not matter, and carving would leave up to
/// `align` bytes of each unused.
const MAX_CARVED_SIZE: usize = 4096;

/// [`System`], with over-aligned blocks carved from `malloc` (see the module doc).
pub struct CarvedAlignment;

impl CarvedAlignment {
    fn carves(layout: Layout) -> bool {
        layout.align() > MALLOC_ALIGN
            && layout.align() <= MAX_CARVED_ALIGN
            && layout.size() <= MAX_CARVED_SIZE
    }

    /// The `malloc` layout that holds a `layout` block and the pointer before it at any
    /// `malloc` address (see `carve`).
    fn outer(layout: Layout) -> Option<Layout> {
        let size = layout.size().checked_add(layout.align())?;
        Layout::from_size_align(size, MALLOC_ALIGN).ok()
    }

    /// Aligns inside the `malloc` block at `raw` and records `raw` before the result.
    ///
    /// # Safety
    /// `raw` is a live block of `outer(layout)`.
    unsafe fn carve(raw: *mut u8, layout: Layout) -> *mut u8 {
        if raw.is_null() {
            return raw;
        }
        let block_at = (raw as usize + 8).next_multiple_of(layout.align());
        // SAFETY: `raw` is at least 8-aligned, so the block starts 8 to `align` bytes past
        // it: the block and the pointer before it lie inside the `size + align` bytes at
        // `raw`, and the pointer's slot is 8-aligned because the block is.
        unsafe {
            let block = raw.add(block_at - raw as usize);
            block.cast::<*mut u8>().sub(1).write(raw);
            block
        }
    }

    /// A block for `layout` from `system` (`System`'s `alloc` or `alloc_zeroed`): as asked,
    /// or carved from a larger block.
    ///
    /// # Safety
    /// `layout` has a non-zero size, and `system` may be called with any such layout.
    unsafe fn allocate(layout: Layout, system: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
        if !Self::carves(layout) {
            return system(layout);
        }
        let Some(outer) = Self::outer(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `carve` gets the block of `outer` just allocated (or null).
        unsafe { Self::carve(system(outer), layout) }
    }

    /// The `malloc` block a carved block was cut from.
    ///
    /// # Safety
    /// `block` came from [`CarvedAlignment::carve`].
    unsafe fn raw_of(block: *mut u8) -> *mut u8 {
        // SAFETY: `carve` wrote the pointer there.
        unsafe { block.cast::<*mut u8>().sub(1).read() }
    }
}

// SAFETY: every block either comes from `System` with the caller's layout or is carved from a
// `System` block of `outer(layout)` that stays allocated until the carved block is freed.
unsafe impl GlobalAlloc for CarvedAlignment {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (a non-zero size), passed on; the closure is only
        // called with it or with the larger `outer` layout.
        unsafe { Self::allocate(layout, |l| System.alloc(l)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`; zeroing the outer block zeroes the carved one.
        unsafe { Self::allocate(layout, |l| System.alloc_zeroed(l)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::carves(layout) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: `ptr` was carved with this layout, so `outer` is what `alloc` used.
        unsafe {
            let outer = Self::outer(layout).unwrap_unchecked();
            System.dealloc(Self::raw_of(ptr), outer);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !Self::carves(layout) && !Self::carves(new_layout) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Rare (tokio and the others allocate their aligned blocks once), and a block may
        // change hands between carving and `System`: a new block and a copy, as
        // `GlobalAlloc`'s own `realloc` does.
        // SAFETY: `new_layout` has a non-zero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and at least `min(old, new)` bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `CarvedAlignment` directly (the test binary keeps the default
    /// allocator), fills the block and checks its alignment.
    fn filled(layout: Layout, byte: u8) -> *mut u8 {
        let ptr = unsafe { CarvedAlignment.alloc(layout) };
        assert!(!ptr.is_null());
        assert_eq!(ptr as usize % layout.align(), 0, "{layout:?}");
        unsafe { std::ptr::write_bytes(ptr, byte, layout.size()) };
        ptr
    }

    #[test]
    fn over_aligned_blocks_are_aligned_and_freed_without_touching_their_neighbours() {
        for align in [32, 64, 128, 256, 512, 4096] {
            let mut blocks = Vec::new();
            for (i, size) in [1, 8, 24, 100, 128, 1000, 4096, 5000]
                .into_iter()
                .enumerate()
            {
                let layout = Layout::from_size_align(size, align).unwrap();
                blocks.push((filled(layout, i as u8), layout, i as u8));
            }
            for (ptr, layout, byte) in blocks {
                let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                assert!(
                    bytes.iter().all(|&b| b == byte),
                    "{layout:?} was overwritten"
                );
                unsafe { CarvedAlignment.dealloc(ptr, layout) };
            }
        }
    }

    #[test]
    fn zeroed_over_aligned_blocks_are_zero() {
        let layout = Layout::from_size_align(300, 128).unwrap();
        let ptr = unsafe { CarvedAlignment.alloc_zeroed(layout) };
        assert_eq!(ptr as usize % 128, 0);
        let bytes = unsafe { std::slice::from_raw_parts(ptr, 300) };
        assert!(bytes.iter().all(|&b| b == 0));
        unsafe { CarvedAlignment.dealloc(ptr, layout) };
    }

    #[test]
    fn an_over_aligned_block_keeps_its_bytes_and_alignment_when_resized() {
        let layout = Layout::from_size_align(64, 64).unwrap();
        let ptr = filled(layout, 7);
        let grown = unsafe { CarvedAlignment.realloc(ptr, layout, 4000) };
        assert_eq!(grown as usize % 64, 0);
        let kept = unsafe { std::slice::from_raw_parts(grown, 64) };
        assert!(kept.iter().all(|&b| b == 7));
        let grown_layout = Layout::from_size_align(4000, 64).unwrap();
        let shrunk = unsafe { CarvedAlignment.realloc(grown, grown_layout, 16) };
        assert_eq!(shrunk as usize % 64, 0);
        assert!(unsafe { std::slice::from_raw_parts(shrunk, 16) }
            .iter()
            .all(|&b| b == 7));
        unsafe { CarvedAlignment.dealloc(shrunk, Layout::from_size_align(16, 64).unwrap()) };
    }

    #[test]
    fn an_over_aligned_block_resized_across_the_carved_sizes_is_freed_by_its_new_owner() {
        let large = Layout::from_size_align(3 * MAX_CARVED_SIZE, 64).unwrap();
        let ptr = filled(large, 3);
        let small = unsafe { CarvedAlignment.realloc(ptr, large, 100) };
        assert_eq!(small as usize % 64, 0);
        assert!(unsafe { std::slice::from_raw_parts(small, 100) }
            .iter()
            .all(|&b| b == 3));
        let small_layout = Layout::from_size_align(100, 64).unwrap();
        let large_again = unsafe { CarvedAlignment.realloc(small, small_layout, large.size()) };
        assert_eq!(large_again as usize % 64, 0);
        assert!(unsafe { std::slice::from_raw_parts(large_again, 100) }
            .iter()
            .all(|&b| b == 3));
        unsafe { CarvedAlignment.dealloc(large_again, large) };
    }

    #[test]
    fn ordinary_blocks_go_to_malloc_unchanged() {
        let layout = Layout::from_size_align(40, 8).unwrap();
        let ptr = filled(layout, 1);
        let grown = unsafe { CarvedAlignment.realloc(ptr, layout, 80) };
        assert!(unsafe { std::slice::from_raw_parts(grown, 40) }
            .iter()
            .all(|&b| b == 1));
        unsafe { CarvedAlignment.dealloc(grown, Layout::from_size_align(80, 8).unwrap()) };
    }
}
