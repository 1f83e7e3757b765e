//! The few raw calls the command-line tools make themselves.

/// Lets a tool whose output goes into a closed pipe (`mosps | head`) end
/// quietly, killed by SIGPIPE like a C tool, instead of panicking in
/// `println!` (the Rust runtime ignores SIGPIPE). Call first thing in
/// `main`. A program `mosrun` execs gets the default disposition either way.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no code of ours ever runs in
    // signal context; this runs at the start of main, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
