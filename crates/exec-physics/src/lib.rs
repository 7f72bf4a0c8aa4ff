//! exec-physics (work in progress).
