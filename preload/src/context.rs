//! The resume context: a `setjmp` of the freeze handler.
//!
//! `mosix_save_context(buf)` stores rbx, rbp, r12-r15, the stack pointer
//! after its return and its return address in `buf`, and returns 0. The
//! restorer, having rebuilt the address space, loads these registers and
//! jumps to the saved address with rax = 1, which looks like a second
//! return of the same call.

use crate::layout::JmpBuf;

core::arch::global_asm!(
    ".globl mosix_save_context",
    ".hidden mosix_save_context",
    ".type mosix_save_context,@function",
    "mosix_save_context:",
    "mov [rdi + 0], rbx",
    "mov [rdi + 8], rbp",
    "mov [rdi + 16], r12",
    "mov [rdi + 24], r13",
    "mov [rdi + 32], r14",
    "mov [rdi + 40], r15",
    "lea rdx, [rsp + 8]",
    "mov [rdi + 48], rdx",
    "mov rdx, [rsp]",
    "mov [rdi + 56], rdx",
    "xor eax, eax",
    "ret",
    ".size mosix_save_context, . - mosix_save_context",
);

unsafe extern "C" {
    /// Save the resume context; 0 now, 1 when resumed by the restorer.
    pub(crate) fn mosix_save_context(buf: *mut JmpBuf) -> u64;
}

const _: () = {
    assert!(core::mem::offset_of!(JmpBuf, rbx) == 0);
    assert!(core::mem::offset_of!(JmpBuf, r15) == 40);
    assert!(core::mem::offset_of!(JmpBuf, rsp) == 48);
    assert!(core::mem::offset_of!(JmpBuf, rip) == 56);
};
