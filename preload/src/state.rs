//! Static storage shared by the constructor and the freeze handler.

use core::cell::UnsafeCell;

/// A static cell. Sound only because libmosix manages single-threaded
/// processes: the constructor runs before `main`, and the freeze handler
/// runs with every signal blocked, so the two never overlap and nothing
/// else touches the cell.
pub(crate) struct Global<T>(UnsafeCell<T>);

// SAFETY: see the type's doc: accesses never overlap (single-threaded
// process, handler with all signals blocked).
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// A cell holding `value`.
    pub(crate) const fn new(value: T) -> Global<T> {
        Global(UnsafeCell::new(value))
    }

    /// Raw pointer to the contents.
    pub(crate) fn get(&self) -> *mut T {
        self.0.get()
    }
}
