//! Per-recipient outbound decision: encrypt, send plain, or refuse.
//!
//! Rules are tried in order and the first whose pattern matches the recipient wins;
//! otherwise the default applies. The decision combines the configured action with
//! whether a usable key was found.

use crate::config::{PolicyAction, PolicyConfig};

/// What happens to the message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Encrypt,
    SendPlain,
    /// `require` and no key: the whole message is refused.
    Refuse,
}

/// The configured action for `recipient`.
pub fn action_for(policy: &PolicyConfig, recipient: &str) -> PolicyAction {
    let recipient = recipient.to_ascii_lowercase();
    policy
        .rules
        .iter()
        .find(|r| glob_match(&r.recipient.to_ascii_lowercase(), &recipient))
        .map(|r| r.action)
        .unwrap_or(policy.default)
}

/// Combines the action with key availability.
pub fn decide(action: PolicyAction, has_key: bool) -> Decision {
    match (action, has_key) {
        (PolicyAction::Plain, _) => Decision::SendPlain,
        (_, true) => Decision::Encrypt,
        (PolicyAction::Opportunistic, false) => Decision::SendPlain,
        (PolicyAction::Require, false) => Decision::Refuse,
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
        assert_eq!(decide(PolicyAction::Require, false), Decision::Refuse);
        assert_eq!(decide(PolicyAction::Require, true), Decision::Encrypt);
        assert_eq!(decide(PolicyAction::Plain, true), Decision::SendPlain);
        assert_eq!(
            decide(PolicyAction::Opportunistic, false),
            Decision::SendPlain
        );
    }
}
