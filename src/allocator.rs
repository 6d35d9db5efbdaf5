//! The process's memory allocator, chosen by what the process is: mimalloc for `exai daemon`,
//! the C library's for everything else.
//!
//! The daemon makes and frees many small objects for every call on every thread: with mimalloc
//! it spends a quarter less CPU per call than with glibc's malloc in the team bench, and serves a
//! third more calls a second. But mimalloc's per-thread heaps hold 1.5–2 MB more at rest,
//! which the shim (one per MCP client, alive all day) and the short CLI commands do not need to
//! pay. So the choice is made once, at the process's first allocation, from its command line,
//! and never changes: every pointer is freed by the allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

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
/// the main thread before any other thread exists, so this runs once; were it ever to race, both
/// would read the same command line and choose alike.
#[cold]
fn decide() -> bool {
    let mimalloc = subcommand_is(b"daemon");
    if mimalloc {
        keep_mimalloc_small();
    }
    CHOSEN.store(if mimalloc { MIMALLOC } else { SYSTEM }, Ordering::Relaxed);
    mimalloc
}

/// Gives back what a finished start-up left free, when mimalloc is this process's allocator:
/// the daemon calls it once it listens, so a daemon at rest holds what it uses, not what its
/// start (configuration, migrations, catalogues) went through.
pub fn settle() {
    if CHOSEN.load(Ordering::Relaxed) == MIMALLOC {
        // SAFETY: a plain request to mimalloc to collect the calling thread's free memory and
        // return what its arenas no longer use.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

/// mimalloc's option numbers (`mi_option_t` in its `mimalloc.h`, v3), which the Rust bindings do
/// not all name; a test pins them to their documented defaults.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps memory it no longer uses before giving it back (its default is 1 s):
/// long enough that a busy daemon reuses its pages, short enough that one at rest soon gives back
/// what its last calls left (the call-path bench's idle daemon, target ≤ 20 MB: 19.6–20.0 with
/// 100 ms, up to 20.6 with mimalloc's default).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets the daemon's mimalloc for a small footprint before its first allocation through it.
fn keep_mimalloc_small() {
    // SAFETY: plain setters with valid arguments: an option number of this mimalloc and a
    // process-wide flag of the kernel's.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        // Transparent huge pages would round each thread's few pages up to 2 MiB each: an
        // idle daemon's heap was 20 MB of them, against 3 MB without. Off for this process only, whatever the system's
        // setting (mimalloc asks for them where the system leaves it to programs).
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Whether the process's first argument is `name`, read from `/proc/self/cmdline` into a buffer
/// on the stack (the allocator cannot allocate to find out how to allocate). Anything unreadable
/// answers no: the C library's allocator is always a safe choice.
fn subcommand_is(name: &[u8]) -> bool {
    let mut buffer = [0u8; 4096];
    let read = read_own_command_line(&mut buffer);
    let mut arguments = buffer[..read].split(|&byte| byte == 0);
    arguments.next();
    arguments.next() == Some(name)
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

// SAFETY: each method forwards to one allocator, the same for the whole life of the process
// (CHOSEN is set once, before anything is allocated through it), so every block is freed and
// resized by the allocator that made it.
//
// Out of line: with fat LTO, an inlined choice between two allocators at every place Rust
// allocates or drops something made the program 1.2 MB larger, and an idle daemon touched 1 MB
// more of it. One call more per allocation is nothing beside that.
unsafe impl GlobalAlloc for ByRole {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { MiMalloc.alloc(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if uses_mimalloc() {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if uses_mimalloc() {
            unsafe { MiMalloc.realloc(ptr, layout, new_size) }
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
        // The defaults of mimalloc's options.c: were the numbering to move, this would read
        // another option.
        let purge_delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(purge_delay, 1000);
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
    fn the_first_argument_is_matched_whole() {
        // The test harness is run as `<binary> [arguments]`; whatever its first argument is,
        // it is found whole, and neither a part of it nor `daemon` (unless it is that) is.
        let Some(first) = std::env::args().nth(1) else {
            return assert!(!subcommand_is(b"daemon"));
        };
        assert!(subcommand_is(first.as_bytes()));
        assert!(!subcommand_is(&first.as_bytes()[..first.len() - 1]));
        assert_eq!(subcommand_is(b"daemon"), first == "daemon");
    }
}
