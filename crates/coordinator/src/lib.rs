//! coordinator (work in progress).
