//! worker (work in progress).
