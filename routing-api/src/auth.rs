//! UAA token validation (B.7). (in progress)
