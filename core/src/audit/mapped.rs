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
//! The only unsafe code in the crate lives here: creating the mapping and copying
//! into it. Every copy is bounds-checked against the mapping's length, and the
//! mapping is unmapped exactly once, in `Drop`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::ptr::NonNull;
use std::sync::Arc;

/// A writable shared mapping of a whole file of a fixed size.
#[derive(Debug)]
pub struct MappedFile {
    map: Arc<Mapping>,
    file: File,
}

/// The address range itself; unmapped when the last holder drops it (the writer's
/// [`MappedFile`], or a [`Prefault`] handle the bridge holds for a moment).
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: bytes are written only through `MappedFile::write_at` (`&mut`, one owner);
// a `Prefault` never reads or writes through the pointer, it only passes the range
// to `madvise`. Sharing the range's address between threads is then sound.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// What another thread may do with a writer's mapping: fault its pages in ahead of
/// the writer (`madvise(MADV_POPULATE_WRITE)`), so the writer's stores find them
/// mapped and writable. It keeps the range mapped while held.
#[derive(Debug, Clone)]
pub struct Prefault(Arc<Mapping>);

impl Prefault {
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
        Ok(MappedFile { map: Arc::new(Mapping { ptr, len }), file })
    }

    /// A handle another thread may use to fault this mapping's pages in ahead of the
    /// writer.
    pub fn prefault(&self) -> Prefault {
        Prefault(self.map.clone())
    }

    /// The mapping's size in bytes (the file's size until [`MappedFile::finish`]).
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Copies `bytes` to `offset`. Panics only on a caller bug (a range past the
    /// end), which the WAL writer rules out before calling.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset.checked_add(bytes.len());
        assert!(end.is_some_and(|e| e <= self.map.len), "write past the mapping");
        // SAFETY: `offset + bytes.len() <= len` (checked above), the mapping is
        // writable and lives as long as `self`, `bytes` cannot overlap it (we never
        // hand out a reference into the mapping), and `&mut self` makes this the only
        // writer (a `Prefault` never touches the bytes).
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

    /// Unmaps (once no [`Prefault`] holds the range) and cuts the file to the `used`
    /// bytes written, so a finished part holds frames only. (A part left at full size
    /// by a crash ends in zeros, which readers treat as its end.)
    pub fn finish(self, used: u64) -> std::io::Result<()> {
        let MappedFile { map, file } = self;
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

    #[test]
    fn bytes_copied_in_are_the_files_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
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
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        let mut m = MappedFile::create(f, 3 * 4096).unwrap();
        m.write_at(0, b"kept");
        let pre = m.prefault();
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
    #[should_panic(expected = "write past the mapping")]
    fn a_write_past_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("p")).unwrap();
        let mut m = MappedFile::create(f, 16).unwrap();
        m.write_at(10, b"0123456789");
    }
}
