//! locket (in progress)
