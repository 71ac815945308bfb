//! Named callers (SPEC §10): which callers are listed in `[[callers]]`, the routes each may
//! use, and what a caller that is not listed gets (`rate_limit.unknown_callers`).
//!
//! A caller is named as the rest of the gateway names it: its mTLS name, else its
//! `caller_header` value, else its peer IP. Names are compared exactly. Each listed caller's
//! own rate lives with the rate limits (`config::RateLimit::callers`), by the same index.

use std::collections::HashMap;
use std::sync::Arc;

/// The `caller` metric label of every caller that is not listed; no listed caller may take it.
pub const OTHER: &str = "other";

/// What a caller that is not listed gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownCallers {
    /// Served with `rate_limit.per_caller`'s share (the default).
    #[default]
    Allow,
    /// `403 caller_not_allowed`, before its body is read.
    Deny,
}

/// One `[[callers]]` entry, as the steps use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// As identified; also its `caller` metric label.
    pub name: Arc<str>,
    /// Indices of the configured routes it may use (every route with a listed path);
    /// `None`: every route.
    pub routes: Option<Vec<usize>>,
}

/// Why a caller may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not listed, and `unknown_callers = "deny"`.
    NotListed,
    /// Listed, on a route outside its `routes`.
    RouteNotAllowed,
}

/// The listed callers, found by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callers {
    listed: Vec<Caller>,
    by_name: HashMap<Arc<str>, usize>,
    unknown: UnknownCallers,
}

impl Callers {
    /// `listed` in config order; their names are distinct (the config checks it).
    pub fn new(listed: Vec<Caller>, unknown: UnknownCallers) -> Self {
        let by_name = listed
            .iter()
            .enumerate()
            .map(|(index, caller)| (caller.name.clone(), index))
            .collect();
        Self {
            listed,
            by_name,
            unknown,
        }
    }

    /// The caller's index in `[[callers]]`, if it is listed.
    pub fn find(&self, name: &str) -> Option<usize> {
        if self.listed.is_empty() {
            return None;
        }
        self.by_name.get(name).copied()
    }

    /// The listed callers, in config order.
    pub fn listed(&self) -> &[Caller] {
        &self.listed
    }

    /// The name of the listed caller at `index`.
    pub fn name(&self, index: usize) -> Option<&Arc<str>> {
        self.listed.get(index).map(|caller| &caller.name)
    }

    pub fn unknown(&self) -> UnknownCallers {
        self.unknown
    }

    /// Whether every caller may use every route: nothing for the callers step to check.
    pub fn admits_everyone(&self) -> bool {
        self.unknown == UnknownCallers::Allow && self.listed.iter().all(|c| c.routes.is_none())
    }

    /// Whether the caller (`listed`: its index, if listed) may use the route at `route`.
    pub fn admits(&self, listed: Option<usize>, route: usize) -> Result<(), Refusal> {
        match listed.and_then(|index| self.listed.get(index)) {
            None if self.unknown == UnknownCallers::Deny => Err(Refusal::NotListed),
            None => Ok(()),
            Some(Caller {
                routes: Some(routes),
                ..
            }) if !routes.contains(&route) => Err(Refusal::RouteNotAllowed),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers(unknown: UnknownCallers) -> Callers {
        Callers::new(
            vec![
                Caller {
                    name: "orders-svc".into(),
                    routes: Some(vec![0]),
                },
                Caller {
                    name: "10.1.2.3".into(),
                    routes: None,
                },
            ],
            unknown,
        )
    }

    /// Guards against a listed caller being missed, or names matching loosely.
    #[test]
    fn listed_callers_are_found_by_exact_name() {
        let c = callers(UnknownCallers::Allow);
        assert_eq!(c.find("orders-svc"), Some(0));
        assert_eq!(c.find("10.1.2.3"), Some(1));
        assert_eq!(c.find("Orders-svc"), None);
        assert_eq!(c.find("orders-svc "), None);
        assert_eq!(c.name(0).map(|n| &**n), Some("orders-svc"));
        assert_eq!(Callers::default().find("orders-svc"), None);
    }

    /// Guards against a listed caller reaching a route outside its list, and against a caller
    /// without a list being held to one.
    #[test]
    fn a_listed_caller_keeps_to_its_routes() {
        let c = callers(UnknownCallers::Allow);
        assert_eq!(c.admits(Some(0), 0), Ok(()));
        assert_eq!(c.admits(Some(0), 1), Err(Refusal::RouteNotAllowed));
        assert_eq!(c.admits(Some(1), 1), Ok(()));
        assert!(!c.admits_everyone());
    }

    /// Guards against `deny` letting an unlisted caller through, or `allow` refusing one.
    #[test]
    fn unknown_callers_are_allowed_or_denied_as_configured() {
        assert_eq!(callers(UnknownCallers::Allow).admits(None, 0), Ok(()));
        assert_eq!(
            callers(UnknownCallers::Deny).admits(None, 0),
            Err(Refusal::NotListed)
        );
        assert_eq!(callers(UnknownCallers::Deny).admits(Some(1), 0), Ok(()));
        assert!(Callers::default().admits_everyone());
    }
}
