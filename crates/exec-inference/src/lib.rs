//! exec-inference (work in progress).
