//! Pages: the page size, and page-aligned anonymous memory regions.
//!
//! A [`Region`] is one private anonymous mapping (`mmap(MAP_PRIVATE|MAP_ANONYMOUS)`),
//! unmapped when it drops. Invariants, relied on by every allocator built on it:
//!
//! * `as_ptr()` is a multiple of [`Region::granule`] (the page size, or the huge page
//!   size when huge pages were granted), and never moves.
//! * All `mapped_len()` bytes are readable, writable and initialized (the kernel hands
//!   out zero-filled pages), so exposing them as `[u8]` is sound.
//! * The region is unmapped exactly once, in `Drop`.
//!
//! The options are what DMA and media code ask for: huge pages (explicit `MAP_HUGETLB`,
//! falling back to transparent huge pages when none are reserved), `mlock` (pinned
//! memory; a refusal names `RLIMIT_MEMLOCK`), and pre-faulting (`MAP_POPULATE`), so the
//! first write to a fresh buffer does not take a page fault per page.
#![allow(unsafe_code)] // listed in ARCHITECTURE.md, "Where `unsafe` lives"

use std::ffi::c_void;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::OnceLock;

use rustix::io::Errno;
use rustix::mm::{self, MapFlags, ProtFlags};

use crate::error::{Error, Result};

/// The size of a memory page in bytes (4096 on most Linux machines), read once from
/// the kernel's auxiliary vector and cached.
///
/// ```
/// let page = pagebuf::page_size();
/// assert!(page.is_power_of_two() && page >= 4096);
/// ```
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

/// The default huge page size (`Hugepagesize` in `/proc/meminfo`), if the kernel has
/// huge page support. This says nothing about whether any are reserved.
pub fn huge_page_size() -> Option<usize> {
    static HUGE: OnceLock<Option<usize>> = OnceLock::new();
    *HUGE.get_or_init(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        meminfo_kib(&meminfo, "Hugepagesize:")?.checked_mul(1024)
    })
}

/// Huge pages free for `MAP_HUGETLB` right now (`HugePages_Free` in `/proc/meminfo`).
fn free_huge_pages() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_kib(&m, "HugePages_Free:"))
        .unwrap_or(0)
}

/// A new memfd named `name` of `len` bytes (zero-filled; on reserved huge pages,
/// `MFD_HUGETLB`, if `huge`, `len` a multiple of their size), sealed against resizing
/// and further seals, and against execution where the kernel knows how.
pub(crate) fn sealed_memfd(name: &str, len: usize, huge: bool) -> Result<OwnedFd> {
    use rustix::fs::{self, MemfdFlags, SealFlags};
    let mut base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    if huge {
        base |= MemfdFlags::HUGETLB;
    }
    // MFD_NOEXEC_SEAL (Linux 6.3) keeps the memory from ever being executable; older
    // kernels reject the unknown flag with EINVAL, and then it is made without it.
    let fd = match fs::memfd_create(name, base | MemfdFlags::NOEXEC_SEAL) {
        Err(Errno::INVAL) => fs::memfd_create(name, base),
        other => other,
    }
    .map_err(|e| Error::io(format!("memfd_create of {name}"), e.into()))?;
    fs::ftruncate(&fd, len as u64).map_err(|e| {
        Error::OutOfMemory(format!(
            "sizing the memfd {name} to {len} bytes failed ({e}); ask for less memory"
        ))
    })?;
    // F_SEAL_EXEC (Linux 6.3) too where the kernel knows it; MFD_NOEXEC_SEAL already
    // set it there, so an EINVAL from an older kernel just means "not available".
    let required = required_seals();
    match fs::fcntl_add_seals(&fd, required | SealFlags::EXEC) {
        Err(Errno::INVAL) => fs::fcntl_add_seals(&fd, required),
        other => other,
    }
    .map_err(|e| Error::io(format!("sealing the memfd {name}"), e.into()))?;
    Ok(fd)
}

/// The seals every sealed memfd of pagebuf carries (and a shared pool's `attach`
/// requires): no resizing, no further seals.
pub(crate) fn required_seals() -> rustix::fs::SealFlags {
    use rustix::fs::SealFlags;
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
}

/// The huge page size, if enough reserved huge pages are free for `len` bytes now;
/// otherwise [`Error::Unsupported`] saying how many are needed and how to reserve them
/// (`vm.nr_hugepages`).
pub(crate) fn huge_pages_free_for(len: usize) -> Result<usize> {
    let Some(huge) = huge_page_size() else {
        return Err(Error::Unsupported(
            "this kernel reports no huge page size (no Hugepagesize in /proc/meminfo); \
             use HugePages::Off"
                .into(),
        ));
    };
    let free = free_huge_pages();
    let needed =
        round_up(len, huge).ok_or_else(|| Error::size_overflow("region", len, huge))? / huge;
    if free < needed {
        return Err(Error::Unsupported(format!(
            "{needed} huge page(s) of {huge} bytes needed but {free} free \
             (HugePages_Free in /proc/meminfo); reserve more with \
             `echo N > /proc/sys/vm/nr_hugepages` (vm.nr_hugepages) as root"
        )));
    }
    Ok(huge)
}

/// The number after `key` on its line of `/proc/meminfo` (in kB for sizes).
fn meminfo_kib(meminfo: &str, key: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether a region is backed by huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HugePages {
    /// Normal pages only.
    #[default]
    Off,
    /// Reserved huge pages (`MAP_HUGETLB`) when some are free; otherwise normal pages
    /// advised as transparent huge pages (`MADV_HUGEPAGE`), with a note saying so.
    Prefer,
    /// Reserved huge pages or [`Error::Unsupported`].
    Require,
    /// Normal pages advised as transparent huge pages (`MADV_HUGEPAGE`) before they are
    /// faulted in: no reservation needed, huge pages where the kernel has them (THP
    /// `always` or `madvise`), small ones elsewhere, without a note. The mapping starts
    /// on a huge-page boundary and spans whole huge pages (up to one huge page more
    /// than asked for), since the kernel puts only aligned runs on huge pages. Physically
    /// contiguous 2 MiB runs make direct I/O from registered memory one segment per
    /// 2 MiB (BENCHMARKS.md, issue 13).
    Transparent,
}

/// How to map a [`Region`]. Build with the methods, which take and return `Self`.
///
/// ```
/// use pagebuf::memory::{HugePages, RegionOptions};
/// let options = RegionOptions::default().prefault(true).huge_pages(HugePages::Prefer);
/// assert!(options.is_prefault());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionOptions {
    huge_pages: HugePages,
    lock: bool,
    prefault: bool,
}

impl RegionOptions {
    /// Back the region with huge pages (see [`HugePages`]).
    pub fn huge_pages(mut self, huge_pages: HugePages) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Pin the region in RAM (`mlock`), as DMA and real-time code need.
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }

    /// Fault every page in when mapping (`MAP_POPULATE`), so first use is fast.
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// The huge page choice.
    pub fn huge_pages_choice(&self) -> HugePages {
        self.huge_pages
    }

    /// Whether the region will be locked.
    pub fn is_lock(&self) -> bool {
        self.lock
    }

    /// Whether the region will be pre-faulted.
    pub fn is_prefault(&self) -> bool {
        self.prefault
    }
}

/// One page-aligned anonymous memory mapping, unmapped on drop.
///
/// ```
/// use pagebuf::memory::{Region, RegionOptions};
///
/// let mut region = Region::map(10_000, RegionOptions::default())?;
/// assert_eq!(region.as_ptr() as usize % pagebuf::page_size(), 0);
/// assert_eq!(region.len(), 10_000);
/// assert!(region.as_slice().iter().all(|&b| b == 0)); // fresh pages are zeroed
/// region.as_mut_slice()[0] = 7;
/// # Ok::<(), pagebuf::Error>(())
/// ```
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    mapped_len: usize,
    granule: usize,
    huge: bool,
    locked: bool,
    note: Option<String>,
    /// The sealed memfd behind a shared mapping ([`Region::map_memfd`]).
    memfd: Option<OwnedFd>,
}

// SAFETY: a Region is plain memory owned by this value; it has no thread affinity, and
// shared access hands out only `&[u8]` (mutation needs `&mut Region`).
unsafe impl Send for Region {}
// SAFETY: see `Send`; `&Region` gives read-only access.
unsafe impl Sync for Region {}

impl Region {
    /// Maps at least `len` bytes (rounded up to whole pages) with `options`.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] when `len` is 0 or rounding it up overflows.
    /// * [`Error::OutOfMemory`] when the kernel refuses the mapping (`ENOMEM`, for example
    ///   under `RLIMIT_AS`) or the lock (`RLIMIT_MEMLOCK` exhausted).
    /// * [`Error::Unsupported`] when huge pages are required and none are free, or
    ///   locking is not permitted at all.
    pub fn map(len: usize, options: RegionOptions) -> Result<Region> {
        if len == 0 {
            return Err(Error::zero_size("region length"));
        }
        let mut note = None;
        let mut region = match options.huge_pages {
            HugePages::Off => Self::map_pages(len, page_size(), options, false)?,
            HugePages::Transparent => Self::map_transparent(len, options)?,
            HugePages::Prefer | HugePages::Require => match Self::map_huge(len, options) {
                Ok(region) => region,
                Err(err @ Error::InvalidArgument(_)) => return Err(err),
                Err(Error::Unsupported(why)) if options.huge_pages == HugePages::Prefer => {
                    note = Some(format!(
                        "{why}; fell back to {}-byte pages advised as transparent huge pages",
                        page_size()
                    ));
                    Self::map_transparent(len, options)?
                }
                Err(refused) => return Err(refused),
            },
        };
        region.note = note;
        if options.lock {
            region.lock()?;
        }
        Ok(region)
    }

    /// Normal pages advised as transparent huge pages, advised *before* they are faulted
    /// in (a page faulted first stays a small page): mapped without `MAP_POPULATE`,
    /// advised, then populated if asked.
    fn map_transparent(len: usize, options: RegionOptions) -> Result<Region> {
        // Whole huge pages from a huge-page boundary: the kernel backs only aligned 2 MiB
        // runs with a huge page, so a region smaller than one (six 256 KiB blocks) or
        // placed off a boundary got none of its bytes on huge pages. The slack is at most
        // one huge page less a page.
        let region = match huge_page_size().filter(|&huge| huge > page_size()) {
            Some(huge) => Self::map_at_boundary(len, huge, options.prefault(false))?,
            None => Self::map_pages(len, page_size(), options.prefault(false), false)?,
        };
        let (ptr, mapped) = (region.ptr.as_ptr().cast(), region.mapped_len);
        // Advice only: a kernel without THP says EINVAL and the region simply stays on
        // normal pages.
        // SAFETY: the range is exactly the mapping just created and owned.
        let _ = unsafe { mm::madvise(ptr, mapped, mm::Advice::LinuxHugepage) };
        if options.prefault {
            // MADV_POPULATE_WRITE (Linux 5.14): faults every page in, huge where it can.
            // SAFETY: as above; populating changes no contents (fresh zero pages).
            let populated = unsafe { mm::madvise(ptr, mapped, mm::Advice::LinuxPopulateWrite) };
            if populated.is_err() {
                // Older kernels: touch one byte a page (a write, so the page is private).
                for at in (0..mapped).step_by(page_size()) {
                    // SAFETY: `at` is inside the fresh mapping, which nothing else sees.
                    unsafe { region.ptr.as_ptr().add(at).write_volatile(0) };
                }
            }
        }
        Ok(region)
    }

    /// Small pages mapped from a multiple of `boundary` (a power of two) for `len`
    /// rounded up to one: a larger mapping, its head and tail slack unmapped.
    fn map_at_boundary(len: usize, boundary: usize, options: RegionOptions) -> Result<Region> {
        let whole =
            round_up(len, boundary).ok_or_else(|| Error::size_overflow("region", len, boundary))?;
        let span = whole
            .checked_add(boundary)
            .ok_or_else(|| Error::size_overflow("region", whole, boundary))?;
        let wide = std::mem::ManuallyDrop::new(Self::map_pages(span, page_size(), options, false)?);
        let start = wide.ptr.as_ptr() as usize;
        let head = start.next_multiple_of(boundary) - start;
        let tail = span - head - whole;
        // SAFETY: `wide` is a fresh mapping of `span` bytes owned here (and not dropped:
        // its range is unmapped piecewise). The head and the tail are disjoint parts of
        // it outside `[start + head, start + head + whole)`, which stays mapped and
        // becomes the new region's; nothing has seen any of it yet.
        let aligned = unsafe {
            let base = wide.ptr.as_ptr();
            if head > 0 {
                mm::munmap(base.cast(), head).map_err(|e| map_error(e, head, false))?;
            }
            if tail > 0 {
                mm::munmap(base.add(head + whole).cast(), tail)
                    .map_err(|e| map_error(e, tail, false))?;
            }
            NonNull::new_unchecked(base.add(head))
        };
        Ok(Region {
            ptr: aligned,
            len,
            mapped_len: whole,
            granule: page_size(),
            huge: false,
            locked: false,
            note: None,
            memfd: None,
        })
    }

    fn map_huge(len: usize, options: RegionOptions) -> Result<Region> {
        let huge = huge_pages_free_for(len)?;
        // Free pages can be taken by another process between the check and the map:
        // any refusal here is "no huge pages for you", which `Prefer` falls back from.
        Self::map_pages(len, huge, options, true).map_err(|err| match err {
            Error::OutOfMemory(why) => Error::Unsupported(format!(
                "huge pages refused: {why}; reserve more in /proc/sys/vm/nr_hugepages"
            )),
            other => other,
        })
    }

    fn map_pages(len: usize, granule: usize, options: RegionOptions, huge: bool) -> Result<Region> {
        let mapped_len =
            round_up(len, granule).ok_or_else(|| Error::size_overflow("region", len, granule))?;
        let mut flags = MapFlags::PRIVATE;
        if options.prefault {
            flags |= MapFlags::POPULATE;
        }
        if huge {
            flags |= MapFlags::HUGETLB;
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses (null hint,
        // no MAP_FIXED) cannot alias any existing memory.
        let mapped = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                mapped_len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
            )
        };
        let ptr = mapped.map_err(|errno| map_error(errno, mapped_len, huge))?;
        Region::from_mapping(ptr, (len, mapped_len, granule), huge, None)
    }

    /// The region of a mapping just made at `ptr`: `len` bytes asked for, `mapped_len`
    /// mapped, in pages of `granule`.
    fn from_mapping(
        ptr: *mut c_void,
        (len, mapped_len, granule): (usize, usize, usize),
        huge: bool,
        memfd: Option<OwnedFd>,
    ) -> Result<Region> {
        Ok(Region {
            // A successful mmap never returns null (the kernel does not map page 0 for
            // us without MAP_FIXED), but checking costs nothing and avoids assuming it.
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| {
                Error::OutOfMemory("mmap returned a null mapping; this kernel is unusual".into())
            })?,
            len,
            mapped_len,
            granule,
            huge,
            locked: false,
            note: None,
            memfd,
        })
    }

    /// Maps at least `len` bytes of a new memfd (`MAP_SHARED`), sealed against
    /// resizing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): memory another process
    /// can map through [`memfd`](Self::memfd) and never make us fault by shrinking it.
    /// `options` apply as for [`map`](Self::map): reserved huge pages (`MFD_HUGETLB`)
    /// with `Prefer` or `Require` (there is no transparent road for it here: `Prefer`
    /// falls back to normal pages with a note), prefault, lock.
    ///
    /// # Errors
    /// As [`map`](Self::map); [`Error::Io`] when the memfd cannot be made or sealed.
    pub fn map_memfd(len: usize, options: RegionOptions) -> Result<Region> {
        if len == 0 {
            return Err(Error::zero_size("region length"));
        }
        let mut note = None;
        let huge = match options.huge_pages {
            HugePages::Prefer | HugePages::Require => match huge_pages_free_for(len) {
                Ok(huge) => Some(huge),
                Err(Error::Unsupported(why)) if options.huge_pages == HugePages::Prefer => {
                    note = Some(format!("{why}; on {}-byte pages", page_size()));
                    None
                }
                Err(refused) => return Err(refused),
            },
            HugePages::Off | HugePages::Transparent => None,
        };
        let granule = huge.unwrap_or_else(page_size);
        let mapped_len =
            round_up(len, granule).ok_or_else(|| Error::size_overflow("region", len, granule))?;
        let fd = sealed_memfd("pagebuf-frames", mapped_len, huge.is_some())?;
        let mut flags = MapFlags::SHARED;
        if options.prefault {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping at an address the kernel picks overlaps nothing of
        // ours; the memfd is sealed against shrinking, so no access inside `mapped_len`
        // faults for want of backing.
        let mapped = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                mapped_len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                &fd,
                0,
            )
        };
        let ptr = mapped.map_err(|errno| map_error(errno, mapped_len, huge.is_some()))?;
        let mut region =
            Region::from_mapping(ptr, (len, mapped_len, granule), huge.is_some(), Some(fd))?;
        region.note = note;
        if options.lock {
            region.lock()?;
        }
        Ok(region)
    }

    /// The sealed memfd behind a region of [`map_memfd`](Self::map_memfd), for another
    /// process to map (offsets in it are offsets in the region); `None` for an
    /// anonymous region.
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        self.memfd.as_ref().map(AsFd::as_fd)
    }

    fn lock(&mut self) -> Result<()> {
        // SAFETY: the range is exactly this region's mapping, which it owns.
        match unsafe { mm::mlock(self.ptr.as_ptr().cast::<c_void>(), self.mapped_len) } {
            Ok(()) => {
                self.locked = true;
                Ok(())
            }
            Err(errno) => {
                let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock)
                    .current
                    .map_or_else(|| "unlimited".to_string(), |l| format!("{l} bytes"));
                let text = format!(
                    "mlock of {} bytes refused ({errno}): RLIMIT_MEMLOCK is {limit}; raise it \
                     (`ulimit -l`, or LimitMEMLOCK= for a systemd service), grant \
                     CAP_IPC_LOCK, or do not ask for locked memory",
                    self.mapped_len
                );
                Err(if errno == Errno::PERM {
                    Error::Unsupported(text)
                } else {
                    Error::OutOfMemory(text)
                })
            }
        }
    }

    /// The first byte; a multiple of [`Region::granule`].
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn non_null(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a region holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The length actually mapped: `len()` rounded up to whole pages.
    pub fn mapped_len(&self) -> usize {
        self.mapped_len
    }

    /// The page size backing the region (the huge page size when huge pages were granted).
    pub fn granule(&self) -> usize {
        self.granule
    }

    /// Whether reserved huge pages back the region.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// Whether the region is locked in RAM.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Why the region is not what was asked for, when it fell back (huge pages).
    pub fn fallback_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The `len()` bytes asked for.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is readable and initialized (zero-filled) for
        // `mapped_len >= len` bytes and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The `len()` bytes asked for, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`mapped_len` are exactly the mapping made in `map_pages`, which
        // this value owns; every buffer borrowing it holds the Region alive, so nothing
        // can reach the memory after this point. munmap also drops any mlock.
        let unmapped = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.mapped_len) };
        debug_assert!(
            unmapped.is_ok(),
            "munmap of an owned region failed: {unmapped:?}"
        );
    }
}

/// `value` rounded up to a multiple of the power of two `granule`, or `None` if that
/// would exceed `isize::MAX` (the most any allocation may span).
pub(crate) fn round_up(value: usize, granule: usize) -> Option<usize> {
    debug_assert!(granule.is_power_of_two());
    let rounded = value.checked_add(granule - 1)? & !(granule - 1);
    (rounded <= isize::MAX as usize).then_some(rounded)
}

fn map_error(errno: Errno, mapped_len: usize, huge: bool) -> Error {
    let what = if huge { " of huge pages" } else { "" };
    if errno == Errno::NOMEM || errno == Errno::AGAIN {
        // Name RLIMIT_AS only where it is set: raising an unlimited limit fixes nothing.
        let fix = match rustix::process::getrlimit(rustix::process::Resource::As).current {
            Some(limit) => format!("raise RLIMIT_AS (currently {limit} bytes)"),
            None => "check the memory cgroup's limit (memory.max) and \
                     vm.overcommit_memory"
                .to_string(),
        };
        Error::OutOfMemory(format!(
            "the kernel refused to map {mapped_len} bytes{what} ({errno}); free memory, ask \
             for less, or {fix}"
        ))
    } else {
        Error::OutOfMemory(format!("mmap of {mapped_len} bytes{what} failed ({errno})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_rlimit_as_only_where_it_is_set() {
        let text = map_error(Errno::NOMEM, 1 << 40, false).to_string();
        match rustix::process::getrlimit(rustix::process::Resource::As).current {
            Some(limit) => assert!(text.contains(&format!("currently {limit} bytes")), "{text}"),
            None => {
                assert!(!text.contains("RLIMIT_AS"), "{text}");
                assert!(text.contains("memory.max"), "{text}");
            }
        }
        assert!(!text.contains("unlimited"), "{text}");
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert_eq!(page_size(), rustix::param::page_size());
    }

    #[test]
    fn round_up_checks_overflow() {
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(usize::MAX, 4096), None);
        assert_eq!(round_up(isize::MAX as usize, 4096), None);
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal: 100 kB\nHugePages_Free:       3\nHugepagesize:    2048 kB\n";
        assert_eq!(meminfo_kib(text, "Hugepagesize:"), Some(2048));
        assert_eq!(meminfo_kib(text, "HugePages_Free:"), Some(3));
        assert_eq!(meminfo_kib(text, "Missing:"), None);
    }

    #[test]
    fn region_is_aligned_zeroed_and_rounded() {
        let region = Region::map(5000, RegionOptions::default().prefault(true)).unwrap();
        assert_eq!(region.as_ptr() as usize % page_size(), 0);
        assert_eq!(region.len(), 5000);
        assert_eq!(region.mapped_len(), 2 * page_size());
        assert!(region.as_slice().iter().all(|&b| b == 0));
        assert!(!region.is_huge() && !region.is_locked());
    }

    /// A transparent region starts on a huge-page boundary and spans whole huge pages
    /// (else a region under 2 MiB gets none), and the slack mapped to find the boundary
    /// is given back: a thousand maps of 1.5 MiB leave the address space as it was.
    #[test]
    fn transparent_regions_span_whole_huge_pages_and_leak_no_slack() {
        let Some(huge) = huge_page_size().filter(|&h| h > page_size()) else {
            eprintln!("skipped: no huge page size here");
            return;
        };
        let options = RegionOptions::default()
            .huge_pages(HugePages::Transparent)
            .prefault(true);
        let len = huge / 4 * 3;
        let mut region = Region::map(len, options).unwrap();
        assert_eq!(
            region.as_ptr() as usize % huge,
            0,
            "off a huge-page boundary"
        );
        assert_eq!((region.len(), region.mapped_len()), (len, huge));
        assert!(region.as_slice().iter().all(|&b| b == 0));
        region.as_mut_slice().fill(7);
        drop(region);
        let vm_size = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            meminfo_kib(&status, "VmSize:").unwrap()
        };
        let before = vm_size();
        for _ in 0..1000 {
            drop(Region::map(len, options.prefault(false)).unwrap());
        }
        let grown = vm_size().saturating_sub(before);
        assert!(grown < 64 << 10, "the address space grew by {grown} KiB");
    }

    #[test]
    fn zero_and_overflowing_lengths_are_invalid() {
        for len in [0, usize::MAX, isize::MAX as usize] {
            let err = Region::map(len, RegionOptions::default()).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{len}: {err}");
        }
    }

    #[test]
    fn huge_pages_prefer_falls_back_with_a_note_or_succeeds() {
        let region = Region::map(
            3 << 20,
            RegionOptions::default().huge_pages(HugePages::Prefer),
        )
        .unwrap();
        if region.is_huge() {
            assert_eq!(region.granule(), huge_page_size().unwrap());
            assert_eq!(region.as_ptr() as usize % region.granule(), 0);
            assert!(region.fallback_note().is_none());
        } else {
            let note = region.fallback_note().expect("a fallback must say why");
            assert!(
                note.contains("nr_hugepages") || note.contains("Hugepagesize"),
                "{note}"
            );
        }
    }

    #[test]
    fn huge_pages_require_is_unsupported_when_none_are_free() {
        if free_huge_pages() > 0 {
            eprintln!("skipped: this machine has huge pages reserved");
            return;
        }
        // Another test (tests/shared_pool.rs, as root) may reserve some meanwhile.
        match Region::map(
            1 << 20,
            RegionOptions::default().huge_pages(HugePages::Require),
        ) {
            Ok(region) => assert!(region.is_huge(), "Require gave normal pages"),
            Err(err) => {
                assert!(matches!(err, Error::Unsupported(_)), "{err}");
                assert!(err.to_string().contains("nr_hugepages"), "{err}");
            }
        }
    }

    #[test]
    fn locked_region_is_locked_or_refusal_names_rlimit() {
        match Region::map(64 << 10, RegionOptions::default().lock(true)) {
            Ok(region) => assert!(region.is_locked()),
            Err(err) => assert!(err.to_string().contains("RLIMIT_MEMLOCK"), "{err}"),
        }
    }
}
