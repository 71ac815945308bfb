//! `[[callers]]` and `rate_limit.unknown_callers` (SPEC §10): names, shares and routes.

use std::path::Path;

use super::{ConfigError, Rate, RawCaller, RawRate};
use crate::rules::callers::{Caller, Callers, OTHER, UnknownCallers};
use crate::rules::route::Route;

/// The listed callers and each one's own rate (by the same index), checked against the
/// configured `routes`; `per_caller` fills in what an entry leaves out.
pub(super) fn validate(
    path: &Path,
    raw: &[RawCaller],
    unknown: &str,
    per_caller: Rate,
    routes: &[Route],
) -> Result<(Callers, Vec<Rate>), ConfigError> {
    let unknown = match unknown {
        "allow" => UnknownCallers::Allow,
        "deny" => UnknownCallers::Deny,
        _ => {
            return Err(ConfigError::at(
                path,
                "rate_limit.unknown_callers",
                "must be \"allow\" or \"deny\"",
            ));
        }
    };
    if unknown == UnknownCallers::Deny && raw.is_empty() {
        return Err(ConfigError::at(
            path,
            "rate_limit.unknown_callers",
            "is \"deny\" but no [[callers]] are listed, so every caller would be refused",
        ));
    }
    let mut listed: Vec<Caller> = Vec::with_capacity(raw.len());
    let mut rates = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let key = |field: &str| format!("callers[{i}].{field}");
        check_name(path, &key("name"), &entry.name)?;
        if let Some(earlier) = listed.iter().position(|c| *c.name == *entry.name) {
            return Err(ConfigError::at(
                path,
                &key("name"),
                format!("duplicates callers[{earlier}].name"),
            ));
        }
        let rate = RawRate {
            per_second: entry.per_second.unwrap_or(per_caller.per_second),
            burst: entry.burst.unwrap_or(per_caller.burst),
        }
        .validate(path, &format!("callers[{i}]"))?;
        let allowed = match &entry.routes {
            None => None,
            Some(paths) => Some(route_indices(path, &key("routes"), paths, routes)?),
        };
        listed.push(Caller {
            name: entry.name.as_str().into(),
            routes: allowed,
        });
        rates.push(rate);
    }
    Ok((Callers::new(listed, unknown), rates))
}

fn check_name(path: &Path, key: &str, name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters (it could never name a caller)"
    } else if name == OTHER {
        "\"other\" is the metric label of every caller that is not listed; choose another name"
    } else {
        return Ok(());
    };
    Err(ConfigError::at(path, key, reason))
}

/// The indices of every configured route whose path is one of `paths`.
fn route_indices(
    path: &Path,
    key: &str,
    paths: &[String],
    routes: &[Route],
) -> Result<Vec<usize>, ConfigError> {
    if paths.is_empty() {
        return Err(ConfigError::at(
            path,
            key,
            "must list at least one configured path (leave it out to allow every route)",
        ));
    }
    let mut indices = Vec::new();
    for (j, wanted) in paths.iter().enumerate() {
        let before = indices.len();
        indices.extend(
            routes
                .iter()
                .enumerate()
                .filter(|(_, route)| *route.path == **wanted)
                .map(|(index, _)| index),
        );
        if indices.len() == before {
            return Err(ConfigError::at(
                path,
                &format!("{key}[{j}]"),
                "is not the path of a configured route ([[routes]])",
            ));
        }
    }
    indices.sort_unstable();
    indices.dedup();
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::rules::callers::{Refusal, UnknownCallers};

    const BASE: &str = "[upstream]\nbase_url = \"https://kwikid.example\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(std::path::Path::new("gw.toml"), &format!("{BASE}{extra}"))
            .map_err(|e| e.to_string())
    }

    /// Guards against an entry's share, its routes or the default share being read wrong.
    #[test]
    fn callers_get_their_own_share_and_routes() {
        let c = parse(
            "[rate_limit]\nper_caller = { per_second = 5, burst = 10 }\nunknown_callers = \"deny\"\n\
             [[routes]]\nmethod = \"POST\"\npath = \"/a\"\n[[routes]]\nmethod = \"PUT\"\npath = \"/a\"\n\
             [[routes]]\nmethod = \"POST\"\npath = \"/b\"\n\
             [[callers]]\nname = \"orders-svc\"\nper_second = 0.5\nroutes = [\"/a\"]\n\
             [[callers]]\nname = \"10.1.2.3\"\nburst = 2\n",
        )
        .unwrap();
        assert_eq!(c.callers.unknown(), UnknownCallers::Deny);
        assert_eq!(c.callers.find("orders-svc"), Some(0));
        assert_eq!(c.callers.listed()[0].routes, Some(vec![0, 1]));
        assert_eq!(c.callers.admits(Some(0), 2), Err(Refusal::RouteNotAllowed));
        assert_eq!(c.callers.listed()[1].routes, None);
        let rates: Vec<_> = c
            .rate_limit
            .callers
            .iter()
            .map(|r| (r.per_second, r.burst))
            .collect();
        assert_eq!(rates, [(0.5, 10), (5.0, 2)]);
        let none = parse("").unwrap();
        assert!(none.callers.admits_everyone());
        assert!(none.rate_limit.callers.is_empty());
    }

    /// Guards against configs that cannot mean what their author meant passing silently; each
    /// error is one line naming the key.
    #[test]
    fn bad_callers_name_the_key() {
        for (extra, expected) in [
            (
                "[[callers]]\nname = \"a\"\n[[callers]]\nname = \"a\"\n",
                "callers[1].name: duplicates callers[0].name",
            ),
            (
                "[[callers]]\nname = \"a\"\nroutes = [\"/verification/v2/digilocker/other\"]\n",
                "callers[0].routes[0]: is not the path of a configured route",
            ),
            (
                "[[callers]]\nname = \"a\"\nroutes = []\n",
                "callers[0].routes: must list at least one",
            ),
            (
                "[[callers]]\nname = \"a\"\n[[callers]]\nname = \"b\"\nper_second = 0\n",
                "callers[1].per_second: must be a number above 0",
            ),
            (
                "[[callers]]\nname = \"a\"\nburst = 0\n",
                "callers[0].burst: must be at least 1",
            ),
            (
                "[[callers]]\nname = \"\"\n",
                "callers[0].name: must not be empty",
            ),
            (
                "[[callers]]\nname = \"other\"\n",
                "callers[0].name: \"other\" is the metric label",
            ),
            (
                "[[callers]]\nname = \"a\\tb\"\n",
                "callers[0].name: must not contain control characters",
            ),
            (
                "[rate_limit]\nunknown_callers = \"maybe\"\n",
                "rate_limit.unknown_callers: must be \"allow\" or \"deny\"",
            ),
            (
                "[rate_limit]\nunknown_callers = \"deny\"\n",
                "rate_limit.unknown_callers: is \"deny\" but no [[callers]] are listed",
            ),
            (
                "[[callers]]\nname = \"a\"\nrate = 5\n",
                "callers[0].rate (line 5): unknown field",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
