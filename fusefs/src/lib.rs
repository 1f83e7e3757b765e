//! The view (DESIGN.md section 6): a FUSE file system on each remote node
//! that shows a home node's exported files, every operation forwarded over
//! the authenticated link to that home's `homed`.
//!
//! Not built yet: the view lands with its own issue. Until then a body can
//! only reach files by the same path on the node it runs on.
