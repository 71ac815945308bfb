//! The access log: one JSON line per request on stdout, written by one thread so the request
//! path never waits for the terminal.
//!
//! - [`record`]: the fields of one request and their rendering; the scrubbing lives there
//!   and only there.
//! - [`writer`]: the batching writer thread.

mod record;
mod writer;

pub(crate) use record::scrub;
pub use record::{AccessRecord, render};
pub use writer::AccessLog;
