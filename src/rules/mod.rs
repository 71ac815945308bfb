//! The gateway's rules as pure functions: no I/O, no sockets, no clocks. The proxy's steps
//! apply them; the config validates against them.

pub mod body;
pub mod callers;
pub mod headers;
pub mod policy;
pub mod route;
pub mod trusted;
