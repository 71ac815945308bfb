//! The subcommands, one file each.

pub(crate) mod check;
pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod run;

/// One worker per CPU this process may run on (its affinity and cgroup quota, not the
/// machine's count). On one CPU, the single-threaded scheduler: no work stealing and no
/// cross-thread wake-ups, which is measurably cheaper per request.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("kwikid-gateway: cannot start the runtime: {e}"))
        .ok()
}
