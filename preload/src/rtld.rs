//! ld.so's recursive locks across a restore.
//!
//! ld.so guards `dlopen`, `dlclose`, TLS set-up and its own tables with
//! recursive mutexes in `_rtld_global` (`_dl_load_lock`,
//! `_dl_load_write_lock`), which record their owner by thread id. A
//! process frozen while it holds one (inside `dlopen`, say in a library
//! constructor, or in the NSS modules a `getpwuid` loads) comes back with
//! a new thread id: after the TCB's tid is patched, its unlock fails
//! (not the owner) and its next lock waits forever for the old thread.
//! So after a restore every such mutex owned by the old id is handed to
//! the new one.
//!
//! The mutexes are found by shape, not by glibc-version offsets: within
//! `_rtld_global` (address and size from the dynamic symbol table, taken
//! in the constructor), an aligned `pthread_mutex_t` that is locked, has a
//! recursion count, is of the recursive kind and is owned by the old id.

use core::sync::atomic::{AtomicUsize, Ordering};

/// `_rtld_global`'s address and size (0: not found; nothing is patched).
static RTLD_GLOBAL: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

/// Its largest believable size: the scan never reads beyond this.
const MAX_SIZE: usize = 64 << 10;

/// `dladdr1` flag asking for the symbol table entry.
const RTLD_DL_SYMENT: i32 = 1;

/// Glibc's `PTHREAD_MUTEX_RECURSIVE_NP`, the kind of ld.so's locks.
const MUTEX_RECURSIVE: i32 = 1;

/// Find `_rtld_global` (constructor only).
pub(crate) fn locate() {
    // SAFETY: dlsym with a NUL-terminated name; NULL if absent.
    let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_rtld_global".as_ptr()) };
    if addr.is_null() {
        return;
    }
    // SAFETY: Dl_info is plain data that dladdr1 fills in.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let mut sym: *mut libc::c_void = core::ptr::null_mut();
    // SAFETY: `addr` is a symbol's address; dladdr1 writes `info` and a
    // pointer to the symbol's table entry into `sym`.
    let found = unsafe { libc::dladdr1(addr, &mut info, &mut sym, RTLD_DL_SYMENT) };
    if found == 0 || sym.is_null() {
        return;
    }
    // SAFETY: with RTLD_DL_SYMENT, `sym` points at the symbol's Elf64_Sym
    // in ld.so's mapped dynamic symbol table.
    let size = unsafe { (*sym.cast::<libc::Elf64_Sym>()).st_size } as usize;
    if size == 0 || size > MAX_SIZE {
        return;
    }
    RTLD_GLOBAL[0].store(addr as usize, Ordering::Relaxed);
    RTLD_GLOBAL[1].store(size, Ordering::Relaxed);
}

/// The fields of a `pthread_mutex_t` on x86-64 this module reads.
const LOCK: usize = 0;
const COUNT: usize = 4;
const OWNER: usize = 8;
const KIND: usize = 16;
/// `sizeof(pthread_mutex_t)`.
const MUTEX_SIZE: usize = 40;

/// Hand every ld.so lock owned by `old` to `new` (after a restore, in
/// the freeze handler). Returns how many were handed over.
pub(crate) fn hand_over_locks(old: i32, new: i32) -> usize {
    let base = RTLD_GLOBAL[0].load(Ordering::Relaxed);
    let size = RTLD_GLOBAL[1].load(Ordering::Relaxed);
    if base == 0 || old == new || old <= 0 {
        return 0;
    }
    // SAFETY: `_rtld_global` is ld.so's writable data of `size` bytes,
    // mapped for the life of the process; the only thread is in the
    // freeze handler, so nothing changes it meanwhile.
    let bytes = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size) };
    hand_over_in(bytes, base, old, new)
}

/// [`hand_over_locks`] on the memory `bytes` that lives at address
/// `base` (mutexes are 8-byte aligned in memory).
fn hand_over_in(bytes: &mut [u8], base: usize, old: i32, new: i32) -> usize {
    let field = |b: &[u8], at: usize| i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut handed = 0;
    let mut off = (8 - base % 8) % 8;
    while off + MUTEX_SIZE <= bytes.len() {
        let m = &mut bytes[off..off + MUTEX_SIZE];
        if field(m, OWNER) == old
            && field(m, LOCK) != 0
            && field(m, COUNT) > 0
            && field(m, KIND) & 0x7f == MUTEX_RECURSIVE
        {
            m[OWNER..OWNER + 4].copy_from_slice(&new.to_ne_bytes());
            handed += 1;
            off += MUTEX_SIZE;
        } else {
            off += 8;
        }
    }
    handed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutex(lock: i32, count: i32, owner: i32, kind: i32) -> [u8; MUTEX_SIZE] {
        let mut m = [0u8; MUTEX_SIZE];
        for (at, v) in [(LOCK, lock), (COUNT, count), (OWNER, owner), (KIND, kind)] {
            m[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        m
    }

    #[test]
    fn only_locked_recursive_mutexes_of_the_old_thread_change_hands() {
        let mut mem = vec![0u8; 8 * MUTEX_SIZE];
        let put = |mem: &mut Vec<u8>, i: usize, m: [u8; MUTEX_SIZE]| {
            mem[i * MUTEX_SIZE..(i + 1) * MUTEX_SIZE].copy_from_slice(&m)
        };
        put(&mut mem, 0, mutex(1, 1, 4242, MUTEX_RECURSIVE)); // held
        put(&mut mem, 2, mutex(1, 2, 4242, MUTEX_RECURSIVE)); // held twice
        put(&mut mem, 3, mutex(1, 1, 777, MUTEX_RECURSIVE)); // someone else's
        put(&mut mem, 4, mutex(0, 0, 4242, MUTEX_RECURSIVE)); // released
        put(&mut mem, 5, mutex(1, 1, 4242, 0)); // a normal mutex
        assert_eq!(hand_over_in(&mut mem, 0x1000, 4242, 99), 2);
        let owner = |mem: &Vec<u8>, i: usize| {
            let at = i * MUTEX_SIZE + OWNER;
            i32::from_ne_bytes(mem[at..at + 4].try_into().unwrap())
        };
        assert_eq!(
            [0, 2, 3, 4, 5].map(|i| owner(&mem, i)),
            [99, 99, 777, 4242, 4242]
        );
    }

    #[test]
    fn nothing_is_read_past_the_end_or_when_ids_are_equal() {
        let mut mem = vec![0xffu8; MUTEX_SIZE - 1];
        assert_eq!(hand_over_in(&mut mem, 0x1000, -1, 5), 0);
        let mut mem = mutex(1, 1, 7, MUTEX_RECURSIVE).to_vec();
        assert_eq!(hand_over_in(&mut mem, 0x1000, 7, 7), 1);
        assert_eq!(hand_over_locks(7, 7), 0);
    }

    #[test]
    fn ld_so_is_found_in_a_real_process() {
        locate();
        assert_ne!(RTLD_GLOBAL[0].load(Ordering::Relaxed), 0, "_rtld_global");
        assert!(RTLD_GLOBAL[1].load(Ordering::Relaxed) > MUTEX_SIZE);
    }
}
