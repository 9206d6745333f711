//! SQL storage (B.8). (in progress)
