//! A WAL part as a shared file mapping: appending a frame is a `memcpy`, not a
//! `write(2)`.
//!
//! Why it is safe to acknowledge a request once the copy is done: the mapping is
//! `MAP_SHARED`, so the copied bytes are the file's page-cache pages themselves; they
//! outlive a kill of the process exactly like bytes handed to `write(2)`, and the
//! bridge's `pread`/`fdatasync` see and flush them. The part's blocks are reserved
//! with `fallocate` before it is mapped, so a full disk is reported when a part is
//! created (an error the caller turns into 503), never as a `SIGBUS` on a store.
//!
//! The only unsafe code in the crate lives here: creating the mapping, copying into
//! it, and lending the bridge the bytes the writer has published. Every copy is
//! bounds-checked against the mapping's length, a loan against the published length,
//! and the mapping is unmapped exactly once, in `Drop`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes at the start of a mapping that stay in 4-KiB pages (see `MappedFile::create`);
/// a multiple of the largest folio, so the large ones after it are aligned.
pub const SMALL_PAGES_BYTES: usize = 2 << 20;

/// A writable shared mapping of a whole file of a fixed size.
#[derive(Debug)]
pub struct MappedFile {
    map: Arc<Mapping>,
    file: File,
}

/// The address range itself; unmapped when the last holder drops it (the writer's
/// [`MappedFile`], or a [`PartHandle`] the bridge holds).
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes from the start that the writer has finished writing and never writes
    /// again ([`MappedFile::publish`]): the only bytes a [`PartHandle`] reads.
    published: AtomicUsize,
}

// SAFETY: bytes are written only through `MappedFile::write_at` (`&mut`, one owner),
// and never below `published`; a `PartHandle` reads only below `published` (loaded
// with `Acquire`, stored with `Release` after the bytes were written) and otherwise
// only passes ranges to `madvise`. Sharing the range between threads is then sound.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// What another thread (the bridge) may do with a writer's mapping: fault its pages
/// in ahead of the writer (`madvise(MADV_POPULATE_WRITE)`), so the writer's stores
/// find them mapped and writable, and read the bytes the writer has published, in
/// place, instead of copying them out with `pread`. It keeps the range mapped while
/// held.
#[derive(Debug, Clone)]
pub struct PartHandle(Arc<Mapping>);

impl PartHandle {
    /// Faults in `offset..offset + n` (clamped to the mapping, whole pages) for
    /// writing, as the writer's first stores would: page-cache pages allocated and
    /// zero-filled (the file's blocks are reserved and unwritten), then made writable
    /// and dirty. Changes no byte. Fails with `EINVAL` on kernels before 5.14, and
    /// with `EFAULT` past the file's end (a finished, trimmed part): both harmless.
    pub fn populate(&self, offset: usize, n: usize) -> std::io::Result<()> {
        let Some((start, end)) = self.0.pages(offset, n) else { return Ok(()) };
        // SAFETY: `start..end` lies inside the mapping, which this handle keeps
        // mapped, and `start` is page aligned; populating changes no contents.
        let rc =
            unsafe { libc::madvise(self.0.ptr.as_ptr().add(start).cast(), end - start, libc::MADV_POPULATE_WRITE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The mapping's length in bytes (never 0: `MappedFile::create` refuses that).
    pub fn mapped_bytes(&self) -> usize {
        self.0.len
    }

    /// The bytes the writer has published from `offset` on (empty when it has not
    /// published past `offset`): the file's page-cache pages themselves, read in
    /// place. One load of the writer's count per call, so a reader takes a run of
    /// frames with one look at the line the writer stores to.
    pub fn published_from(&self, offset: usize) -> &[u8] {
        let end = self.0.published.load(Ordering::Acquire);
        if offset >= end {
            return &[];
        }
        // SAFETY: `offset..end` lies below `published` (≤ `len`, see `publish`), so it
        // is inside the mapping, which this handle keeps mapped for the slice's
        // lifetime, and the writer finished those bytes before publishing them and
        // never writes below `published` again: nothing mutates them while the
        // slice lives. (`MappedFile::finish` cuts the file at or above `published`,
        // so no page of the slice lies past the file's end.)
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr().add(offset), end - offset) }
    }
}

impl MappedFile {
    /// Reserves `len` bytes for `file` (which must be empty and opened read-write) and
    /// maps them. Fails — leaving the caller to fall back to `write(2)` or report the
    /// error — when the file system cannot reserve blocks or the kernel refuses the map.
    pub fn create(file: File, len: usize) -> std::io::Result<MappedFile> {
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty mapping"));
        }
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len as u64)?;
        // SAFETY: a fresh mapping (addr null) of a file we hold open, `len` > 0 bytes,
        // all of them backed by the blocks just reserved; checked for MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        // No readahead on this mapping's faults: the bridge faults the pages ahead of
        // the writer in on its own thread ([`Prefault`]), and a fault's readahead would
        // instead zero-fill the next window on the writer's thread. Advice only.
        // SAFETY: `raw`/`len` are the mapping just created.
        let _ = unsafe { libc::madvise(raw, len, libc::MADV_RANDOM) };
        if let Some(tail) = len.checked_sub(SMALL_PAGES_BYTES).filter(|&t| t > 0) {
            // Past the first `SMALL_PAGES_BYTES`, large page-cache folios (up to 2 MiB):
            // faulting them in, and punching them out once stored, costs the bridge a
            // third of what 4-KiB pages do (measured: 0.75 + 0.25 µs per 4 KiB instead of
            // 2.3 + 0.75, ext4, Linux 6.18). Not from the part's first byte: the shard
            // writes there before the bridge hears of the part, and its first fault would
            // then fill a whole 2-MiB folio on the shard's thread. Advice only (`EINVAL`
            // without transparent huge pages).
            // SAFETY: `SMALL_PAGES_BYTES..len` lies inside the mapping just created, and
            // `SMALL_PAGES_BYTES` is a multiple of the page size.
            let _ = unsafe { libc::madvise(raw.cast::<u8>().add(SMALL_PAGES_BYTES).cast(), tail, libc::MADV_HUGEPAGE) };
        }
        Ok(MappedFile { map: Arc::new(Mapping { ptr, len, published: AtomicUsize::new(0) }), file })
    }

    /// A handle another thread may use to fault this mapping's pages in ahead of the
    /// writer and to read what it published.
    pub fn handle(&self) -> PartHandle {
        PartHandle(self.map.clone())
    }

    /// Declares the first `end` bytes finished: never written again, readable through
    /// a [`PartHandle`]. Only grows; panics only on a caller bug (past the mapping, or
    /// below what was published).
    pub fn publish(&mut self, end: usize) {
        assert!(end <= self.map.len, "publish past the mapping");
        // This writer is the only one to store it: a relaxed load reads its own value.
        assert!(end >= self.map.published.load(Ordering::Relaxed), "published bytes are never taken back");
        self.map.published.store(end, Ordering::Release);
    }

    /// The mapping's size in bytes (the file's size until [`MappedFile::finish`]).
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Copies `bytes` to `offset`. Panics only on a caller bug (a range past the
    /// end, or below what was published), which the WAL writer rules out before calling.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset.checked_add(bytes.len());
        assert!(end.is_some_and(|e| e <= self.map.len), "write past the mapping");
        assert!(offset >= self.map.published.load(Ordering::Relaxed), "write below the published bytes");
        // SAFETY: `offset + bytes.len() <= len` (checked above), the mapping is
        // writable and lives as long as `self`, `bytes` cannot overlap it (the only
        // references into the mapping are `PartHandle::read`'s, below `published`,
        // and `offset` is at or above it), and `&mut self` makes this the only writer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.ptr.as_ptr().add(offset), bytes.len()) }
    }

    /// Flushes `offset..offset + n` to disk (`msync(MS_SYNC)` over the pages holding it).
    pub fn sync_range(&self, offset: usize, n: usize) -> std::io::Result<()> {
        let Some((start, end)) = self.map.pages(offset, n) else { return Ok(()) };
        // SAFETY: `start..end` lies inside the mapping and `start` is page aligned.
        let rc = unsafe { libc::msync(self.map.ptr.as_ptr().add(start).cast(), end - start, libc::MS_SYNC) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps (once no [`PartHandle`] holds the range) and cuts the file to the `used`
    /// bytes written, so a finished part holds frames only. (A part left at full size
    /// by a crash ends in zeros, which readers treat as its end.) Never below what was
    /// published, which a handle may still be reading.
    pub fn finish(self, used: u64) -> std::io::Result<()> {
        let MappedFile { map, file } = self;
        let used = used.max(map.published.load(Ordering::Relaxed) as u64);
        drop(map);
        file.set_len(used)
    }
}

impl Mapping {
    /// `offset..offset + n` widened down to a page boundary and clamped to the
    /// mapping: `(start, end)` with `start` page aligned; `None` when empty.
    fn pages(&self, offset: usize, n: usize) -> Option<(usize, usize)> {
        let page = rustix::param::page_size();
        let start = offset - offset % page;
        let end = offset.saturating_add(n).min(self.len);
        (end > start).then_some((start, end))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; this runs once, when the
        // last holder lets go.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new, empty file `name` in `dir`, open for reading and writing.
    fn new_file(dir: &tempfile::TempDir, name: &str) -> File {
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join(name)).unwrap()
    }

    #[test]
    fn bytes_copied_in_are_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let f = new_file(&dir, "p");
        let mut m = MappedFile::create(f, 8192).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        m.write_at(0, b"head");
        m.write_at(4094, b"straddle");
        m.sync_range(4094, 8).unwrap();
        let seen = std::fs::read(&path).unwrap();
        assert_eq!(&seen[..4], b"head");
        assert_eq!(&seen[4094..4102], b"straddle");
        m.finish(4102).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 4102);
    }

    #[test]
    fn prefaulting_changes_no_byte_and_outlives_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let f = new_file(&dir, "p");
        let mut m = MappedFile::create(f, 3 * 4096).unwrap();
        m.write_at(0, b"kept");
        let pre = m.handle();
        assert_eq!(pre.mapped_bytes(), 3 * 4096);
        match pre.populate(0, 3 * 4096) {
            Ok(()) => {}
            // A kernel before 5.14: the caller stops asking.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        }
        pre.populate(4096, usize::MAX).unwrap();
        pre.populate(3 * 4096, 10).unwrap();
        m.write_at(5000, b"after");
        let seen = std::fs::read(&path).unwrap();
        assert_eq!(&seen[..4], b"kept");
        assert!(seen[4..5000].iter().all(|&b| b == 0));
        assert_eq!(&seen[5000..5005], b"after");
        // The writer finishes (trims the file) while the handle still holds the range:
        // populating past the new end fails instead of faulting the process.
        m.finish(5005).unwrap();
        assert!(pre.populate(8192, 4096).is_err());
        drop(pre);
        assert_eq!(std::fs::read(&path).unwrap().len(), 5005);
    }

    #[test]
    fn a_handle_reads_only_published_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = new_file(&dir, "p");
        let mut m = MappedFile::create(f, 8192).unwrap();
        let h = m.handle();
        m.write_at(0, b"first;second;");
        assert_eq!(h.published_from(0), b"");
        m.publish(6);
        assert_eq!(h.published_from(0), b"first;");
        assert_eq!(h.published_from(2), b"rst;");
        assert_eq!(h.published_from(6), b"");
        assert_eq!(h.published_from(usize::MAX), b"");
        m.publish(13);
        assert_eq!(h.published_from(6), b"second;");
        // The file is never cut below what a handle may read.
        m.finish(4).unwrap();
        assert_eq!(h.published_from(0), b"first;second;");
        drop(h);
        assert_eq!(std::fs::read(dir.path().join("p")).unwrap(), b"first;second;");
    }

    #[test]
    #[should_panic(expected = "write below the published bytes")]
    fn published_bytes_are_never_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = new_file(&dir, "p");
        let mut m = MappedFile::create(f, 64).unwrap();
        m.write_at(0, b"0123456789");
        m.publish(10);
        m.write_at(9, b"x");
    }

    #[test]
    #[should_panic(expected = "published bytes are never taken back")]
    fn a_published_length_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MappedFile::create(new_file(&dir, "p"), 64).unwrap();
        m.publish(10);
        m.publish(9);
    }

    #[test]
    #[should_panic(expected = "publish past the mapping")]
    fn nothing_past_the_mapping_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MappedFile::create(new_file(&dir, "p"), 64).unwrap();
        m.publish(65);
    }

    /// Whether the `VmFlags` list `flags` holds `flag`.
    fn has(flags: &str, flag: &str) -> bool {
        flags.split(' ').any(|f| f == flag)
    }

    /// `VmFlags` of the mapping in `/proc/self/smaps` that starts at `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        let head = format!("{addr:x}-");
        while let Some(line) = lines.next() {
            if line.starts_with(&head) {
                return lines.find_map(|l| l.strip_prefix("VmFlags:")).unwrap().trim().to_string();
            }
        }
        panic!("no mapping at {addr:x}")
    }

    #[test]
    fn the_first_two_mib_take_small_pages_and_the_rest_large_folios() {
        let dir = tempfile::tempdir().unwrap();
        let f = new_file(&dir, "p");
        let m = MappedFile::create(f, SMALL_PAGES_BYTES + 8192).unwrap();
        let start = m.map.ptr.as_ptr() as usize;
        let head = vm_flags(start);
        assert!(has(&head, "rr") && !has(&head, "hg"), "{head}");
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            // The advice splits the mapping in two; the tail asks for large folios.
            let tail = vm_flags(start + SMALL_PAGES_BYTES);
            assert!(has(&tail, "hg") && has(&tail, "rr"), "{tail}");
        }
        // A mapping no longer than the small-page head gets no such advice.
        let f = new_file(&dir, "q");
        let small = MappedFile::create(f, SMALL_PAGES_BYTES).unwrap();
        let flags = vm_flags(small.map.ptr.as_ptr() as usize);
        assert!(!has(&flags, "hg"), "{flags}");
    }

    #[test]
    #[should_panic(expected = "write past the mapping")]
    fn a_write_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = new_file(&dir, "p");
        let mut m = MappedFile::create(f, 16).unwrap();
        m.write_at(10, b"0123456789");
    }
}
