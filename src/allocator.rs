//! [`ReusingAllocator`]: the system allocator, except that large freed blocks are kept for the next allocation of the
//! same size instead of going back to the kernel.
//!
//! Why: a transformer's activations are large blocks whose sizes repeat, layer after layer and pass after pass
//! (GPT-2 small's logits at 8×128 are 206 MB, its MLP activations 12.6 MB per layer). glibc gives much of that memory
//! back to the kernel when it is freed: it maps a block afresh above its `mmap` threshold (128 KiB at first, rising
//! to the largest mapped block freed so far, 32 MiB at most), and trims its heap whenever twice that is free at the
//! top. The next tensor of the same size is then written into pages the kernel must fault in and zero. On the virtual
//! machines this project measures on, the guest kernel also reports freed memory to the host (free page reporting),
//! and touching such a page faults on the host too: a C program writing 2 GB of fresh pages takes 1.1–2.1 s there,
//! and 0.1 s writing the same pages again. Five GPT-2-small forward passes at 8×128 take 1.10 million page faults
//! with the system allocator and 0.34 million with this one, most of them the weights' and the first pass's.
//!
//! The cost is memory, bounded by what the process itself once used: a freed block stays mapped until a block that
//! no kept one fits is asked for, which first releases the oldest kept blocks. What the allocator maps is then never
//! more than the slack given to [`ReusingAllocator::new`] above the most the process had in use at once. A cache is
//! the case this is for: a whole cache (3.1 GB for GPT-2 small at 4×1024) is dropped after each pass and asked for
//! again, block for block, by the next. The `tlens` binaries install it with a slack of [`DEFAULT_SLACK`]; a library
//! user opts in with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Blocks of this size or more are kept when freed. Smaller ones come from glibc's heap, which reuses them; with
/// 32 MiB (glibc's largest `mmap` threshold), five forward passes as above still took 0.75 million page faults.
pub const LARGE_BLOCK: usize = 1 << 20;

/// The slack the `tlens` binaries allow: 1 GiB, more than the largest block of the bench's shapes (the GPT-2 logits
/// at 4×1024, 823 MB), so that a pass's own passing blocks are never released between its layers, and a small part
/// of the memory those shapes need.
pub const DEFAULT_SLACK: usize = 1 << 30;

/// Fresh blocks of this size or more, asked for without zeroing, are faulted in by a thread per core before they are
/// handed out: burn-flex writes most new tensors first on one thread (its copies and element-wise ops, and the copy of
/// each matrix product's zeroed buffer into an aligned one), and on the project's virtual machines two threads fault
/// fresh pages in faster than one: 0.6–2.1 s against 3.5–6.5 s for a 2 GB block (a C program, alternating, six runs
/// each; at 10 GB the two were level, 9–22 s). Smaller blocks come from glibc's heap, mostly mapped already.
pub const PREFAULT_BLOCK: usize = 4 << 20;

/// The bytes of a page, the unit the kernel faults in: one write per page maps it.
const PAGE: usize = 4096;

/// How many freed blocks are kept at most (the bookkeeping is a fixed table: an allocator cannot allocate for itself).
/// A dropped cache frees a dozen or so blocks a layer (under 200 for GPT-2 small, some 400 for a 32-layer model), and a
/// full table releases its oldest block; the table is searched only for blocks of a megabyte or more, each written at
/// some cost anyway.
const SLOTS: usize = 1024;

/// A global allocator that keeps freed blocks of [`LARGE_BLOCK`] bytes or more and hands one back when a block of the
/// same size and alignment is asked for. Everything else goes to [`System`]. A large block that no kept one fits
/// first releases the oldest kept blocks, down to `slack` bytes kept or to the new block's size less than what was
/// kept: blocks in use and kept then never pass the most ever in use by more than `slack`.
///
/// ```
/// use tlens::allocator::{ReusingAllocator, DEFAULT_SLACK};
///
/// #[global_allocator]
/// static ALLOCATOR: ReusingAllocator = ReusingAllocator::new(DEFAULT_SLACK);
///
/// let first = vec![1.0_f32; 16 << 20]; // 64 MiB
/// let address = first.as_ptr() as usize;
/// drop(first);
/// let second = vec![0.0_f32; 16 << 20];
/// assert_eq!(second.as_ptr() as usize, address); // the same pages, already mapped
/// assert!(second.iter().all(|&x| x == 0.0)); // and zeroed again where zeros were asked for
/// ```
pub struct ReusingAllocator {
    slack: usize,
    kept: Mutex<Kept>,
}

/// The kept blocks: a slot each, with the order they were freed in.
struct Kept {
    slots: [Option<Block>; SLOTS],
    bytes: usize,
    next_stamp: u64,
}

/// One kept block, as [`System`] allocated it.
#[derive(Clone, Copy)]
struct Block {
    /// The address (a `usize`, so that the table is `Send`).
    addr: usize,
    size: usize,
    align: usize,
    /// When it was freed: the smallest stamp is released first.
    stamp: u64,
}

impl ReusingAllocator {
    /// An allocator that maps at most `slack` bytes more than the most ever in use at once (with 0, never more than
    /// that most).
    pub const fn new(slack: usize) -> Self {
        Self {
            slack,
            kept: Mutex::new(Kept {
                slots: [None; SLOTS],
                bytes: 0,
                next_stamp: 0,
            }),
        }
    }

    /// The bytes kept now, freed and not yet handed out again.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Nothing panics while the table is held, but a poisoned lock must not stop allocation either.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A kept block of exactly `layout`, taken out of the table; where there is none, the oldest kept blocks are
    /// released, down to the slack or to `layout`'s size less than what is kept, before the caller maps a fresh one.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut kept = self.lock();
        let slot = kept.slots.iter_mut().find(|slot| {
            slot.is_some_and(|b| b.size == layout.size() && b.align == layout.align())
        });
        if let Some(block) = slot.and_then(Option::take) {
            kept.bytes -= block.size;
            return Some(block.addr as *mut u8);
        }
        let target = kept.bytes.saturating_sub(layout.size()).max(self.slack);
        while kept.bytes > target {
            kept.release_oldest();
        }
        None
    }

    /// Keeps a freed block, releasing the oldest kept one first when the table is full.
    ///
    /// # Safety
    /// `ptr` was allocated by [`System`] with `layout` and is no longer used.
    unsafe fn keep(&self, ptr: *mut u8, layout: Layout) {
        let mut kept = self.lock();
        let i = match kept.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => kept.release_oldest(),
        };
        let stamp = kept.next_stamp;
        kept.next_stamp += 1;
        kept.bytes += layout.size();
        kept.slots[i] = Some(Block {
            addr: ptr as usize,
            size: layout.size(),
            align: layout.align(),
            stamp,
        });
    }
}

impl Kept {
    /// Gives the oldest kept block back to [`System`]; returns its slot, now free. Called only while a block is kept.
    fn release_oldest(&mut self) -> usize {
        let i = (0..SLOTS)
            .filter(|&i| self.slots[i].is_some())
            .min_by_key(|&i| self.slots[i].map(|b| b.stamp))
            .expect("a block is kept");
        let oldest = self.slots[i].take().expect("the slot holds a block");
        self.bytes -= oldest.size;
        // SAFETY: kept blocks were allocated by `System` with this size and alignment, and nobody uses them.
        unsafe {
            System.dealloc(
                oldest.addr as *mut u8,
                Layout::from_size_align_unchecked(oldest.size, oldest.align),
            )
        };
        i
    }
}

/// The threads [`prefault`] uses: the machine's parallelism, asked once (0 until then), since asking reads files.
static PREFAULT_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Maps every page of a fresh block, a share of them on each of the machine's cores, so that the page faults run in
/// parallel whatever writes the block first. A thread that cannot be started leaves its share to this one.
///
/// # Safety
/// `ptr` is a block of `size` bytes that nobody else uses yet.
unsafe fn prefault(ptr: *mut u8, size: usize) {
    let mut threads = PREFAULT_THREADS.load(Ordering::Relaxed);
    if threads == 0 {
        threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        PREFAULT_THREADS.store(threads, Ordering::Relaxed);
    }
    let share = size.div_ceil(threads).next_multiple_of(PAGE);
    let base = ptr as usize; // an address, so that the threads can share it
    let touch = move |start: usize| {
        for offset in (start..(start + share).min(size)).step_by(PAGE) {
            // SAFETY: `offset < size`, inside the block, which only this call writes.
            unsafe { ptr::write_volatile((base + offset) as *mut u8, 0) };
        }
    };
    std::thread::scope(|scope| {
        for start in (share..size).step_by(share) {
            if std::thread::Builder::new()
                .spawn_scoped(scope, move || touch(start))
                .is_err()
            {
                touch(start);
            }
        }
        touch(0);
    });
}

/// Whether blocks of `layout` are kept when freed.
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE_BLOCK
}

// SAFETY: every block handed out is either fresh from `System` or a kept one of exactly the layout asked for, which
// nobody else holds (it left the table under the lock); blocks are returned to `System` with the layout they were
// allocated with.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout)
            && let Some(ptr) = self.take(layout)
        {
            return ptr;
        }
        // SAFETY: the caller's layout has a non-zero size; the block is fresh, `layout.size()` bytes long.
        unsafe {
            let ptr = System.alloc(layout);
            if !ptr.is_null() && layout.size() >= PREFAULT_BLOCK {
                prefault(ptr, layout.size());
            }
            ptr
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout)
            && let Some(ptr) = self.take(layout)
        {
            // SAFETY: the block is `layout.size()` bytes long and ours alone.
            unsafe { ptr::write_bytes(ptr, 0, layout.size()) };
            return ptr;
        }
        // SAFETY: as in `alloc`. Fresh pages come zeroed from the kernel, without a pass over them, and are not
        // prefaulted: a zeroed block is often only read (burn-flex copies every new tensor's zeroed buffer into an
        // aligned one), and reading a page never written maps the kernel's shared zero page, which costs no memory.
        // Prefaulting them too put 0.8 GB on the peak of a forward pass at 4×1024.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller gives back a block of `layout` that this allocator, and so `System`, handed out.
        unsafe {
            if is_large(layout) {
                self.keep(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`; a size below `LARGE_BLOCK` stays `System`'s alone.
        unsafe {
            if !is_large(layout) && new_size < LARGE_BLOCK {
                return System.realloc(ptr, layout, new_size);
            }
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::{LARGE_BLOCK, PREFAULT_BLOCK, ReusingAllocator};

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    /// A freed large block comes back for the same layout, zeroed when zeros are asked for; another size gets a
    /// block of its own.
    #[test]
    fn a_freed_large_block_is_handed_out_again() {
        let a = ReusingAllocator::new(4 * LARGE_BLOCK);
        let l = layout(LARGE_BLOCK);
        unsafe {
            let p = a.alloc(l);
            p.write_bytes(7, l.size());
            a.dealloc(p, l);
            assert_eq!(a.kept_bytes(), LARGE_BLOCK);
            let q = a.alloc_zeroed(l);
            assert_eq!(q, p);
            assert_eq!(a.kept_bytes(), 0);
            assert!(
                std::slice::from_raw_parts(q, l.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(q, l);
            let other = layout(LARGE_BLOCK + 4096);
            let r = a.alloc(other);
            assert_ne!(r, p);
            assert_eq!(a.kept_bytes(), LARGE_BLOCK);
            a.dealloc(r, other);
        }
    }

    /// A block that no kept one fits releases the oldest kept blocks first, down to the slack or to its own size less
    /// than what was kept, so that what is mapped grows only with what is in use; the blocks left are handed out.
    #[test]
    fn a_block_no_kept_one_fits_releases_the_oldest() {
        let a = ReusingAllocator::new(2 * LARGE_BLOCK);
        let (l1, l2, l3) = (
            layout(LARGE_BLOCK),
            layout(LARGE_BLOCK + 64),
            layout(LARGE_BLOCK + 128),
        );
        unsafe {
            let (p1, p2, p3) = (a.alloc(l1), a.alloc(l2), a.alloc(l3));
            a.dealloc(p1, l1);
            a.dealloc(p2, l2);
            a.dealloc(p3, l3);
            let all = l1.size() + l2.size() + l3.size();
            assert_eq!(a.kept_bytes(), all); // past the slack: freed blocks are kept whatever their sum
            // Its size less than what is kept is under the slack: the oldest go until the slack is reached.
            let big = layout(2 * LARGE_BLOCK);
            let p4 = a.alloc(big);
            assert_eq!(a.kept_bytes(), l3.size());
            a.dealloc(p4, big);
            assert_eq!(a.kept_bytes(), l3.size() + big.size());
            assert_eq!(a.alloc(l3), p3);
            // Within the slack, a miss releases nothing.
            let p5 = a.alloc(l1);
            assert_eq!(a.kept_bytes(), big.size());
            a.dealloc(p3, l3);
            a.dealloc(p5, l1);
            // Far past the slack, a miss releases what covers its own size and no more: the oldest block goes, the
            // other two stay.
            let a = ReusingAllocator::new(0);
            let sizes = [2 * LARGE_BLOCK, 2 * LARGE_BLOCK + 64, 2 * LARGE_BLOCK + 128].map(layout);
            let blocks = sizes.map(|l| (a.alloc(l), l));
            for &(p, l) in &blocks {
                a.dealloc(p, l);
            }
            let p6 = a.alloc(l1);
            assert_eq!(a.kept_bytes(), sizes[1].size() + sizes[2].size());
            assert_eq!(a.alloc(sizes[1]), blocks[1].0);
            assert_eq!(a.alloc(sizes[2]), blocks[2].0);
            a.dealloc(p6, l1);
            a.dealloc(blocks[1].0, sizes[1]);
            a.dealloc(blocks[2].0, sizes[2]);
        }
    }

    /// Which pages of `len` bytes at `ptr` are in memory, from `/proc/self/pagemap` (bit 63 of each page's entry,
    /// which an unprivileged process may read).
    fn present_pages(ptr: *const u8, len: usize) -> Vec<bool> {
        use std::io::{Read, Seek, SeekFrom};
        let (first, last) = (ptr as usize / 4096, (ptr as usize + len - 1) / 4096);
        let mut map = std::fs::File::open("/proc/self/pagemap").unwrap();
        map.seek(SeekFrom::Start(first as u64 * 8)).unwrap();
        let mut entries = vec![0u8; (last - first + 1) * 8];
        map.read_exact(&mut entries).unwrap();
        entries
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().unwrap()) >> 63 == 1)
            .collect()
    }

    /// A fresh block asked for without zeroing is in memory, every page of it, before anything writes it; a zeroed
    /// one is left to the kernel's zero pages.
    #[test]
    fn fresh_unzeroed_blocks_are_faulted_in_ahead() {
        let a = ReusingAllocator::new(0);
        // Past glibc's largest mmap threshold, so that both blocks are fresh mappings, and not a whole number of pages;
        // aligned as an f32 buffer (the system allocator zeroes blocks aligned past 16 bytes with a pass of its own).
        let size = 16 * PREFAULT_BLOCK + 100;
        let layout = |size| Layout::from_size_align(size, 4).unwrap();
        unsafe {
            let p = a.alloc(layout(size));
            assert!(present_pages(p, size).iter().all(|&present| present));
            p.write_bytes(9, size);
            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 9));
            let z = a.alloc_zeroed(layout(size));
            let present = present_pages(z, size).iter().filter(|&&p| p).count();
            assert!(present <= 2, "{present} pages of a zeroed block in memory");
            assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
            a.dealloc(p, layout(size));
            a.dealloc(z, layout(size));
        }
    }

    /// Small blocks are the system allocator's alone, and `realloc` keeps the contents across the threshold.
    #[test]
    fn small_blocks_pass_through_and_realloc_keeps_contents() {
        let a = ReusingAllocator::new(4 * LARGE_BLOCK);
        let small = layout(4096);
        unsafe {
            let p = a.alloc(small);
            p.write_bytes(3, small.size());
            a.dealloc(p, small);
            assert_eq!(a.kept_bytes(), 0);
            let p = a.alloc(small);
            p.write_bytes(5, small.size());
            let q = a.realloc(p, small, LARGE_BLOCK);
            assert!(
                std::slice::from_raw_parts(q, small.size())
                    .iter()
                    .all(|&b| b == 5)
            );
            let r = a.realloc(q, layout(LARGE_BLOCK), 8192);
            assert_eq!(a.kept_bytes(), LARGE_BLOCK);
            assert!(std::slice::from_raw_parts(r, 4096).iter().all(|&b| b == 5));
            a.dealloc(r, layout(8192));
        }
    }
}
