//! The process's memory allocator, chosen by what the process is: mimalloc for `exai daemon`,
//! the C library's for everything else.
//!
//! The daemon makes and frees many small objects for every call on every thread: with mimalloc
//! it spends a quarter less CPU per call than with glibc's malloc in the team bench, and serves a
//! third more calls a second. But mimalloc's per-thread heaps hold 1.5–2 MB more at rest, which
//! the shim (one per MCP client, alive all day) and the short CLI commands are spared (mimalloc
//! is still linked into them and starts, idle). So the choice is made once, at the process's
//! first allocation, from its command line, and never changes: every block is freed by the
//! allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

use libmimalloc_sys as mi;

/// The global allocator of the `exai` binary (see the module's documentation).
pub struct ByRole;

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOSEN: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Whether this process uses mimalloc, deciding it at the first call.
#[inline]
fn uses_mimalloc() -> bool {
    match CHOSEN.load(Ordering::Relaxed) {
        UNDECIDED => decide(),
        chosen => chosen == MIMALLOC,
    }
}

/// Reads the process's own command line and settles the choice. The first allocation happens on
/// the main thread before any other thread exists, so this runs once; were it ever to race, the
/// first choice stored is the one every caller gets.
#[cold]
fn decide() -> bool {
    let mut buffer = [0u8; 4096];
    let read = read_own_command_line(&mut buffer);
    let wanted = if runs_the_daemon(&buffer[..read]) {
        keep_mimalloc_small();
        MIMALLOC
    } else {
        SYSTEM
    };
    let chosen =
        match CHOSEN.compare_exchange(UNDECIDED, wanted, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => wanted,
            Err(earlier) => earlier,
        };
    chosen == MIMALLOC
}

/// When mimalloc is this process's allocator, collects the calling thread's free memory and
/// returns to the system, now, what mimalloc's arenas no longer use: the daemon calls it on its
/// main thread once it listens (start-up's blocking threads give theirs back as they end).
pub fn settle() {
    if CHOSEN.load(Ordering::Relaxed) == MIMALLOC {
        // SAFETY: a plain request to mimalloc, valid on any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

/// mimalloc's option numbers (`mi_option_t` in its `mimalloc.h`, v3), which the Rust bindings do
/// not all name; a test pins each to its default in mimalloc's `options.c`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// How long mimalloc keeps memory it no longer uses before giving it back (its default is 1 s):
/// long enough that a busy daemon reuses its pages, short enough that one at rest soon gives back
/// what its last calls left (the call-path bench's idle daemon, target ≤ 20 MB: 19.6–20.0 with
/// 100 ms, up to 20.6 with mimalloc's default).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets the daemon's mimalloc for a small footprint before its first allocation through it. A
/// `MIMALLOC_*` variable the user set still wins.
fn keep_mimalloc_small() {
    // SAFETY: plain setters of this mimalloc's options, with valid numbers and values.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        // mimalloc asks for transparent huge pages where the system leaves them to programs
        // (`madvise`), and each thread's few pages then take 2 MiB each: an idle daemon's heap
        // was 20 MB of them, against 3 MB without. Not asking is enough there; a system that
        // gives them to every program (`always`) decides for the daemon as for any other, and
        // the daemon does not turn them off for the programs it starts (agents, git).
        libmimalloc_sys::mi_option_set_default(MI_OPTION_ALLOW_THP, 0);
    }
}

/// Whether a command line (arguments each ended by a NUL, as `/proc/self/cmdline` gives them)
/// runs the daemon: `exai daemon [options]`, not `exai daemon stop` or `restart`, which are
/// short commands like the rest.
fn runs_the_daemon(command_line: &[u8]) -> bool {
    let mut arguments = command_line.split(|&byte| byte == 0).skip(1);
    arguments.next() == Some(b"daemon".as_slice())
        && !matches!(arguments.next(), Some(b"stop" | b"restart"))
}

/// Fills `buffer` with the start of `/proc/self/cmdline` (its arguments, each ended by a NUL);
/// returns how many bytes it holds, 0 when it cannot be read.
fn read_own_command_line(buffer: &mut [u8]) -> usize {
    const PATH: &[u8] = b"/proc/self/cmdline\0";
    // SAFETY: PATH is NUL-terminated; the descriptor is ours alone and closed before returning;
    // read writes at most buffer.len() bytes into the buffer we own.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let mut filled = 0usize;
        while filled < buffer.len() {
            let got = libc::read(
                fd,
                buffer[filled..].as_mut_ptr().cast(),
                buffer.len() - filled,
            );
            if got <= 0 {
                break;
            }
            filled += got as usize;
        }
        libc::close(fd);
        filled
    }
}

/// The alignment of every block of at least this size that mimalloc's plain `mi_malloc` gives
/// (its `MI_MAX_ALIGN_SIZE`: what C's `malloc` promises, `max_align_t`'s); smaller blocks are
/// aligned to a word. The rule std's own allocator applies to the C library's `malloc`.
const MALLOC_ALIGN: usize = 16;

/// Whether mimalloc's plain entry points give a block of `size` bytes the alignment `align`.
/// Rust asks for an alignment with every allocation; passed on, it takes mimalloc's aligned
/// path, which falls back to over-allocating a larger block whenever the block size is not a
/// power of two and the current page is full, or the block is over a kilobyte: 55 allocations of
/// about 450 a call went that way.
#[inline]
fn plain_suffices(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// mimalloc's entry points for a Rust layout: the plain ones when they give its alignment.
mod mimalloc_for {
    use super::*;

    pub(super) unsafe fn alloc(layout: Layout) -> *mut u8 {
        unsafe { made(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    pub(super) unsafe fn alloc_zeroed(layout: Layout) -> *mut u8 {
        unsafe { made(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    /// A new block for `layout`, from `plain` when it gives the layout's alignment, else from
    /// `aligned` (mimalloc's pair of entry points for fresh or for zeroed blocks).
    #[inline(always)]
    unsafe fn made(
        layout: Layout,
        plain: unsafe extern "C" fn(usize) -> *mut c_void,
        aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    ) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain requests to mimalloc; an alignment from a `Layout` is a power of two.
        unsafe {
            if plain_suffices(align, size) {
                plain(size).cast()
            } else {
                aligned(size, align).cast()
            }
        }
    }

    pub(super) unsafe fn dealloc(ptr: *mut u8) {
        // SAFETY: `ptr` came from mimalloc (the caller's contract), aligned or not.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    pub(super) unsafe fn realloc(ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from mimalloc with `layout` (the caller's contract); the new
        // block is asked for with the alignment the layout needs.
        unsafe {
            if plain_suffices(align, new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

// SAFETY: each method forwards to one allocator, the same for the whole life of the process
// (CHOSEN is set once, before anything is allocated through it), so every block is freed and
// resized by the allocator that made it.
//
// Out of line: with fat LTO, an inlined choice between two allocators at every place Rust
// allocates or drops something made the program's code 1.2 MB larger. One call more per
// allocation is nothing beside that.
unsafe impl GlobalAlloc for ByRole {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { mimalloc_for::alloc(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { mimalloc_for::alloc_zeroed(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if uses_mimalloc() {
            unsafe { mimalloc_for::dealloc(ptr) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { mimalloc_for::realloc(ptr, layout, new_size) }
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_numbers_are_mimallocs() {
        // The defaults of mimalloc's options.c (unless the environment set them): were the
        // numbering to move, these would read other options.
        if std::env::vars().any(|(name, _)| name.starts_with("MIMALLOC_")) {
            return;
        }
        let purge_delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let allow_thp = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
        assert_eq!((purge_delay, allow_thp), (1000, 1));
    }

    #[test]
    fn every_block_has_the_alignment_its_layout_asked_for() {
        // The plain entry points are trusted with alignments up to MALLOC_ALIGN: were mimalloc
        // to align its blocks less, this would find a block that is not. Every size up to
        // 4 KiB and some larger, each alignment, made, grown and zeroed.
        let mut blocks = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in (1..=4096).chain([5000, 65_536, 1 << 20]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let made = mimalloc_for::alloc(layout);
                    let zeroed = mimalloc_for::alloc_zeroed(layout);
                    assert!(
                        std::slice::from_raw_parts(zeroed, size)
                            .iter()
                            .all(|&b| b == 0)
                    );
                    let aligned = |p: *mut u8, what: &str| {
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "{what} size {size} align {align}");
                    };
                    aligned(made, "made");
                    aligned(zeroed, "zeroed");
                    let grown = mimalloc_for::realloc(made, layout, size * 2 + 8);
                    aligned(grown, "grown");
                    let shrunk = mimalloc_for::realloc(zeroed, layout, size.div_ceil(2));
                    aligned(shrunk, "shrunk");
                    blocks.push(grown);
                    blocks.push(shrunk);
                }
                // Kept a while, so that later blocks come from other slots of the pages.
                if blocks.len() > 512 {
                    blocks
                        .drain(..)
                        .for_each(|p| unsafe { mimalloc_for::dealloc(p) });
                }
            }
        }
        blocks
            .into_iter()
            .for_each(|p| unsafe { mimalloc_for::dealloc(p) });
    }

    #[test]
    fn the_command_line_read_is_this_processs_own() {
        let mut buffer = [0u8; 4096];
        let read = read_own_command_line(&mut buffer);
        let first = buffer[..read].split(|&byte| byte == 0).next();
        let program = std::env::args_os().next().map(|p| p.into_encoded_bytes());
        assert!(read > 0);
        assert_eq!(first, program.as_deref());
    }

    #[test]
    fn only_the_serving_daemon_is_the_daemon() {
        let daemon = [
            &b"/usr/bin/exai\0daemon\0"[..],
            b"exai\0daemon\0--listen\0localhost:0\0",
            b"exai\0daemon\0--allow-remote\0",
        ];
        for command_line in daemon {
            assert!(runs_the_daemon(command_line), "{command_line:?}");
        }
        let others = [
            &b"exai\0daemon\0stop\0"[..],
            b"exai\0daemon\0restart\0",
            b"exai\0stdio\0",
            b"exai\0stdio\0--no-daemon\0",
            b"exai\0calls\0daemon\0",
            b"exai\0daemons\0",
            b"exai\0",
            b"",
        ];
        for command_line in others {
            assert!(!runs_the_daemon(command_line), "{command_line:?}");
        }
    }
}
