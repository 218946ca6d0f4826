//! Per-recipient outbound decision: encrypt, send plain, or refuse.
//!
//! Rules are tried in order and the first whose pattern matches the recipient wins;
//! otherwise the default applies. The decision combines the configured action with
//! whether a usable key was found.

use crate::config::{PolicyAction, PolicyConfig};
use crate::trust::Vouch;

/// What happens to the message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Encrypt,
    SendPlain,
    /// `require` and no key: the whole message is refused.
    Refuse,
}

/// The configured action for `recipient`. Recipient and patterns are compared in the
/// one normalised form ([`crate::keys::normalize_address`]): a rule for `bücher.example`
/// matches mail to `xn--bcher-kva.example`, and `Example.ORG.` is `example.org`.
pub fn action_for(policy: &PolicyConfig, recipient: &str) -> PolicyAction {
    let recipient = crate::keys::normalize_address(recipient);
    policy
        .rules
        .iter()
        .find(|r| glob_match(&normalize_pattern(&r.recipient), &recipient))
        .map(|r| r.action)
        .unwrap_or(policy.default)
}

/// Combines the action with the key found, if any, and what vouches for it: under
/// `require` only a key whose binding to the address was checked will do (an
/// unauthenticated Autocrypt key is used, but the message is refused without a better one).
pub fn decide(action: PolicyAction, key: Option<Vouch>) -> Decision {
    match (action, key) {
        (PolicyAction::Plain, _) => Decision::SendPlain,
        (PolicyAction::Require, Some(v)) if !v.satisfies_require() => Decision::Refuse,
        (_, Some(_)) => Decision::Encrypt,
        (PolicyAction::Opportunistic, None) => Decision::SendPlain,
        (PolicyAction::Require, None) => Decision::Refuse,
    }
}

/// A rule pattern in the form addresses are compared in: the part after the last `@`
/// (or the whole pattern, without one) is a domain whose `*`-free labels are IDNA'd.
fn normalize_pattern(pattern: &str) -> String {
    let labels = |d: &str| -> String {
        d.trim_end_matches('.')
            .split('.')
            .map(|l| {
                if l.contains('*') {
                    l.to_lowercase()
                } else {
                    crate::keys::normalize_domain(l)
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    match pattern.trim().rsplit_once('@') {
        Some((local, domain)) => format!("{}@{}", local.to_lowercase(), labels(domain)),
        None => labels(pattern.trim()),
    }
}

/// `*` matches any run of characters (including none); everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyRule;

    #[test]
    fn globs() {
        assert!(glob_match("*@partner.example", "x@partner.example"));
        assert!(!glob_match(
            "*@partner.example",
            "x@sub.partner.example.org"
        ));
        assert!(glob_match("*partner.example", "x@sub.partner.example"));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b*c", "aXXbY"));
        assert!(glob_match("bob@example.org", "bob@example.org"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn rules_match_the_normalised_address() {
        let policy = PolicyConfig {
            rules: vec![
                PolicyRule {
                    recipient: "*@Bücher.Example".into(),
                    action: PolicyAction::Require,
                },
                PolicyRule {
                    recipient: "boss@partner.example.".into(),
                    action: PolicyAction::Plain,
                },
            ],
            ..PolicyConfig::default()
        };
        for r in [
            "a@xn--bcher-kva.example",
            "a@BÜCHER.example",
            "<A@bücher.example.>",
        ] {
            assert_eq!(action_for(&policy, r), PolicyAction::Require, "{r}");
        }
        assert_eq!(
            action_for(&policy, "Boss@Partner.Example."),
            PolicyAction::Plain
        );
        assert_eq!(
            action_for(&policy, "a@bucher.example"),
            PolicyAction::Opportunistic
        );
    }

    #[test]
    fn first_rule_wins_then_default() {
        let policy = PolicyConfig {
            rules: vec![
                PolicyRule {
                    recipient: "boss@partner.example".into(),
                    action: PolicyAction::Plain,
                },
                PolicyRule {
                    recipient: "*@Partner.example".into(),
                    action: PolicyAction::Require,
                },
            ],
            ..PolicyConfig::default()
        };
        assert_eq!(
            action_for(&policy, "boss@partner.example"),
            PolicyAction::Plain
        );
        assert_eq!(
            action_for(&policy, "X@PARTNER.example"),
            PolicyAction::Require
        );
        assert_eq!(
            action_for(&policy, "x@other.example"),
            PolicyAction::Opportunistic
        );
        use PolicyAction::*;
        assert_eq!(decide(Require, None), Decision::Refuse);
        assert_eq!(decide(Require, Some(Vouch::Wkd)), Decision::Encrypt);
        assert_eq!(decide(Plain, Some(Vouch::Local)), Decision::SendPlain);
        assert_eq!(decide(Opportunistic, None), Decision::SendPlain);
        // An Autocrypt key nobody authenticated: used when allowed, never proof enough.
        assert_eq!(
            decide(Opportunistic, Some(Vouch::Autocrypt)),
            Decision::Encrypt
        );
        assert_eq!(decide(Require, Some(Vouch::Autocrypt)), Decision::Refuse);
        assert_eq!(
            decide(Require, Some(Vouch::AutocryptAuthenticated)),
            Decision::Encrypt
        );
    }
}
