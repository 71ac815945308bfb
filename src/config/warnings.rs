//! A config that runs, but most likely not as meant: what `check` prints and the gateway logs
//! at start as warnings (SPEC §2, §7). None of these stops the gateway: each can be what an
//! operator wants, so each says what it does and lets them decide.

use ipnet::IpNet;

use super::{Config, Rate};

impl Config {
    /// One sentence per finding, each naming its keys; empty for a config without surprises.
    /// No value here can hold a secret (addresses, rates and durations only).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in &self.listen.allow_cidrs {
            if net.prefix_len() == 0 {
                out.push(format!(
                    "listen.allow_cidrs: {net} trusts every {} peer: anyone who can reach the \
                     port gets KwikID calls made with the token",
                    family(net)
                ));
            }
        }
        let global = self.rate_limit.global;
        if above(self.rate_limit.per_caller, global) {
            out.push(format!(
                "rate_limit.per_caller: {} is above rate_limit.global's {}: one caller can spend \
                 the whole account",
                describe(self.rate_limit.per_caller),
                describe(global)
            ));
        }
        // A caller without a share of its own takes per_caller's, warned about above.
        for (caller, own) in self.callers.listed().iter().zip(&self.rate_limit.callers) {
            if !same(*own, self.rate_limit.per_caller) && above(*own, global) {
                out.push(format!(
                    "callers ({}): {} is above rate_limit.global's {}: this caller can spend \
                     the whole account",
                    caller.name,
                    describe(*own),
                    describe(global)
                ));
            }
        }
        let (max_wait, timeout) = (self.rate_limit.max_wait, self.upstream.request_timeout);
        if max_wait >= timeout {
            out.push(format!(
                "rate_limit.max_wait: {} is not below upstream.request_timeout ({}): a request \
                 that waits that long for a permit times out before it is sent",
                humantime::format_duration(max_wait),
                humantime::format_duration(timeout)
            ));
        }
        out
    }
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// A share that refills faster, or holds a bigger burst, than the account's ceiling.
fn above(share: Rate, ceiling: Rate) -> bool {
    share.per_second > ceiling.per_second || share.burst > ceiling.burst
}

fn same(a: Rate, b: Rate) -> bool {
    a.per_second == b.per_second && a.burst == b.burst
}

fn describe(rate: Rate) -> String {
    format!("{}/s (burst {})", rate.per_second, rate.burst)
}

#[cfg(test)]
mod tests {
    use crate::proxy::tests::config;

    #[test]
    fn the_shipped_defaults_warn_about_nothing() {
        assert_eq!(config("").warnings(), Vec::<String>::new());
    }

    #[test]
    fn each_surprise_is_one_sentence_naming_its_keys() {
        let c = config(
            "[listen]\nallow_cidrs = [\"0.0.0.0/0\", \"::/0\", \"10.0.0.0/8\"]\n\
             [rate_limit]\nmax_wait = \"10s\"\n\
             global = { per_second = 20, burst = 40 }\n\
             per_caller = { per_second = 30, burst = 10 }\n\
             [[callers]]\nname = \"orders-svc\"\nper_second = 5\nburst = 100\n\
             [[callers]]\nname = \"quiet-svc\"\n",
        );
        let warnings = c.warnings();
        let starts: Vec<&str> = warnings
            .iter()
            .map(|w| w.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            starts,
            [
                "listen.allow_cidrs",
                "listen.allow_cidrs",
                "rate_limit.per_caller",
                "callers (orders-svc)",
                "rate_limit.max_wait",
            ],
            "{warnings:#?}"
        );
        assert!(warnings[0].contains("0.0.0.0/0 trusts every IPv4 peer"));
        assert!(warnings[1].contains("::/0 trusts every IPv6 peer"));
        assert!(
            warnings[2].contains("30/s (burst 10) is above rate_limit.global's 20/s (burst 40)")
        );
        assert!(warnings[4].contains("10s is not below upstream.request_timeout (10s)"));
    }
}
