//! The process's own metrics, under the names every Prometheus client library uses
//! (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>), read at
//! each scrape by `metrics-process` (client_golang's process collector, in Rust). A value the
//! platform cannot give is left out rather than shown as 0.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Registered on the root registry, so its names carry no `kwikid_gateway_` prefix.
#[derive(Debug)]
pub(super) struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = metrics_process::collector::collect();
        if let Some(seconds) = now.cpu_seconds_total {
            let metric = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds";
            let unit = Unit::Seconds;
            let m = encoder.encode_descriptor(
                "process_cpu",
                help,
                Some(&unit),
                metric.metric_type(),
            )?;
            metric.encode(m)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                now.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                now.virtual_memory_bytes,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(Unit::Seconds),
                now.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                now.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                now.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                now.threads,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let metric = ConstGauge::new(value);
            let m = encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            metric.encode(m)?;
        }
        Ok(())
    }
}
