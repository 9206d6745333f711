//! The proxy: listener, request pipeline, headers, router errors, backend connections.

pub mod backend;
