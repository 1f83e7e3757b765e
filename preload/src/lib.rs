//! libmosix.so: loaded into every managed process by `mosrun` through
//! `LD_PRELOAD`. It will hold the freeze handler and the body-mode
//! interposer (DESIGN.md sections 3 and 4); the engine issue builds it.
