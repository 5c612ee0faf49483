//! Unit tests of governance over a real store (no network).
