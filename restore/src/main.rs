//! mosix-restore: the static restorer that turns an image back into a
//! running process (ARCHITECTURE.md sections 3 and 5).
//!
//! It is exec'd by `mosrun -R` (later: by the destination daemon) as
//! `mosix-restore FD`, where FD is an image already checked by the caller
//! (checksum, CPU features, files), and every fd of the process already in
//! place. Linked without libc at the fixed address of the window libmosix
//! reserves, so no image mapping ever collides with it. Steps, each a trap
//! from ARCHITECTURE.md section 5:
//!
//! 1. switch to a stack in our own bss (off the kernel's stack), block
//!    every signal, read the image metadata into the window's scratch area;
//! 2. park our own `[vvar]`, `[vvar_vclock]` and `[vdso]` inside the window
//!    (`mremap`), unmap everything outside the window, then move them to
//!    the image's addresses (same sizes required);
//! 3. map every region (anonymous, or re-mapped from its file) and fill the
//!    pages the image holds with `pread` straight into place, then set the
//!    final protections;
//! 4. mm fields and auxv (`PR_SET_MM_MAP`), robust list, rseq, signal
//!    actions, interval timers, FD_CLOEXEC, fs base;
//! 5. load the freeze handler's saved context and jump into it; the
//!    handler returns through the original kernel signal frame
//!    (`rt_sigreturn`), which restores registers, FPU state, signal mask
//!    and sigaltstack exactly.
#![no_std]
#![no_main]

use mosix_layout as layout;
mod sys;

use core::arch::{asm, global_asm};
use layout::*;
use sys::{nr, syscall6};

// Entry point: move off the kernel's stack onto our own (in the window),
// pass the initial stack pointer (argc, argv...) to `restore_main`.
global_asm!(
    ".section .bss.restorer_stack,\"aw\",@nobits",
    ".balign 64",
    "restorer_stack:",
    ".skip 262144",
    "restorer_stack_top:",
    ".text",
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "lea rsp, [rip + restorer_stack_top]",
    "and rsp, -16",
    "xor ebp, ebp",
    "call {main}",
    "ud2",
    main = sym restore_main,
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    die(b"internal error (panic)", 0)
}

/// The prebuilt `core` refers to the unwinder's personality routine even
/// with `panic = "abort"`; nothing unwinds here, so it is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Print "mosix-restore: MSG (errno N)" and end with status 127.
fn die(msg: &[u8], err: isize) -> ! {
    sys::write_all(2, b"mosix-restore: ");
    sys::write_all(2, msg);
    if err != 0 {
        let mut buf = [0u8; 24];
        sys::write_all(2, b" (errno ");
        sys::write_all(2, fmt_u64(&mut buf, (-err) as u64));
        sys::write_all(2, b")");
    }
    sys::write_all(2, b"\n");
    sys::exit_group(127)
}

/// Format `v` in decimal into `buf`.
fn fmt_u64(buf: &mut [u8; 24], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Die if a system call failed.
fn check(r: isize, what: &[u8]) -> usize {
    if r < 0 && r > -4096 {
        die(what, r);
    }
    r as usize
}

/// The restorer proper; `sp` is the kernel's initial stack pointer.
extern "C" fn restore_main(sp: *const u64) -> ! {
    // SAFETY: the kernel's initial stack holds argc then argv pointers.
    let argc = unsafe { *sp };
    if argc < 2 {
        die(
            b"usage: mosix-restore IMAGE-FD [hold] [consume] (run by mosrun -R, remoted or mosix-deputy, not by hand)",
            0,
        );
    }
    // SAFETY: argv[1] exists (argc >= 2) and is a NUL-terminated string.
    let arg1 = unsafe { *sp.wrapping_add(2) } as *const u8;
    let fd = parse_fd(arg1);
    // Words after the fd: `hold` (a migration's destination: stop before
    // the first user instruction until the source commits) and `consume`
    // (the image is a memfd nobody reads again: give each page run's
    // memory back as soon as it is in place, so a migration does not need
    // room for two whole copies of the process).
    let (mut hold, mut consume) = (false, false);
    for i in 2..argc.min(4) {
        // SAFETY: argv[i] exists (i < argc) and is a NUL-terminated string.
        let arg = unsafe { *sp.wrapping_add(1 + i as usize) } as *const u8;
        // SAFETY: as above.
        if unsafe { is_word(arg, b"hold\0") } {
            hold = true;
        // SAFETY: as above.
        } else if unsafe { is_word(arg, b"consume\0") } {
            consume = true;
        } else {
            die(b"unknown word after the image fd (hold, consume)", 0);
        }
    }

    // Nothing may interrupt us: the handlers we install point into the
    // image, and the restored frame brings the real mask back.
    let all: u64 = !0;
    // SAFETY: rt_sigprocmask(SIG_SETMASK, &all, NULL, 8).
    check(
        unsafe {
            syscall6(
                nr::RT_SIGPROCMASK,
                2,
                &all as *const u64 as usize,
                0,
                8,
                0,
                0,
            )
        },
        b"cannot block signals",
    );

    detach_from_file();
    let meta = load_metadata(fd);
    let img = Image::new(meta);

    let specials = own_specials();
    place_specials(&img, &specials);
    map_regions(&img, fd, consume);
    set_mm(&img);
    set_kernel_state(&img, fd);
    let rec = *img.record();
    finish_window();
    if hold {
        // Held (ARCHITECTURE.md section 3 step 4): the parent sees us stopped
        // (waitpid WUNTRACED) as "restored and held", and SIGCONT is the
        // go. Every signal is blocked here, so the SIGCONT stays pending
        // and reaches the program after the restored mask is back, as a
        // SIGCONT it would get after any stop.
        // SAFETY: getpid has no memory effects.
        let me = unsafe { syscall6(nr::GETPID, 0, 0, 0, 0, 0, 0) };
        // SAFETY: kill(me, SIGSTOP) only stops this process.
        unsafe { syscall6(nr::KILL, me as usize, 19, 0, 0, 0, 0) };
    }
    jump(&rec)
}

/// Whether the C string at `p` is exactly `word` (given with its NUL).
///
/// # Safety
/// `p` points to a NUL-terminated string.
unsafe fn is_word(p: *const u8, word: &[u8]) -> bool {
    for (i, &c) in word.iter().enumerate() {
        // SAFETY: the caller guarantees a NUL-terminated string and we
        // stop at the first byte that differs, at the latest at its NUL,
        // so `p + i` stays within it.
        let at = unsafe { p.add(i) };
        // SAFETY: `at` is within the NUL-terminated string.
        if unsafe { *at } != c {
            return false;
        }
    }
    true
}

/// Parse a small decimal fd from a C string.
fn parse_fd(mut p: *const u8) -> i32 {
    let mut v: i32 = 0;
    let mut n = 0;
    loop {
        // SAFETY: `p` walks a NUL-terminated argv string.
        let c = unsafe { *p };
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() || n > 9 {
            die(b"the image fd argument is not a number", 0);
        }
        v = v * 10 + (c - b'0') as i32;
        n += 1;
        // Still inside the string: we stop at its NUL.
        p = p.wrapping_add(1);
    }
    if n == 0 {
        die(b"empty image fd argument", 0);
    }
    v
}

/// Read the header and all metadata into the scratch area; return it.
fn load_metadata(fd: i32) -> &'static [u8] {
    let mut hdr = core::mem::MaybeUninit::<ImageHeader>::uninit();
    // SAFETY: `hdr` is writable for its size.
    if let Err(e) = unsafe {
        sys::pread_full(
            fd,
            hdr.as_mut_ptr() as usize,
            core::mem::size_of::<ImageHeader>(),
            0,
        )
    } {
        die(b"cannot read the image header", e);
    }
    // SAFETY: fully read above; every bit pattern is a valid ImageHeader.
    let hdr = unsafe { hdr.assume_init() };
    if hdr.magic != IMAGE_MAGIC
        || hdr.version != LAYOUT_VERSION
        || hdr.header_size as usize != core::mem::size_of::<ImageHeader>()
    {
        die(b"not a mosix image of this version", 0);
    }
    if hdr.metadata_size > MAX_METADATA || hdr.metadata_size < hdr.header_size as u64 {
        die(b"image metadata too large", 0);
    }
    let len = (hdr.metadata_size as usize).next_multiple_of(PAGE_SIZE as usize);
    // SAFETY: mapping fresh memory at the scratch address inside our own
    // window, where nothing else lives.
    let p = check(
        unsafe {
            syscall6(
                nr::MMAP,
                SCRATCH_START as usize,
                len,
                3,
                0x32, /* PRIVATE|ANON|FIXED */
                usize::MAX,
                0,
            )
        },
        b"cannot map the scratch area",
    );
    // SAFETY: the scratch area is `len` >= metadata_size writable bytes.
    if let Err(e) = unsafe { sys::pread_full(fd, p, hdr.metadata_size as usize, 0) } {
        die(b"cannot read the image metadata", e);
    }
    // SAFETY: initialised above; the scratch area lives until
    // `finish_window`, after which it is no longer used.
    unsafe { core::slice::from_raw_parts(p as *const u8, hdr.metadata_size as usize) }
}

/// Typed views of the metadata, bounds-checked once.
struct Image {
    meta: &'static [u8],
}

impl Image {
    fn new(meta: &'static [u8]) -> Image {
        let img = Image { meta };
        let h = img.header();
        let fits = |off: u64, n: u64, size: usize| -> bool {
            n.checked_mul(size as u64)
                .and_then(|b| b.checked_add(off))
                .is_some_and(|end| end <= meta.len() as u64)
                && off % 8 == 0
        };
        if !fits(h.record_off, 1, core::mem::size_of::<FreezeRecord>())
            || !fits(h.mm_off, 1, core::mem::size_of::<MmFields>())
            || !fits(
                h.regions_off,
                h.n_regions,
                core::mem::size_of::<RegionDesc>(),
            )
            || !fits(h.runs_off, h.n_runs, core::mem::size_of::<PageRun>())
            || !fits(h.fds_off, h.n_fds, core::mem::size_of::<FdDesc>())
            || h.strings_off
                .checked_add(h.strings_size)
                .is_none_or(|e| e > meta.len() as u64)
        {
            die(b"image tables out of bounds", 0);
        }
        img
    }
    fn at<T>(&self, off: u64) -> &T {
        // SAFETY: offsets were bounds- and alignment-checked in `new`; the
        // scratch area is page aligned; the records are plain data.
        unsafe { &*(self.meta.as_ptr().wrapping_add(off as usize) as *const T) }
    }
    fn slice<T>(&self, off: u64, n: u64) -> &[T] {
        // SAFETY: as in `at`.
        unsafe {
            core::slice::from_raw_parts(
                self.meta.as_ptr().wrapping_add(off as usize) as *const T,
                n as usize,
            )
        }
    }
    fn header(&self) -> &ImageHeader {
        // SAFETY: the header is at offset 0 and the metadata is at least
        // header_size long (checked in `load_metadata`).
        unsafe { &*(self.meta.as_ptr() as *const ImageHeader) }
    }
    fn record(&self) -> &FreezeRecord {
        self.at(self.header().record_off)
    }
    fn mm(&self) -> &MmFields {
        self.at(self.header().mm_off)
    }
    fn regions(&self) -> &[RegionDesc] {
        let h = self.header();
        self.slice(h.regions_off, h.n_regions)
    }
    fn runs(&self) -> &[PageRun] {
        let h = self.header();
        self.slice(h.runs_off, h.n_runs)
    }
    fn fds(&self) -> &[FdDesc] {
        let h = self.header();
        self.slice(h.fds_off, h.n_fds)
    }
    /// A NUL-terminated string of the string table, as a C pointer.
    fn cstr(&self, s: StrRef) -> usize {
        let h = self.header();
        let end = s.off as u64 + s.len as u64;
        if end >= h.strings_size || self.meta[(h.strings_off + end) as usize] != 0 {
            die(b"bad string in image", 0);
        }
        self.meta.as_ptr() as usize + (h.strings_off + s.off as u64) as usize
    }
}

/// Our own vvar, vvar_vclock and vdso: (start, end) each, 0 if absent.
type Specials = [(u64, u64); 3];

/// Buffer for /proc/self/maps (a few lines for this tiny process).
static mut MAPS_BUF: [u8; 16384] = [0; 16384];

/// Read /proc/self/maps into `MAPS_BUF`.
fn read_maps() -> &'static [u8] {
    let path = b"/proc/self/maps\0";
    // SAFETY: open(path, O_RDONLY).
    let fd = check(
        unsafe { syscall6(nr::OPEN, path.as_ptr() as usize, 0, 0, 0, 0, 0) },
        b"cannot open /proc/self/maps",
    ) as i32;
    let buf = &raw mut MAPS_BUF;
    let mut len = 0usize;
    loop {
        // SAFETY: reading into the rest of our static buffer; single thread.
        let n = unsafe {
            syscall6(
                nr::READ,
                fd as usize,
                (buf as usize) + len,
                16384 - len,
                0,
                0,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        len += n as usize;
        if len == 16384 {
            die(b"/proc/self/maps too long", 0);
        }
    }
    // SAFETY: closing our fd.
    unsafe { syscall6(nr::CLOSE, fd as usize, 0, 0, 0, 0, 0) };
    // SAFETY: `len` bytes of the static buffer were written; single
    // thread; the buffer is only rewritten by the next `read_maps`, after
    // the previous text is no longer used.
    unsafe { core::slice::from_raw_parts(buf as *const u8, len) }
}

/// Move our own file-backed mappings (text, rodata, data of the
/// mosix-restore file) to anonymous memory with the same contents, so the
/// executable file is no longer mapped and `PR_SET_MM_MAP` may point
/// `/proc/PID/exe` at the program's own executable. Each copy is made at a
/// temporary place and moved over the original with `mremap`; the bytes
/// under the instruction pointer never change.
fn detach_from_file() {
    let text = read_maps();
    let mut maps: [(u64, u64, usize); 8] = [(0, 0, 0); 8];
    let mut n = 0;
    for line in text.split(|&c| c == b'\n') {
        let mut parts = line.split(|&c| c == b' ').filter(|p| !p.is_empty());
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if inode == b"0" {
            continue;
        }
        let mut r = range.split(|&c| c == b'-');
        let s = parse_hex(r.next().unwrap_or(b""));
        let e = parse_hex(r.next().unwrap_or(b""));
        if s < WINDOW_START || e > VDSO_PARK || n == maps.len() {
            continue;
        }
        let mut prot = 0;
        if perms.first() == Some(&b'r') {
            prot |= 1;
        }
        if perms.get(1) == Some(&b'w') {
            prot |= 2;
        }
        if perms.get(2) == Some(&b'x') {
            prot |= 4;
        }
        maps[n] = (s, e, prot);
        n += 1;
    }
    let tmp = VDSO_PARK + 0x40_0000;
    for &(s, e, prot) in &maps[..n] {
        let len = (e - s) as usize;
        if prot & 1 == 0 || len > 0x40_0000 {
            continue;
        }
        // SAFETY: a fresh anonymous mapping at an unused place in our
        // window.
        let m = unsafe {
            syscall6(
                nr::MMAP,
                tmp as usize,
                len,
                3,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                usize::MAX,
                0,
            )
        };
        if m < 0 {
            return;
        }
        // SAFETY: both ranges are `len` bytes, mapped, and disjoint.
        unsafe { sys::memcpy(tmp as *mut u8, s as *const u8, len) };
        // SAFETY: mprotect of the copy just made.
        unsafe { syscall6(nr::MPROTECT, tmp as usize, len, prot, 0, 0, 0) };
        // SAFETY: replaces the file mapping by an identical anonymous copy.
        unsafe { syscall6(nr::MREMAP, tmp as usize, len, len, 3, s as usize, 0) };
    }
}

fn own_specials() -> Specials {
    let text = read_maps();
    let mut out: Specials = [(0, 0); 3];
    for line in text.split(|&c| c == b'\n') {
        let idx = if line.ends_with(b"[vvar]") {
            0
        } else if line.ends_with(b"[vvar_vclock]") {
            1
        } else if line.ends_with(b"[vdso]") {
            2
        } else {
            continue;
        };
        let mut parts = line.split(|&c| c == b'-' || c == b' ');
        let s = parse_hex(parts.next().unwrap_or(b""));
        let e = parse_hex(parts.next().unwrap_or(b""));
        out[idx] = (s, e);
    }
    out
}

fn parse_hex(s: &[u8]) -> u64 {
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => die(b"cannot parse /proc/self/maps", 0),
        };
        v = (v << 4) | d as u64;
    }
    v
}

/// mremap a whole special mapping to `to`.
fn move_mapping(from: u64, len: u64, to: u64, what: &[u8]) {
    if from == to {
        return;
    }
    // SAFETY: mremap(from, len, len, MREMAP_MAYMOVE|MREMAP_FIXED, to) of a
    // whole mapping we own onto a range nothing else uses.
    check(
        unsafe {
            syscall6(
                nr::MREMAP,
                from as usize,
                len as usize,
                len as usize,
                3,
                to as usize,
                0,
            )
        },
        what,
    );
}

/// Park our vdso/vvar in the window, drop everything outside the window,
/// then put vdso/vvar where the image had them.
fn place_specials(img: &Image, own: &Specials) {
    let mut want: Specials = [(0, 0); 3];
    for r in img.regions() {
        let i = match r.kind {
            RK_VVAR => 0,
            RK_VVAR_VCLOCK => 1,
            RK_VDSO => 2,
            _ => continue,
        };
        want[i] = (r.start, r.end);
    }
    for i in 0..3 {
        let (os, oe) = own[i];
        let (ws, we) = want[i];
        if (oe - os) != (we - ws) {
            die(
                b"this kernel's vdso/vvar layout differs from the image's (different kernel?)",
                0,
            );
        }
    }
    let mut park = VDSO_PARK;
    let mut parked: [u64; 3] = [0; 3];
    for i in 0..3 {
        let (os, oe) = own[i];
        if oe > os {
            move_mapping(os, oe - os, park, b"cannot park the vdso/vvar");
            parked[i] = park;
            park += oe - os;
        }
    }
    // Drop everything below and above the window: the kernel's stack,
    // auxv and anything else exec left behind.
    // SAFETY: nothing we use lives outside the window any more.
    check(
        unsafe { syscall6(nr::MUNMAP, 0, WINDOW_START as usize, 0, 0, 0, 0) },
        b"cannot unmap below the window",
    );
    let top = 0x7fff_ffff_f000u64;
    let hi = WINDOW_START + WINDOW_SIZE;
    // SAFETY: as above.
    check(
        unsafe { syscall6(nr::MUNMAP, hi as usize, (top - hi) as usize, 0, 0, 0, 0) },
        b"cannot unmap above the window",
    );
    for i in 0..3 {
        let (ws, we) = want[i];
        if we > ws {
            move_mapping(
                parked[i],
                we - ws,
                ws,
                b"cannot move the vdso/vvar to the image's address",
            );
        }
    }
}

fn prot_bits(p: u32) -> usize {
    let mut v = 0;
    if p & PROT_R != 0 {
        v |= 1;
    }
    if p & PROT_W != 0 {
        v |= 2;
    }
    if p & PROT_X != 0 {
        v |= 4;
    }
    v
}

const MAP_SHARED: usize = 0x01;
const MAP_PRIVATE: usize = 0x02;
const MAP_FIXED: usize = 0x10;
const MAP_ANONYMOUS: usize = 0x20;
const MAP_GROWSDOWN: usize = 0x100;
const MAP_NORESERVE: usize = 0x4000;

/// Map every region and fill its pages.
fn map_regions(img: &Image, fd: i32, consume: bool) {
    let runs = img.runs();
    for r in img.regions() {
        let len = (r.end - r.start) as usize;
        let has_data = r.n_runs > 0;
        let prot = prot_bits(r.prot);
        let map_prot = if has_data { prot | 3 } else { prot };
        match r.kind {
            RK_ANON | RK_ANON_SHARED => {
                let share = if r.kind == RK_ANON {
                    MAP_PRIVATE
                } else {
                    MAP_SHARED
                };
                let grows = if r.flags & RF_GROWSDOWN != 0 {
                    MAP_GROWSDOWN
                } else {
                    0
                };
                // SAFETY: a fixed anonymous mapping in the emptied address
                // space, at an address the image had.
                check(
                    unsafe {
                        syscall6(
                            nr::MMAP,
                            r.start as usize,
                            len,
                            map_prot,
                            share | MAP_ANONYMOUS | MAP_FIXED | grows,
                            usize::MAX,
                            0,
                        )
                    },
                    b"cannot map an anonymous region",
                );
            }
            RK_FILE_PRIVATE | RK_FILE_SHARED => {
                let path = img.cstr(r.path);
                let shared = r.kind == RK_FILE_SHARED;
                let oflags = if shared && r.prot & PROT_W != 0 { 2 } else { 0 } | 0o2000000;
                // SAFETY: open(path, flags) with a NUL-terminated path.
                let ffd = unsafe { syscall6(nr::OPEN, path, oflags, 0, 0, 0, 0) };
                if ffd < 0 {
                    die(b"cannot open a file the image maps (moved or deleted since the checkpoint?)", ffd);
                }
                let share = if shared { MAP_SHARED } else { MAP_PRIVATE };
                // SAFETY: fixed file mapping at an address the image had.
                let m = unsafe {
                    syscall6(
                        nr::MMAP,
                        r.start as usize,
                        len,
                        map_prot,
                        share | MAP_FIXED,
                        ffd as usize,
                        r.file_off as usize,
                    )
                };
                // SAFETY: closing the fd we opened (the mapping keeps the file).
                unsafe { syscall6(nr::CLOSE, ffd as usize, 0, 0, 0, 0, 0) };
                check(m, b"cannot map a file region");
            }
            _ => continue,
        }
        let first = r.first_run as usize;
        let n = r.n_runs as usize;
        if first.checked_add(n).is_none_or(|e| e > runs.len()) {
            die(b"region runs out of bounds", 0);
        }
        for run in &runs[first..first + n] {
            let addr = r.start + run.start_page * PAGE_SIZE;
            let bytes = run.n_pages * PAGE_SIZE;
            if run
                .start_page
                .checked_add(run.n_pages)
                .is_none_or(|e| e * PAGE_SIZE > r.end - r.start)
            {
                die(b"page run outside its region", 0);
            }
            // With `consume`, in slices, each given back once in place: a
            // run may be the whole heap.
            let slice = if consume { CONSUME_SLICE } else { bytes };
            let mut done = 0;
            while done < bytes {
                let n = slice.min(bytes - done);
                // SAFETY: `addr+done..addr+done+n` lies inside the region
                // just mapped writable (the run was checked against it).
                let read = unsafe {
                    sys::pread_full(fd, (addr + done) as usize, n as usize, run.data_off + done)
                };
                if let Err(e) = read {
                    die(b"cannot read page data (truncated image?)", e);
                }
                if consume {
                    // SAFETY: fallocate(fd, PUNCH_HOLE | KEEP_SIZE, off,
                    // len) on the image memfd frees pages already copied
                    // into place; nothing reads them again. A failure only
                    // costs memory, so it is ignored.
                    unsafe {
                        syscall6(
                            nr::FALLOCATE,
                            fd as usize,
                            FALLOC_PUNCH_HOLE_KEEP_SIZE,
                            (run.data_off + done) as usize,
                            n as usize,
                            0,
                            0,
                        )
                    };
                }
                done += n;
            }
        }
        if map_prot != prot {
            // SAFETY: mprotect of the region just mapped.
            check(
                unsafe { syscall6(nr::MPROTECT, r.start as usize, len, prot, 0, 0, 0) },
                b"cannot set region protection",
            );
        }
    }
}

/// How much image data `consume` copies before giving it back.
const CONSUME_SLICE: u64 = 32 << 20;

/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` of <linux/falloc.h>.
const FALLOC_PUNCH_HOLE_KEEP_SIZE: usize = 0x02 | 0x01;

/// mm fields, auxv and the executable link.
fn set_mm(img: &Image) {
    let m = img.mm();
    let auxv_len = m.auxv_len.min(core::mem::size_of_val(&m.auxv) as u64);
    let mut map = m.prctl_map();
    map.auxv = m.auxv.as_ptr() as u64;
    map.auxv_size = auxv_len as u32;
    let exe = img.cstr(img.header().exe);
    // SAFETY: open(exe, O_RDONLY|O_CLOEXEC).
    let efd = unsafe { syscall6(nr::OPEN, exe, 0o2000000, 0, 0, 0, 0) };
    if efd >= 0 {
        map.exe_fd = efd as u32;
    }
    let call = |map: &PrctlMmMap| {
        // SAFETY: prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof map, 0).
        unsafe {
            syscall6(
                nr::PRCTL,
                35,
                14,
                map as *const PrctlMmMap as usize,
                core::mem::size_of::<PrctlMmMap>(),
                0,
                0,
            )
        }
    };
    let mut r = call(&map);
    if r < 0 && map.exe_fd != u32::MAX {
        // Changing the exe link needs privileges; keep ours then.
        map.exe_fd = u32::MAX;
        r = call(&map);
    }
    if efd >= 0 {
        // SAFETY: closing our fd.
        unsafe { syscall6(nr::CLOSE, efd as usize, 0, 0, 0, 0, 0) };
    }
    check(r, b"prctl(PR_SET_MM_MAP) refused the image's mm fields");
}

/// Robust list, rseq, signal actions, timers, FD_CLOEXEC, image fd.
fn set_kernel_state(img: &Image, fd: i32) {
    let rec = img.record();
    if rec.robust_list != 0 {
        // SAFETY: set_robust_list(head, len) of restored memory.
        check(
            unsafe {
                syscall6(
                    nr::SET_ROBUST_LIST,
                    rec.robust_list as usize,
                    rec.robust_len as usize,
                    0,
                    0,
                    0,
                    0,
                )
            },
            b"cannot set the robust futex list",
        );
    }
    if rec.rseq_addr != 0 {
        // SAFETY: rseq(area, len, 0, sig): the area is restored memory
        // (glibc's TLS), registered exactly as glibc had it.
        let r = unsafe {
            syscall6(
                nr::RSEQ,
                rec.rseq_addr as usize,
                rec.rseq_len as usize,
                0,
                rec.rseq_sig as usize,
                0,
                0,
            )
        };
        check(r, b"cannot re-register rseq");
    }
    for (i, a) in rec.sigactions.iter().enumerate() {
        let sig = i + 1;
        if sig == 9 || sig == 19 {
            continue;
        }
        // SAFETY: rt_sigaction(sig, &act, NULL, 8) with the kernel layout.
        let r = unsafe {
            syscall6(
                nr::RT_SIGACTION,
                sig,
                a as *const KSigaction as usize,
                0,
                8,
                0,
                0,
            )
        };
        check(r, b"cannot restore a signal action");
    }
    for (which, t) in rec.itimers.iter().enumerate() {
        let stopped = t.value_sec == 0 && t.value_usec == 0;
        if stopped && t.interval_sec == 0 && t.interval_usec == 0 {
            continue;
        }
        // A periodic timer that expired while the freeze handler blocked
        // its signal reads as 0 until re-armed: fire it at once, as the
        // pending signal would have.
        let (vs, vu) = if stopped {
            (0, 1)
        } else {
            (t.value_sec, t.value_usec)
        };
        let v: [i64; 4] = [t.interval_sec, t.interval_usec, vs, vu];
        // SAFETY: setitimer(which, &v, NULL); `v` is a struct itimerval.
        check(
            unsafe { syscall6(nr::SETITIMER, which, v.as_ptr() as usize, 0, 0, 0, 0) },
            b"cannot restore an interval timer",
        );
    }
    for f in img.fds() {
        if f.cloexec != 0 {
            // SAFETY: fcntl(fd, F_SETFD, FD_CLOEXEC); errors ignored (the
            // fd may be absent if mosrun left it closed).
            unsafe { syscall6(nr::FCNTL, f.fd as usize, 2, 1, 0, 0, 0) };
        }
    }
    // SAFETY: closing the image fd; nothing reads it any more.
    unsafe { syscall6(nr::CLOSE, fd as usize, 0, 0, 0, 0, 0) };
}

/// Give back the scratch area and the vdso park: re-reserve them
/// `PROT_NONE`, as libmosix had the whole window.
fn finish_window() {
    let len = WINDOW_START + WINDOW_SIZE - VDSO_PARK;
    // SAFETY: replaces only our scratch and park areas (inside the
    // window), which are no longer used.
    check(
        unsafe {
            syscall6(
                nr::MMAP,
                VDSO_PARK as usize,
                len as usize,
                0,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                usize::MAX,
                0,
            )
        },
        b"cannot re-reserve the window",
    );
}

/// Set fs/gs base and jump into the freeze handler's saved context.
fn jump(rec: &FreezeRecord) -> ! {
    // SAFETY: arch_prctl(ARCH_SET_FS, base): the restored TLS block.
    check(
        unsafe { syscall6(nr::ARCH_PRCTL, 0x1002, rec.fs_base as usize, 0, 0, 0, 0) },
        b"cannot set fs base",
    );
    if rec.gs_base != 0 {
        // SAFETY: arch_prctl(ARCH_SET_GS, base).
        check(
            unsafe { syscall6(nr::ARCH_PRCTL, 0x1001, rec.gs_base as usize, 0, 0, 0, 0) },
            b"cannot set gs base",
        );
    }
    let jb = rec.jmpbuf;
    // SAFETY: the address space is the image's; `jb` is the context the
    // freeze handler saved in it, so loading it resumes the handler right
    // after its save call, with rax = 1 ("restored").
    unsafe {
        asm!(
            "mov rsp, [rdi + 48]",
            "mov rbx, [rdi]",
            "mov rbp, [rdi + 8]",
            "mov r12, [rdi + 16]",
            "mov r13, [rdi + 24]",
            "mov r14, [rdi + 32]",
            "mov r15, [rdi + 40]",
            "mov eax, 1",
            "jmp qword ptr [rdi + 56]",
            in("rdi") &jb as *const JmpBuf,
            options(noreturn),
        )
    }
}
