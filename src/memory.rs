//! Giving back the start-up code's pages once a process settles into its steady work.
//!
//! Starting (arguments, configuration, the store's migrations, the first connection) runs code
//! that a relay or an idle daemon never runs again, and the kernel maps the binary's code in
//! large windows around every page touched: after start most of the binary's code is counted
//! in the process's resident memory. Unmapping it lets only the code still in use come back.

use std::path::Path;

/// Unmaps this process's executable code; the pages still in use fault back in from the page
/// cache (the binary's file) as they run. Only the binary's own executable, unwritten
/// mappings are touched: nothing that holds data. Returns the bytes unmapped.
pub fn release_startup_code() -> usize {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return 0;
    };
    code_ranges(&maps, &exe)
        .into_iter()
        .map(|(start, end)| {
            // SAFETY: the range is a private, read-only, executable mapping of our own binary
            // (text is never written: no relocations in it). MADV_DONTNEED drops the page table
            // entries; the next access maps the same bytes from the file again.
            let dropped = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if dropped == 0 { end - start } else { 0 }
        })
        .sum()
}

/// The `r-xp` mappings of `exe` in a `/proc/<pid>/maps` listing.
fn code_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            // range perms offset device inode path (which may hold spaces)
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if perms != "r-xp" || path != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_binarys_executable_mappings_are_chosen() {
        let maps = "\
55d0a0000000-55d0a0200000 r--p 00000000 fe:01 123 /opt/exai/bin/exai
55d0a0200000-55d0a1300000 r-xp 00200000 fe:01 123                        /opt/exai/bin/exai
55d0a1300000-55d0a1400000 r--p 01300000 fe:01 123 /opt/exai/bin/exai
55d0a1400000-55d0a1410000 rw-p 01400000 fe:01 123 /opt/exai/bin/exai
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000400000-7f0000500000 r-xp 00000000 fe:01 789 /opt/exai/bin/exai-old
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            code_ranges(maps, Path::new("/opt/exai/bin/exai")),
            vec![(0x55d0a0200000, 0x55d0a1300000)]
        );
    }

    #[test]
    fn the_code_still_runs_after_its_pages_are_given_back() {
        let released = release_startup_code();
        assert!(
            released > 0,
            "no executable mapping of the test binary was found"
        );
        // Code and data alike still work: the text faults back in from the file.
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        assert_eq!(words.join(",").len(), 4889);
    }
}
