//! Which exposition format a scraper gets, from its `Accept` header (RFC 9110 §12.5.1).
//!
//! Prometheus asks for OpenMetrics first (`application/openmetrics-text;…;q=…,
//! text/plain;version=0.0.4;q=…`) and gets it. A client that asks for `text/plain`, or for
//! anything (`*/*`, as `curl` does), gets the Prometheus text format (version 0.0.4), which
//! `promtool check metrics` reads. With no `Accept` at all, OpenMetrics.

use prometheus_client::registry::Registry;

/// An exposition format prometheus-client encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: counters typed without `_total`, units, `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Prometheus,
}

const OPENMETRICS: &str = "application/openmetrics-text";

impl Format {
    /// The format for a request's `Accept` value (`None`: no header). OpenMetrics when it is
    /// named and liked at least as much as `text/plain`; the Prometheus text format when
    /// `text/plain`, `text/*` or `*/*` is liked more; OpenMetrics when neither is acceptable.
    pub fn from_accept(accept: Option<&[u8]>) -> Self {
        let Some(accept) = accept else {
            return Self::OpenMetrics;
        };
        let accept = String::from_utf8_lossy(accept);
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            match media.as_str() {
                OPENMETRICS => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if text > openmetrics {
            Self::Prometheus
        } else {
            Self::OpenMetrics
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// `registry`'s metrics in this format.
    pub(super) fn encode(self, registry: &Registry) -> String {
        let mut text = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = match self {
            Self::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry),
            Self::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
            }
        };
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(accept: &str) -> Format {
        Format::from_accept(Some(accept.as_bytes()))
    }

    /// Guards against Prometheus (which names OpenMetrics first) getting the older format,
    /// and against `curl` (`*/*`) or a `text/plain` client getting one it cannot read.
    #[test]
    fn the_scraper_gets_the_format_it_prefers() {
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prometheus_3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(format(prometheus_2), Format::OpenMetrics);
        assert_eq!(format(prometheus_3), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::OpenMetrics);
        assert_eq!(format("*/*"), Format::Prometheus);
        assert_eq!(format("text/plain; version=0.0.4"), Format::Prometheus);
        assert_eq!(format("Text/Plain"), Format::Prometheus);
        assert_eq!(
            format("application/openmetrics-text; q=0.2, text/plain; q=0.9"),
            Format::Prometheus
        );
        assert_eq!(format("application/json"), Format::OpenMetrics);
        assert_eq!(format("text/plain;q=0"), Format::OpenMetrics);
        assert_eq!(format("text/plain;q=banana"), Format::Prometheus);
    }
}
