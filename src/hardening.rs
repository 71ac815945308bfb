//! Process hardening, applied at start before the token is read: no core dumps, and not
//! dumpable.
//!
//! - **Core-file limit 0** (soft and hard, `setrlimit(RLIMIT_CORE)`): a crash under
//!   systemd-coredump, or a container runtime with a core pattern, would otherwise write the
//!   process memory, the token included, to disk.
//! - **Not dumpable** (`prctl(PR_SET_DUMPABLE, 0)`, Linux): `/proc/<pid>/environ`, `/proc/<pid>/mem`
//!   and the rest of `/proc/<pid>` become root's, and `ptrace` needs `CAP_SYS_PTRACE`, so other
//!   processes of the gateway's own user can no longer read its memory or its environment (the
//!   token, with `[token] env`). It also keeps the kernel from dumping the process.
//!
//! Both go through rustix's safe wrappers. A step the kernel refuses (a seccomp filter, say)
//! does not stop the gateway: [`harden`] returns it, and the caller reports it once logging is
//! up ([`warn`]), one warning per refused step.

use std::fmt;
use std::io;

/// One hardening step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `RLIMIT_CORE` soft and hard limits set to 0.
    CoreLimit,
    /// `PR_SET_DUMPABLE` 0.
    NotDumpable,
}

impl Step {
    /// The step's name in the warning's `step` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::CoreLimit => "core_limit",
            Self::NotDumpable => "not_dumpable",
        }
    }

    /// What is left open when the step is refused: the warning's message.
    pub fn refused(self) -> &'static str {
        match self {
            Self::CoreLimit => {
                "cannot set the core-file limit to 0: a crash may write the token to a core file"
            }
            Self::NotDumpable => {
                "cannot mark the process not dumpable (PR_SET_DUMPABLE 0): processes of the same user may read its memory and environment"
            }
        }
    }
}

/// A step the kernel refused, and its error.
#[derive(Debug)]
pub struct Refused {
    pub step: Step,
    pub error: io::Error,
}

impl fmt::Display for Refused {
    /// One line: what is left open, then the error (`step (error)`); never the token, which is
    /// not read yet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.step.refused(), self.error)
    }
}

/// Applies every step; returns those the kernel refused (none, normally). Call it once, before
/// the token is read.
pub fn harden() -> Vec<Refused> {
    let mut refused = Vec::new();
    if let Err(error) = no_core_files() {
        refused.push(Refused {
            step: Step::CoreLimit,
            error,
        });
    }
    if let Err(error) = not_dumpable() {
        refused.push(Refused {
            step: Step::NotDumpable,
            error,
        });
    }
    refused
}

/// Logs one warning per refused step through `tracing` (call it once the subscriber is
/// installed: before that the warnings would go nowhere).
pub fn warn(refused: &[Refused]) {
    for r in refused {
        tracing::warn!(step = r.step.name(), error = %r.error, "{}", r.step.refused());
    }
}

fn no_core_files() -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, zero).map_err(io::Error::from)
}

#[cfg(target_os = "linux")]
fn not_dumpable() -> io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn not_dumpable() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "PR_SET_DUMPABLE is Linux's",
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer for a test subscriber that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn refused(step: Step) -> Refused {
        Refused {
            step,
            error: io::Error::from_raw_os_error(1),
        }
    }

    /// The warnings are the only trace of a refused step: each must be written, once, at
    /// `warn`, naming the step.
    #[test]
    fn each_refused_step_is_one_warning_naming_it() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            warn(&[refused(Step::CoreLimit), refused(Step::NotDumpable)]);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["step"], "core_limit");
        assert_eq!(
            lines[0]["message"],
            "cannot set the core-file limit to 0: a crash may write the token to a core file"
        );
        assert!(
            lines[0]["error"]
                .as_str()
                .unwrap()
                .contains("Operation not permitted"),
            "{text}"
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["step"], "not_dumpable");
        assert!(
            lines[1]["message"]
                .as_str()
                .unwrap()
                .starts_with("cannot mark the process not dumpable (PR_SET_DUMPABLE 0)"),
            "{text}"
        );
    }

    #[test]
    fn nothing_refused_is_nothing_written() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || warn(&[]));
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_one_line_form_names_the_step_and_the_error() {
        let line = refused(Step::NotDumpable).to_string();
        assert!(
            line.starts_with("cannot mark the process not dumpable"),
            "{line}"
        );
        assert!(
            line.ends_with("(Operation not permitted (os error 1))"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
