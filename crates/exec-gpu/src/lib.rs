//! exec-gpu (work in progress).
