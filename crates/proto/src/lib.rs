//! Client protocol (in progress).
