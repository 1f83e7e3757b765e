//! Raw Linux x86-64 system calls (no libc) and the few memory functions the
//! compiler expects to exist.

use core::arch::asm;

/// System call numbers used by the restorer.
pub mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const OPEN: usize = 2;
    pub const CLOSE: usize = 3;
    pub const MMAP: usize = 9;
    pub const MPROTECT: usize = 10;
    pub const MUNMAP: usize = 11;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const PREAD64: usize = 17;
    pub const MREMAP: usize = 25;
    pub const SETITIMER: usize = 38;
    pub const FCNTL: usize = 72;
    pub const PRCTL: usize = 157;
    pub const ARCH_PRCTL: usize = 158;
    pub const GETPID: usize = 39;
    pub const KILL: usize = 62;
    pub const EXIT_GROUP: usize = 231;
    pub const SET_ROBUST_LIST: usize = 273;
    pub const RSEQ: usize = 334;
    pub const FALLOCATE: usize = 285;
}

/// A system call with up to six arguments; returns the raw result
/// (negative errno on failure).
///
/// # Safety
/// The caller must pass arguments valid for system call `n`.
#[inline(always)]
pub unsafe fn syscall6(
    n: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the `syscall` instruction clobbers only rax, rcx and r11,
    // declared here; the caller vouches for the arguments.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            in("r9") a6,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// write(2) of a whole buffer to `fd`, errors ignored (messages only).
pub fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reading `buf.len()` bytes.
        let n = unsafe {
            syscall6(
                nr::WRITE,
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            )
        };
        if n <= 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// End the process with `code`.
pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        unsafe { syscall6(nr::EXIT_GROUP, code as usize, 0, 0, 0, 0, 0) };
    }
}

/// pread(2) into `dst` until `len` bytes are read; the negative errno, or
/// -1 for a short file.
///
/// # Safety
/// `dst..dst+len` must be writable memory of this process.
pub unsafe fn pread_full(fd: i32, dst: usize, len: usize, off: u64) -> Result<(), isize> {
    let mut done = 0usize;
    while done < len {
        // SAFETY: the caller guarantees the destination is writable.
        let n = unsafe {
            syscall6(
                nr::PREAD64,
                fd as usize,
                dst + done,
                len - done,
                (off + done as u64) as usize,
                0,
                0,
            )
        };
        if n == -4 {
            continue; // EINTR
        }
        if n < 0 {
            return Err(n);
        }
        if n == 0 {
            return Err(-1);
        }
        done += n as usize;
    }
    Ok(())
}

// The compiler lowers copies and fills to these symbols; there is no libc.
// `rep movsb`/`rep stosb` keep it from turning the loops back into calls.

/// memcpy for the compiler.
///
/// # Safety
/// Standard memcpy contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees non-overlapping valid ranges of `n`
    // bytes; rep movsb copies forward.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// memmove for the compiler.
///
/// # Safety
/// Standard memmove contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: forward copy is correct when dst is below src or the
        // ranges do not overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: both ranges are valid for `n` bytes; copying backwards
        // handles the overlap.
        let b = unsafe { core::ptr::read_volatile(src.wrapping_add(i)) };
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(dst.wrapping_add(i), b) };
    }
    dst
}

/// memset for the compiler.
///
/// # Safety
/// Standard memset contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `n` writable bytes at `dst`.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// memcmp for the compiler.
///
/// # Safety
/// Standard memcmp contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: both ranges are valid for `n` bytes.
        let x = unsafe { core::ptr::read_volatile(a.wrapping_add(i)) };
        // SAFETY: as above.
        let y = unsafe { core::ptr::read_volatile(b.wrapping_add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// bcmp for the compiler.
///
/// # Safety
/// Standard bcmp contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
