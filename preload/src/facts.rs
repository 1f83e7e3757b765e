//! Home's facts of a body away from home ([`BodyInfo`]), in static
//! storage of their own, so that everything that asks "is this process a
//! body?" (the hooks in [`crate::body`] and [`crate::family`], and the
//! forwarded-call channel in [`crate::forward`] below them) reads one
//! place without depending on the modules that use it.
//!
//! The facts are written by the body's host after each hello and stored
//! by [`crate::body`] (in the freeze handler with every signal blocked,
//! or in the constructor); the program's single thread reads them.

use crate::layout::BodyInfo;
use crate::state::Global;

/// The facts; `away == 1` in a body away from home. Written only by
/// [`crate::body`].
pub(crate) static BODY: Global<BodyInfo> = Global::new(BodyInfo::at_home());

/// The facts, if this process is a body away from home.
pub(crate) fn away() -> Option<&'static BodyInfo> {
    // SAFETY: BODY changes only in the freeze handler, which cannot run
    // while the single thread is inside a hook that reads it.
    let b = unsafe { &*BODY.get() };
    (b.away == 1).then_some(b)
}

/// Whether this process is a body away from home.
pub(crate) fn is_away() -> bool {
    away().is_some()
}
