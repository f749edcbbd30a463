//! User scripts (in progress).
