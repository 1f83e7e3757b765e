//! The image: a frozen body on disk or in transit (ARCHITECTURE.md section 3).
//!
//! An image is one file: an [`layout::ImageHeader`] (magic, layout
//! version, checksum, CPU features), the freeze handler's
//! [`layout::FreezeRecord`], the mm fields and aux vector, a region table,
//! a table of page runs, the fd table and a string table (together the
//! *metadata*, padded to a page), then the page data. Every table is a
//! fixed-layout record array, so the `#![no_std]` restorer reads it
//! without a parser; this module writes images and checks them (checksum,
//! bounds, CPU features, files) before anything is restored.
//!
//! What is in it: private anonymous pages that exist (zero-page mappings
//! skipped), the written pages of private file mappings, shared anonymous
//! memory; not clean file pages (re-mapped from the file), never-touched
//! pages or vdso/vvar (only their addresses).

pub use mosix_layout as layout;

mod place;

use layout::*;
use serde::Serialize;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Plain-data records that may be viewed as bytes and read back from bytes.
///
/// # Safety
/// Implementors are `repr(C)`, have no padding bytes, and every bit pattern
/// is a valid value.
pub unsafe trait Pod: Copy {}

// SAFETY: all-integer repr(C) records without padding (checked by the
// size assertions below).
unsafe impl Pod for ImageHeader {}
// SAFETY: repr(C) plain data, every bit pattern valid.
unsafe impl Pod for BodyInfo {}
// SAFETY: as above.
unsafe impl Pod for FreezeRecord {}
// SAFETY: as above.
unsafe impl Pod for MmFields {}
// SAFETY: as above.
unsafe impl Pod for RegionDesc {}
// SAFETY: as above.
unsafe impl Pod for PageRun {}
// SAFETY: as above.
unsafe impl Pod for FdDesc {}
// SAFETY: as above.
unsafe impl Pod for Hello {}
// SAFETY: as above.
unsafe impl Pod for CallRecord {}
// SAFETY: as above.
unsafe impl Pod for ReplyRecord {}

const _: () = {
    assert!(size_of::<ImageHeader>() == 256);
    assert!(size_of::<FreezeRecord>() == 2312);
    assert!(size_of::<MmFields>() == 864);
    assert!(size_of::<RegionDesc>() == 72);
    assert!(size_of::<PageRun>() == 24);
    assert!(size_of::<FdDesc>() == 48);
    assert!(size_of::<Hello>() == 1184);
    assert!(size_of::<CallRecord>() == 40);
    assert!(size_of::<ReplyRecord>() == 32);
    assert!(size_of::<TtyInfo>() == 8);
    assert!(size_of::<BodyInfo>() == 32 + 8 * MAX_TTYS);
    assert!(KTERMIOS_LEN as u32 <= CALL_PAYLOAD_MAX);
    assert!(WINSIZE_LEN as u32 <= CALL_PAYLOAD_MAX);
    // The restorer's own image (text, data, 256 KiB stack) must fit below
    // the vdso park, which must fit below the scratch area; the window
    // lies below the top-down mmap area and the stack.
    assert!(RESTORER_BASE == WINDOW_START);
    assert!(VDSO_PARK - RESTORER_BASE >= 4 << 20);
    assert!(SCRATCH_START - VDSO_PARK >= 1 << 20);
    assert!(MAX_METADATA == WINDOW_START + WINDOW_SIZE - SCRATCH_START);
    assert!(WINDOW_START % PAGE_SIZE == 0);
    assert!(WINDOW_START + WINDOW_SIZE < 0x7000_0000_0000);
};

/// The bytes of a record.
pub fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

/// A record from the start of `b`, or None if `b` is too short.
pub fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `b` holds at least size_of::<T>() bytes and every bit
    // pattern is a valid `T` (Pod); read_unaligned copes with alignment.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) })
}

/// Streaming checksum of an image: four interleaved rotate-multiply
/// chains over little-endian 64-bit words (word `i` feeds chain `i % 4`,
/// so the multiplies overlap), combined at the end with the length. It
/// detects corruption and truncation; it is not a MAC (images are
/// authenticated by the link that carries them). Every `update` but the
/// last must be a multiple of 8 bytes long.
#[derive(Debug, Clone)]
pub struct Checksum {
    h: [u64; 4],
    len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum::new()
    }
}

const CK_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

fn ck_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(CK_MUL).rotate_left(31)
}

fn le_word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

impl Checksum {
    /// A fresh checksum.
    pub fn new() -> Checksum {
        Checksum {
            h: [
                0x6d6f_7369_785f_696d,
                0x2d69_6d61_6765_2d31,
                0x0123_4567_89ab_cdef,
                0xfedc_ba98_7654_3210,
            ],
            len: 0,
        }
    }
    /// Feed `data` (a tail that is not a multiple of 8 is padded with
    /// zeros, so only the last update may have one).
    pub fn update(&mut self, data: &[u8]) {
        let words = data.len() / 8;
        let mut lane = ((self.len / 8) % 4) as usize;
        let mut i = 0;
        let h = &mut self.h;
        while lane != 0 && i < words {
            h[lane] = ck_step(h[lane], le_word(&data[i * 8..]));
            lane = (lane + 1) % 4;
            i += 1;
        }
        for block in data[i * 8..words * 8].chunks_exact(32) {
            h[0] = ck_step(h[0], le_word(&block[0..8]));
            h[1] = ck_step(h[1], le_word(&block[8..16]));
            h[2] = ck_step(h[2], le_word(&block[16..24]));
            h[3] = ck_step(h[3], le_word(&block[24..32]));
        }
        i += (words - i) / 4 * 4;
        while i < words {
            h[lane] = ck_step(h[lane], le_word(&data[i * 8..]));
            lane = (lane + 1) % 4;
            i += 1;
        }
        if data.len() % 8 != 0 {
            h[lane] = ck_step(h[lane], le_word(&data[words * 8..]));
        }
        self.len += data.len() as u64;
    }
    /// The final value.
    pub fn finish(&self) -> u64 {
        let mut h = self.len;
        for lane in self.h {
            h = ck_step(h, lane);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// The CPU features an image depends on (ARCHITECTURE.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuFeatures {
    /// Size of the xsave area for the enabled features (CPUID 0xD.0 EBX).
    pub xsave_size: u32,
    /// Enabled xsave features (XCR0).
    pub xcr0: u64,
}

impl CpuFeatures {
    /// This machine's features (zero if the CPU has no XSAVE).
    pub fn current() -> CpuFeatures {
        use std::arch::x86_64::__cpuid_count;
        let leaf1 = __cpuid_count(1, 0);
        if leaf1.ecx & (1 << 27) == 0 {
            return CpuFeatures {
                xsave_size: 0,
                xcr0: 0,
            };
        }
        let d = __cpuid_count(0xd, 0);
        CpuFeatures {
            xsave_size: d.ebx,
            xcr0: xgetbv0(),
        }
    }
}

/// XCR0, read with `xgetbv`.
fn xgetbv0() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: only called when CPUID says OSXSAVE is on, which makes
    // xgetbv with ecx = 0 legal at any privilege level.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    ((hi as u64) << 32) | lo as u64
}

/// What can go wrong writing or checking an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// cannot {what} {path}: {error}
    #[error("cannot {what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: String,
        /// What the OS said (in the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// {path} is not a mosix image (bad magic)
    #[error("{path} is not a mosix image (bad magic)")]
    NotImage {
        /// The file.
        path: String,
    },
    /// {path} has image layout version {found}, this mosix reads version {expected}: restart it with the mosix that wrote it
    #[error(
        "{path} has image layout version {found}, this mosix reads version {expected}: restart it with the mosix that wrote it"
    )]
    Version {
        /// The file.
        path: String,
        /// Version in the file.
        found: u32,
        /// Version we read.
        expected: u32,
    },
    /// {path} is corrupted or truncated: {why}
    #[error("{path} is corrupted or truncated: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// {path} was made on a CPU with xsave size {image_xsave} and XCR0 {image_xcr0:#x}; this machine has {here_xsave} and {here_xcr0:#x}: restart it on a machine of the same CPU type
    #[error(
        "{path} was made on a CPU with xsave size {image_xsave} and XCR0 {image_xcr0:#x}; this machine has {here_xsave} and {here_xcr0:#x}: restart it on a machine of the same CPU type"
    )]
    CpuMismatch {
        /// The file.
        path: String,
        /// Image's xsave size.
        image_xsave: u32,
        /// Image's XCR0.
        image_xcr0: u64,
        /// Ours.
        here_xsave: u32,
        /// Ours.
        here_xcr0: u64,
    },
    /// the image's metadata is too large ({0} bytes; at most 192 MiB): too many regions or fds
    #[error(
        "the image's metadata is too large ({0} bytes; at most 192 MiB): too many regions or fds"
    )]
    TooLarge(u64),
    /// will not write the image {path}: {why}
    #[error("will not write the image {path}: {why}")]
    Unsafe {
        /// The image's path.
        path: String,
        /// Who else could change it, or what is there.
        why: String,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |error| ImageError::Io {
        what,
        path: path.display().to_string(),
        error,
    }
}

/// One region to put in an image.
#[derive(Debug, Clone)]
pub struct RegionSpec {
    /// Addresses, kind, protection, flags, file offset and size; `path`,
    /// `first_run` and `n_runs` are filled in by the writer.
    pub desc: RegionDesc,
    /// The mapped file, for file kinds.
    pub path: Option<String>,
    /// Page runs (first page index, number of pages) whose contents go in
    /// the image, sorted and non-overlapping.
    pub runs: Vec<(u64, u64)>,
}

/// One fd to put in an image.
#[derive(Debug, Clone)]
pub struct FdSpec {
    /// Number, kind, flags, offset, size; `path` is filled in by the writer.
    pub desc: FdDesc,
    /// Where the fd pointed (`/proc/PID/fd/N`).
    pub path: String,
}

/// Everything an image holds but the page contents.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The freeze handler's record.
    pub record: FreezeRecord,
    /// mm fields and auxv.
    pub mm: MmFields,
    /// The address space, sorted by address.
    pub regions: Vec<RegionSpec>,
    /// Open fds.
    pub fds: Vec<FdSpec>,
    /// Owner uid.
    pub uid: u32,
    /// Pid when frozen.
    pub pid: i32,
    /// umask.
    pub umask: u32,
    /// Working directory.
    pub cwd: String,
    /// Executable path.
    pub exe: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// `uname -r` of the writer.
    pub kernel_release: String,
    /// Seconds since the epoch.
    pub created_unix: u64,
    /// CPU features of the writer.
    pub cpu: CpuFeatures,
}

/// Reads page contents of the frozen process for the writer.
pub trait PageSource {
    /// Fill `buf` with the memory at `addr`.
    fn read_pages(&mut self, addr: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Final path.
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: u64,
    /// Pages of data.
    pub pages: u64,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Where each run's data comes from and goes: (address, file offset,
/// bytes), in file order.
type DataPlan = Vec<(u64, u64, u64)>;

/// Lay out the metadata of `spec`: (header, metadata bytes with a zero
/// checksum, the data plan).
fn build_metadata(spec: &ImageSpec) -> Result<(ImageHeader, Vec<u8>, DataPlan), ImageError> {
    let mut strings: Vec<u8> = Vec::new();
    let mut add = |s: &str| -> StrRef {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        StrRef {
            off,
            len: s.len() as u32,
        }
    };
    let kernel_release = add(&spec.kernel_release);
    let cwd = add(&spec.cwd);
    let exe = add(&spec.exe);
    let cmdline = add(&spec.cmdline.join("\0"));
    let mut regions = Vec::with_capacity(spec.regions.len());
    let mut runs = Vec::new();
    for r in &spec.regions {
        let mut d = r.desc;
        d.path = r.path.as_deref().map(&mut add).unwrap_or_default();
        d.first_run = runs.len() as u64;
        d.n_runs = r.runs.len() as u64;
        for &(start_page, n_pages) in &r.runs {
            runs.push(PageRun {
                start_page,
                n_pages,
                data_off: 0,
            });
        }
        regions.push(d);
    }
    let fds: Vec<FdDesc> = spec
        .fds
        .iter()
        .map(|f| {
            let mut d = f.desc;
            d.path = add(&f.path);
            d
        })
        .collect();
    let mut off = size_of::<ImageHeader>() as u64;
    let record_off = off;
    off += size_of::<FreezeRecord>() as u64;
    let mm_off = align(off, 8);
    off = mm_off + size_of::<MmFields>() as u64;
    let regions_off = align(off, 8);
    off = regions_off + (regions.len() * size_of::<RegionDesc>()) as u64;
    let runs_off = align(off, 8);
    off = runs_off + (runs.len() * size_of::<PageRun>()) as u64;
    let fds_off = align(off, 8);
    off = fds_off + (fds.len() * size_of::<FdDesc>()) as u64;
    let strings_off = align(off, 8);
    off = strings_off + strings.len() as u64;
    let metadata_size = align(off, PAGE_SIZE);
    if metadata_size > MAX_METADATA {
        return Err(ImageError::TooLarge(metadata_size));
    }
    let mut data_off = metadata_size;
    let mut plan = Vec::with_capacity(runs.len());
    for d in &regions {
        for run in &mut runs[d.first_run as usize..(d.first_run + d.n_runs) as usize] {
            run.data_off = data_off;
            let bytes = run.n_pages * PAGE_SIZE;
            plan.push((d.start + run.start_page * PAGE_SIZE, data_off, bytes));
            data_off += bytes;
        }
    }
    let n_pages = (data_off - metadata_size) / PAGE_SIZE;
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        version: LAYOUT_VERSION,
        header_size: size_of::<ImageHeader>() as u32,
        checksum: 0,
        file_size: data_off,
        metadata_size,
        xsave_size: spec.cpu.xsave_size,
        page_size: PAGE_SIZE as u32,
        xcr0: spec.cpu.xcr0,
        record_off,
        mm_off,
        regions_off,
        n_regions: regions.len() as u64,
        runs_off,
        n_runs: runs.len() as u64,
        fds_off,
        n_fds: fds.len() as u64,
        strings_off,
        strings_size: strings.len() as u64,
        n_pages,
        created_unix: spec.created_unix,
        flags: IMAGE_FLAGS_NONE,
        uid: spec.uid,
        pid: spec.pid,
        umask: spec.umask,
        kernel_release,
        cwd,
        exe,
        cmdline,
        reserved: [0; 7],
    };
    let mut meta = vec![0u8; metadata_size as usize];
    let mut put =
        |off: u64, b: &[u8]| meta[off as usize..off as usize + b.len()].copy_from_slice(b);
    put(0, as_bytes(&header));
    put(record_off, as_bytes(&spec.record));
    put(mm_off, as_bytes(&spec.mm));
    for (i, d) in regions.iter().enumerate() {
        put(
            regions_off + (i * size_of::<RegionDesc>()) as u64,
            as_bytes(d),
        );
    }
    for (i, r) in runs.iter().enumerate() {
        put(runs_off + (i * size_of::<PageRun>()) as u64, as_bytes(r));
    }
    for (i, f) in fds.iter().enumerate() {
        put(fds_off + (i * size_of::<FdDesc>()) as u64, as_bytes(f));
    }
    put(strings_off, &strings);
    Ok((header, meta, plan))
}

/// Write the image of `spec` to `path` atomically, as the file system user
/// of the calling thread (`homed`: the owner, see [`crate::FsIds`]): into
/// a file no one else can have opened or named (mode 0600), synced, then
/// renamed over `path`, so `path` never names a half-written image. A
/// directory another user than `spec.uid` and root could change, and a
/// `path` that is a symlink or another user's file, are refused (see
/// `place`). Page contents come from `source`.
pub fn write_image(
    path: &Path,
    spec: &ImageSpec,
    source: &mut dyn PageSource,
) -> Result<Written, ImageError> {
    let (header, meta, plan) = build_metadata(spec)?;
    let place = place::Place::open(path, spec.uid)?;
    let pending = place.create()?;
    let written = (|| {
        let file = &pending.file;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let shown = path.display().to_string();
        let checksum = copy_out(
            &meta,
            &plan,
            source,
            4 << 20,
            &mut |c| w.write_all(c),
            &shown,
            "write",
        )?;
        w.flush().map_err(io_err("write", path))?;
        drop(w);
        let mut h = header;
        h.checksum = checksum;
        file.write_all_at(as_bytes(&h), 0)
            .map_err(io_err("write", path))?;
        file.sync_all().map_err(io_err("sync", path))
    })();
    match written {
        Ok(()) => place.publish(pending)?,
        Err(e) => {
            place.discard(pending);
            return Err(e);
        }
    }
    Ok(Written {
        path: path.to_path_buf(),
        bytes: header.file_size,
        pages: header.n_pages,
    })
}

/// An image laid out for streaming (migration, ARCHITECTURE.md section 3 step
/// 3): no file on the sending side. The receiver writes the bytes in
/// order, then stores the checksum [`ImagePlan::stream`] returns into the
/// header ([`patch_checksum`]), which gives the same bytes
/// [`write_image`] would have written.
pub struct ImagePlan {
    meta: Vec<u8>,
    plan: DataPlan,
    file_size: u64,
    pages: u64,
}

impl ImagePlan {
    /// Lay out the image of `spec`.
    pub fn new(spec: &ImageSpec) -> Result<ImagePlan, ImageError> {
        let (header, meta, plan) = build_metadata(spec)?;
        Ok(ImagePlan {
            meta,
            plan,
            file_size: header.file_size,
            pages: header.n_pages,
        })
    }

    /// Total bytes the stream will carry.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Pages of memory in it.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Send the image in chunks of at most `chunk` bytes to `out` (the
    /// header's checksum is still zero); returns the checksum.
    pub fn stream(
        &self,
        source: &mut dyn PageSource,
        chunk: usize,
        out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ImageError> {
        copy_out(
            &self.meta,
            &self.plan,
            source,
            chunk,
            out,
            "the image stream",
            "send",
        )
    }
}

/// Give `out` the image's bytes: `meta`, then the pages of `plan` read
/// from `source`, in chunks of at most `chunk` bytes; returns the checksum
/// of them all. Errors name `place`, and `verb` says what `out` does.
fn copy_out(
    meta: &[u8],
    plan: &DataPlan,
    source: &mut dyn PageSource,
    chunk: usize,
    out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    place: &str,
    verb: &'static str,
) -> Result<u64, ImageError> {
    let chunk = chunk.max(PAGE_SIZE as usize);
    let sink = |error| ImageError::Io {
        what: verb,
        path: place.to_string(),
        error,
    };
    let mut sum = Checksum::new();
    sum.update(meta);
    for c in meta.chunks(chunk) {
        out(c).map_err(sink)?;
    }
    let mut buf = vec![0u8; chunk];
    for &(addr, _, bytes) in plan {
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(buf.len() as u64) as usize;
            source
                .read_pages(addr + done, &mut buf[..n])
                .map_err(|error| ImageError::Io {
                    what: "read the memory of the frozen process for",
                    path: place.to_string(),
                    error,
                })?;
            sum.update(&buf[..n]);
            out(&buf[..n]).map_err(sink)?;
            done += n as u64;
        }
    }
    Ok(sum.finish())
}

/// Store `checksum` into the header at the start of a streamed image
/// (see [`ImagePlan`]).
pub fn patch_checksum(file: &File, checksum: u64) -> std::io::Result<()> {
    let mut hb = [0u8; size_of::<ImageHeader>()];
    file.read_exact_at(&mut hb, 0)?;
    let Some(mut h) = from_bytes::<ImageHeader>(&hb) else {
        return Err(std::io::Error::other("image header too short"));
    };
    h.checksum = checksum;
    file.write_all_at(as_bytes(&h), 0)
}

/// Region as [`LoadedImage`] shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionInfo {
    /// First address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// "anon", "file", "file-shared", "anon-shared", "vvar", "vvar_vclock", "vdso".
    pub kind: &'static str,
    /// rwx as in /proc/PID/maps.
    pub prot: String,
    /// Mapped file.
    pub path: Option<String>,
    /// File offset.
    pub file_off: u64,
    /// File size when frozen.
    pub file_size: u64,
    /// Pages of data in the image.
    pub pages: u64,
    /// Whether it is the heap, the stack.
    pub role: Option<&'static str>,
}

/// Fd as [`LoadedImage`] shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FdInfo {
    /// Number.
    pub fd: i32,
    /// "file", "tty", "pipe", "socket", "dir", "other".
    pub kind: &'static str,
    /// Target path.
    pub path: String,
    /// Open flags.
    pub flags: u32,
    /// Offset.
    pub pos: u64,
    /// Size of a regular file when frozen.
    pub size: u64,
    /// FD_CLOEXEC.
    pub cloexec: bool,
    /// A lower fd sharing its open file description, if any.
    pub same_as: Option<i32>,
}

/// A checked image: header, record and tables decoded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedImage {
    /// The file.
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
    /// Pages of data.
    pub pages: u64,
    /// Pid when frozen.
    pub pid: i32,
    /// Owner.
    pub uid: u32,
    /// umask.
    pub umask: u32,
    /// Executable.
    pub exe: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Kernel release of the writer.
    pub kernel_release: String,
    /// Seconds since the epoch.
    pub created_unix: u64,
    /// CPU features of the writer.
    pub cpu: CpuFeatures,
    /// The freeze signal.
    pub freeze_signal: i32,
    /// Resource limits (soft, hard) by `RLIMIT_*` number.
    pub rlimits: Vec<[u64; 2]>,
    /// Regions.
    pub regions: Vec<RegionInfo>,
    /// Fds.
    pub fds: Vec<FdInfo>,
}

fn kind_name(k: u32) -> &'static str {
    match k {
        RK_ANON => "anon",
        RK_FILE_PRIVATE => "file",
        RK_FILE_SHARED => "file-shared",
        RK_ANON_SHARED => "anon-shared",
        RK_VVAR => "vvar",
        RK_VVAR_VCLOCK => "vvar_vclock",
        RK_VDSO => "vdso",
        _ => "?",
    }
}

fn fd_kind_name(k: u32) -> &'static str {
    match k {
        FK_REGULAR => "file",
        FK_TTY => "tty",
        FK_PIPE => "pipe",
        FK_SOCKET => "socket",
        FK_DIR => "dir",
        _ => "other",
    }
}

impl LoadedImage {
    /// Open and check the image at `path`: magic, version, size, checksum
    /// over every byte, table bounds. CPU features are checked separately
    /// ([`LoadedImage::check_cpu`]), so `mosrun -I` can show a foreign
    /// image.
    pub fn open(path: &Path) -> Result<LoadedImage, ImageError> {
        let p = || path.display().to_string();
        let corrupt = |why: String| ImageError::Corrupt { path: p(), why };
        let mut file = File::open(path).map_err(io_err("open", path))?;
        let actual = file.metadata().map_err(io_err("stat", path))?.len();
        let mut hb = [0u8; size_of::<ImageHeader>()];
        if actual < hb.len() as u64 {
            return Err(corrupt(format!(
                "{actual} bytes, shorter than an image header"
            )));
        }
        file.read_exact(&mut hb).map_err(io_err("read", path))?;
        let h: ImageHeader = from_bytes(&hb).ok_or_else(|| corrupt("short header".into()))?;
        if h.magic != IMAGE_MAGIC {
            return Err(ImageError::NotImage { path: p() });
        }
        if h.version != LAYOUT_VERSION {
            return Err(ImageError::Version {
                path: p(),
                found: h.version,
                expected: LAYOUT_VERSION,
            });
        }
        if h.header_size as usize != size_of::<ImageHeader>() || h.page_size as u64 != PAGE_SIZE {
            return Err(corrupt("header size or page size is wrong".into()));
        }
        if h.file_size != actual {
            return Err(corrupt(format!(
                "the header says {} bytes, the file has {actual}",
                h.file_size
            )));
        }
        if h.metadata_size > MAX_METADATA
            || h.metadata_size > actual
            || h.metadata_size % PAGE_SIZE != 0
        {
            return Err(corrupt(format!(
                "metadata size {} is impossible",
                h.metadata_size
            )));
        }
        // Checksum over the whole file with the checksum field zeroed.
        let mut meta = vec![0u8; h.metadata_size as usize];
        meta[..hb.len()].copy_from_slice(&hb);
        file.read_exact(&mut meta[hb.len()..])
            .map_err(io_err("read", path))?;
        let mut zeroed = h;
        zeroed.checksum = 0;
        let mut sum = Checksum::new();
        let mut first = meta.clone();
        first[..hb.len()].copy_from_slice(as_bytes(&zeroed));
        sum.update(&first);
        let mut buf = vec![0u8; 4 << 20];
        loop {
            // Whole buffers (the file is a multiple of 8 bytes long), so
            // every update but the last is a multiple of 8.
            let mut n = 0;
            while n < buf.len() {
                let got = file.read(&mut buf[n..]).map_err(io_err("read", path))?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
        if sum.finish() != h.checksum {
            return Err(corrupt("checksum mismatch".into()));
        }
        Self::decode(path, &h, &meta)
    }

    fn decode(path: &Path, h: &ImageHeader, meta: &[u8]) -> Result<LoadedImage, ImageError> {
        let corrupt = |why: &str| ImageError::Corrupt {
            path: path.display().to_string(),
            why: why.into(),
        };
        let table = |off: u64, n: u64, size: usize| -> Result<&[u8], ImageError> {
            let bytes = n
                .checked_mul(size as u64)
                .ok_or_else(|| corrupt("table size overflows"))?;
            let end = off
                .checked_add(bytes)
                .ok_or_else(|| corrupt("table offset overflows"))?;
            if end > meta.len() as u64 || off % 8 != 0 {
                return Err(corrupt("a table lies outside the metadata"));
            }
            Ok(&meta[off as usize..end as usize])
        };
        let record: FreezeRecord = from_bytes(table(h.record_off, 1, size_of::<FreezeRecord>())?)
            .ok_or_else(|| corrupt("record"))?;
        if record.magic != FREEZE_MAGIC || record.size as usize != size_of::<FreezeRecord>() {
            return Err(corrupt("bad freeze record"));
        }
        let mm: MmFields = from_bytes(table(h.mm_off, 1, size_of::<MmFields>())?)
            .ok_or_else(|| corrupt("mm fields"))?;
        let strings = table(h.strings_off, h.strings_size, 1)?;
        let string = |s: StrRef| -> Result<String, ImageError> {
            let end = s.off as usize + s.len as usize;
            if end >= strings.len() || strings[end] != 0 {
                return Err(corrupt("a string lies outside the string table"));
            }
            Ok(String::from_utf8_lossy(&strings[s.off as usize..end]).into_owned())
        };
        let rb = table(h.regions_off, h.n_regions, size_of::<RegionDesc>())?;
        let runb = table(h.runs_off, h.n_runs, size_of::<PageRun>())?;
        let runs: Vec<PageRun> = runb
            .chunks_exact(size_of::<PageRun>())
            .filter_map(from_bytes::<PageRun>)
            .collect();
        let mut regions = Vec::new();
        let mut prev_end = 0u64;
        let mut pages_total = 0u64;
        for c in rb.chunks_exact(size_of::<RegionDesc>()) {
            let d: RegionDesc = from_bytes(c).ok_or_else(|| corrupt("region"))?;
            if d.start % PAGE_SIZE != 0
                || d.end % PAGE_SIZE != 0
                || d.end <= d.start
                || d.start < prev_end
            {
                return Err(corrupt("regions are not sorted page-aligned ranges"));
            }
            if d.start < WINDOW_START + WINDOW_SIZE && d.end > WINDOW_START {
                return Err(corrupt("a region lies in the restorer window"));
            }
            if !(RK_ANON..=RK_VDSO).contains(&d.kind) {
                return Err(corrupt("unknown region kind"));
            }
            prev_end = d.end;
            let last = d
                .first_run
                .checked_add(d.n_runs)
                .ok_or_else(|| corrupt("run index overflows"))?;
            if last > runs.len() as u64 {
                return Err(corrupt("a region's runs lie outside the run table"));
            }
            let npages = (d.end - d.start) / PAGE_SIZE;
            let mut pages = 0;
            let mut next = 0;
            for r in &runs[d.first_run as usize..last as usize] {
                let e = r
                    .start_page
                    .checked_add(r.n_pages)
                    .ok_or_else(|| corrupt("run overflows"))?;
                if r.start_page < next || e > npages || r.n_pages == 0 {
                    return Err(corrupt("a page run lies outside its region"));
                }
                let dend = r
                    .n_pages
                    .checked_mul(PAGE_SIZE)
                    .and_then(|b| b.checked_add(r.data_off));
                if r.data_off < h.metadata_size || dend.is_none_or(|e| e > h.file_size) {
                    return Err(corrupt("page data lies outside the file"));
                }
                next = e;
                pages += r.n_pages;
            }
            pages_total += pages;
            let prot = format!(
                "{}{}{}",
                if d.prot & PROT_R != 0 { 'r' } else { '-' },
                if d.prot & PROT_W != 0 { 'w' } else { '-' },
                if d.prot & PROT_X != 0 { 'x' } else { '-' }
            );
            let is_file = d.kind == RK_FILE_PRIVATE || d.kind == RK_FILE_SHARED;
            regions.push(RegionInfo {
                start: d.start,
                end: d.end,
                kind: kind_name(d.kind),
                prot,
                path: if is_file { Some(string(d.path)?) } else { None },
                file_off: d.file_off,
                file_size: d.file_size,
                pages,
                role: if d.flags & RF_HEAP != 0 {
                    Some("heap")
                } else if d.flags & RF_STACK != 0 {
                    Some("stack")
                } else {
                    None
                },
            });
        }
        if pages_total != h.n_pages {
            return Err(corrupt("page count does not match the runs"));
        }
        let fb = table(h.fds_off, h.n_fds, size_of::<FdDesc>())?;
        let mut fds = Vec::new();
        for c in fb.chunks_exact(size_of::<FdDesc>()) {
            let d: FdDesc = from_bytes(c).ok_or_else(|| corrupt("fd"))?;
            if d.fd < 0 {
                return Err(corrupt("negative fd number"));
            }
            fds.push(FdInfo {
                fd: d.fd,
                kind: fd_kind_name(d.kind),
                path: string(d.path)?,
                flags: d.flags,
                pos: d.pos,
                size: d.size,
                cloexec: d.cloexec != 0,
                same_as: d.shares_with.checked_sub(1).map(|n| n as i32),
            });
        }
        let cmdline = string(h.cmdline)?.split('\0').map(str::to_owned).collect();
        Ok(LoadedImage {
            path: path.to_path_buf(),
            bytes: h.file_size,
            pages: h.n_pages,
            pid: h.pid,
            uid: h.uid,
            umask: h.umask,
            exe: string(h.exe)?,
            cmdline,
            cwd: string(h.cwd)?,
            kernel_release: string(h.kernel_release)?,
            created_unix: h.created_unix,
            cpu: CpuFeatures {
                xsave_size: h.xsave_size,
                xcr0: h.xcr0,
            },
            freeze_signal: record.freeze_signal,
            rlimits: mm.rlimits.to_vec(),
            regions,
            fds,
        })
    }

    /// Refuse an image from a CPU with other xsave features.
    pub fn check_cpu(&self, here: CpuFeatures) -> Result<(), ImageError> {
        if self.cpu != here {
            return Err(ImageError::CpuMismatch {
                path: self.path.display().to_string(),
                image_xsave: self.cpu.xsave_size,
                image_xcr0: self.cpu.xcr0,
                here_xsave: here.xsave_size,
                here_xcr0: here.xcr0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_is_said_once() {
        let e = LoadedImage::open(Path::new("/nonexistent/mosix/img")).unwrap_err();
        let said = mosix_proto::error_chain(&e);
        assert_eq!(said.matches("os error").count(), 1, "{said}");
        assert!(
            said.starts_with("cannot open /nonexistent/mosix/img: "),
            "{said}"
        );
    }

    struct Pattern;
    impl PageSource for Pattern {
        fn read_pages(&mut self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((addr as usize + i) % 251) as u8;
            }
            Ok(())
        }
    }

    fn spec() -> ImageSpec {
        let mut mm: MmFields = from_bytes(&[0u8; size_of::<MmFields>()]).unwrap();
        mm.brk = 0x5000;
        ImageSpec {
            record: FreezeRecord::empty(),
            mm,
            regions: vec![
                RegionSpec {
                    desc: RegionDesc {
                        start: 0x1000,
                        end: 0x5000,
                        kind: RK_ANON,
                        prot: PROT_R | PROT_W,
                        ..Default::default()
                    },
                    path: None,
                    runs: vec![(0, 1), (2, 2)],
                },
                RegionSpec {
                    desc: RegionDesc {
                        start: 0x10000,
                        end: 0x12000,
                        kind: RK_FILE_PRIVATE,
                        prot: PROT_R,
                        file_size: 77,
                        ..Default::default()
                    },
                    path: Some("/bin/true".into()),
                    runs: vec![],
                },
            ],
            fds: vec![FdSpec {
                desc: FdDesc {
                    fd: 3,
                    kind: FK_REGULAR,
                    pos: 9,
                    ..Default::default()
                },
                path: "/etc/hostname".into(),
            }],
            uid: 1000,
            pid: 42,
            umask: 0o22,
            cwd: "/tmp".into(),
            exe: "/bin/true".into(),
            cmdline: vec!["true".into(), "x y".into()],
            kernel_release: "6.18".into(),
            created_unix: 1,
            cpu: CpuFeatures {
                xsave_size: 1,
                xcr0: 7,
            },
        }
    }

    #[test]
    fn streamed_image_equals_the_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        write_image(&path, &spec(), &mut Pattern).unwrap();
        let plan = ImagePlan::new(&spec()).unwrap();
        let mut got = Vec::new();
        let mut chunks = 0;
        let sum = plan
            .stream(&mut Pattern, 4096, &mut |c| {
                assert!(c.len() <= 4096);
                chunks += 1;
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert!(chunks > 1);
        assert_eq!(got.len() as u64, plan.file_size());
        assert_eq!(plan.pages(), 3);
        let streamed = dir.path().join("streamed");
        std::fs::write(&streamed, &got).unwrap();
        // Before the checksum is stored the image is refused...
        assert!(LoadedImage::open(&streamed).is_err());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&streamed)
            .unwrap();
        patch_checksum(&f, sum).unwrap();
        // ...after, it is byte for byte what write_image wrote.
        assert_eq!(
            std::fs::read(&streamed).unwrap(),
            std::fs::read(&path).unwrap()
        );
        assert_eq!(LoadedImage::open(&streamed).unwrap().pid, 42);
    }

    #[test]
    fn a_failing_sink_stops_the_stream() {
        let plan = ImagePlan::new(&spec()).unwrap();
        let r = plan.stream(&mut Pattern, 4096, &mut |_| {
            Err(std::io::Error::other("link cut"))
        });
        assert!(matches!(r, Err(ImageError::Io { .. })));
    }

    #[test]
    fn write_then_open_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let w = write_image(&path, &spec(), &mut Pattern).unwrap();
        assert_eq!(w.pages, 3);
        let img = LoadedImage::open(&path).unwrap();
        assert_eq!(img.pid, 42);
        assert_eq!(img.cmdline, vec!["true".to_string(), "x y".into()]);
        assert_eq!(img.regions.len(), 2);
        assert_eq!(img.regions[0].pages, 3);
        assert_eq!(img.regions[1].path.as_deref(), Some("/bin/true"));
        assert_eq!(img.fds[0].path, "/etc/hostname");
        assert!(
            img.check_cpu(CpuFeatures {
                xsave_size: 1,
                xcr0: 7
            })
            .is_ok()
        );
        assert!(matches!(
            img.check_cpu(CpuFeatures {
                xsave_size: 2,
                xcr0: 7
            }),
            Err(ImageError::CpuMismatch { .. })
        ));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A spec whose owner is `uid`.
    fn spec_of(uid: u32) -> ImageSpec {
        ImageSpec { uid, ..spec() }
    }

    fn euid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_planted_temporary_name_or_symlink_is_never_written_through() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let path = dir.path().join("img");
        // Another user, guessing the old `<path>.tmp-<pid>`, plants a
        // symlink there, and a file of theirs for the next name it tries.
        let planted = dir.path().join(format!("img.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_image(&path, &spec_of(euid()), &mut Pattern).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_file(), "the image is not a regular file");
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert_eq!(m.uid(), euid());
        assert!(LoadedImage::open(&path).is_ok());
        // The planted name is left as it was, and nothing else is left.
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        // Writing again replaces the owner's own image.
        write_image(&path, &spec_of(euid()), &mut Pattern).unwrap();
        assert!(LoadedImage::open(&path).is_ok());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_symlink_at_the_image_name_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"victim").unwrap();
        let path = dir.path().join("img");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = write_image(&path, &spec_of(euid()), &mut Pattern).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
        assert_eq!(std::fs::read_link(&path).unwrap(), victim);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn directories_others_may_change_are_refused_unless_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
        // Anyone may rename entries of a 0777 directory: refused.
        mode(0o777).unwrap();
        let e = write_image(&path, &spec_of(euid()), &mut Pattern).unwrap_err();
        assert!(e.to_string().contains("sticky"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Sticky (like /tmp): only the owner may rename their files.
        mode(0o1777).unwrap();
        write_image(&path, &spec_of(euid()), &mut Pattern).unwrap();
        std::fs::remove_file(&path).unwrap();
        mode(0o700).unwrap();
        // A directory of another user (not root) is refused whatever its mode:
        // they may rename or replace anything in it.
        let other = if euid() == 0 {
            std::os::unix::fs::chown(dir.path(), Some(4242), None).unwrap();
            1000
        } else {
            euid() + 1
        };
        let e = write_image(&path, &spec_of(other), &mut Pattern).unwrap_err();
        assert!(e.to_string().contains("belongs to uid"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn another_users_file_at_the_image_name_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"theirs").unwrap();
        // The file is the test user's; the image is another user's.
        let other = if euid() == 0 { 1000 } else { euid() + 1 };
        if euid() == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        }
        let e = write_image(&path, &spec_of(other), &mut Pattern).unwrap_err();
        assert!(e.to_string().contains("belongs to uid"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corruption_and_truncation_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        write_image(&path, &spec(), &mut Pattern).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 100;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let e = LoadedImage::open(&path).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        std::fs::write(&path, &good[..good.len() - 4096]).unwrap();
        let e = LoadedImage::open(&path).unwrap_err().to_string();
        assert!(e.contains("corrupted or truncated"), "{e}");
        std::fs::write(&path, b"hello").unwrap();
        assert!(LoadedImage::open(&path).is_err());
        let mut other = good.clone();
        other[..8].copy_from_slice(b"NOTANIMG");
        std::fs::write(&path, &other).unwrap();
        assert!(matches!(
            LoadedImage::open(&path),
            Err(ImageError::NotImage { .. })
        ));
    }

    #[test]
    fn checksum_does_not_depend_on_how_the_input_is_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        for cut in [8, 16, 24, 40, 504, 992] {
            let mut parts = Checksum::new();
            parts.update(&data[..cut]);
            parts.update(&data[cut..]);
            assert_eq!(parts.finish(), whole.finish(), "split at {cut}");
        }
        let mut shorter = Checksum::new();
        shorter.update(&data[..992]);
        assert_ne!(shorter.finish(), whole.finish());
    }

    #[test]
    fn checksum_sees_word_swaps_and_high_bits() {
        let mut a = Checksum::new();
        a.update(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = Checksum::new();
        b.update(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_ne!(a.finish(), b.finish());
        let mut c = Checksum::new();
        c.update(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        let mut d = Checksum::new();
        d.update(&[0; 16]);
        assert_ne!(c.finish(), d.finish());
    }

    #[test]
    fn records_have_no_padding_and_magics_differ() {
        assert_ne!(FREEZE_MAGIC, HELLO_MAGIC);
        let r = FreezeRecord::empty();
        let b = as_bytes(&r);
        let back: FreezeRecord = from_bytes(b).unwrap();
        assert_eq!(back.magic, FREEZE_MAGIC);
        assert_eq!(back.size as usize, size_of::<FreezeRecord>());
        assert!(from_bytes::<FreezeRecord>(&b[..10]).is_none());
    }

    #[test]
    fn cpu_features_are_readable() {
        let f = CpuFeatures::current();
        assert_eq!(f, CpuFeatures::current());
    }
}
