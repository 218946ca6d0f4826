//! Per-recipient outbound decision: encrypt, send plain, or refuse.
//!
//! A `[[policy.rule]]` names a recipient pattern, a sender pattern, or both; the most
//! specific matching rule decides, otherwise the default applies:
//!
//! 1. a rule naming both sender and recipient beats a rule naming one of them;
//! 2. then the more specific recipient pattern wins: an address beats a whole domain
//!    (`example.org` or `*@example.org`), which beats any other glob, which beats none;
//! 3. then the more specific sender pattern, in the same order;
//! 4. then the rule written first.
//!
//! So `sender = "legal.corp.example"` with `require` holds for every recipient no
//! recipient rule names; to overrule a recipient rule for one sender, name both.
//! The senders of a message are its envelope sender and the addresses of its From field:
//! a sender rule applies when any of them matches, so a client cannot step around a
//! stricter rule by choosing which one to forge. The decision combines the rule's action
//! with whether a usable key was found.

use crate::config::{PolicyAction, PolicyConfig, PolicyRule};
use crate::trust::Vouch;

/// What happens to the message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Encrypt,
    SendPlain,
    /// `require` and no key: the whole message is refused.
    Refuse,
}

/// The configured action for mail from `senders` to `recipient`. Addresses and
/// patterns are compared in the one normalised form ([`crate::keys::normalize_address`]):
/// a rule for `bücher.example` matches mail to `xn--bcher-kva.example`, and
/// `Example.ORG.` is `example.org`.
pub fn action_for(policy: &PolicyConfig, senders: &[&str], recipient: &str) -> PolicyAction {
    rule_for(policy, senders, recipient)
        .map(|r| r.action)
        .unwrap_or(policy.default)
}

/// The rule that decides for mail from `senders` to `recipient`, if any matches (see the
/// module documentation for the order).
pub fn rule_for<'a>(
    policy: &'a PolicyConfig,
    senders: &[&str],
    recipient: &str,
) -> Option<&'a PolicyRule> {
    let recipient = crate::keys::normalize_address(recipient);
    let senders: Vec<String> = senders
        .iter()
        .map(|s| crate::keys::normalize_address(s))
        .collect();
    let mut best: Option<((u8, u8, u8), &PolicyRule)> = None;
    for rule in &policy.rules {
        let r = match &rule.recipient {
            Some(p) => {
                let p = Pattern::new(p);
                if !p.matches(&recipient) {
                    continue;
                }
                p.rank()
            }
            None => 0,
        };
        let s = match &rule.sender {
            Some(p) => {
                let p = Pattern::new(p);
                if !senders.iter().any(|s| p.matches(s)) {
                    continue;
                }
                p.rank()
            }
            None => 0,
        };
        let sides = u8::from(rule.recipient.is_some()) + u8::from(rule.sender.is_some());
        let score = (sides, r, s);
        // Strictly greater only: among equals the rule written first stays.
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, rule));
        }
    }
    best.map(|(_, r)| r)
}

/// A rule pattern, normalised: an address or glob with `@`, or a domain (no `@`), which
/// stands for every address at that domain.
struct Pattern(String);

impl Pattern {
    fn new(pattern: &str) -> Pattern {
        let p = normalize_pattern(pattern);
        if p.contains('@') {
            Pattern(p)
        } else {
            Pattern(format!("*@{p}"))
        }
    }

    fn matches(&self, address: &str) -> bool {
        glob_match(&self.0, address)
    }

    /// 3: one address; 2: every address of one domain; 1: any other glob.
    fn rank(&self) -> u8 {
        match self.0.split_once('@') {
            _ if !self.0.contains('*') => 3,
            Some(("*", domain)) if !domain.contains('*') => 2,
            _ => 1,
        }
    }
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
                    recipient: Some("*@Bücher.Example".into()),
                    sender: None,
                    action: PolicyAction::Require,
                },
                PolicyRule {
                    recipient: Some("boss@partner.example.".into()),
                    sender: None,
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
            assert_eq!(action_for(&policy, &[], r), PolicyAction::Require, "{r}");
        }
        assert_eq!(
            action_for(&policy, &[], "Boss@Partner.Example."),
            PolicyAction::Plain
        );
        assert_eq!(
            action_for(&policy, &[], "a@bucher.example"),
            PolicyAction::Opportunistic
        );
    }

    #[test]
    fn an_address_rule_beats_a_domain_rule_then_default() {
        let policy = PolicyConfig {
            rules: vec![
                PolicyRule {
                    recipient: Some("boss@partner.example".into()),
                    sender: None,
                    action: PolicyAction::Plain,
                },
                PolicyRule {
                    recipient: Some("*@Partner.example".into()),
                    sender: None,
                    action: PolicyAction::Require,
                },
            ],
            ..PolicyConfig::default()
        };
        assert_eq!(
            action_for(&policy, &[], "boss@partner.example"),
            PolicyAction::Plain
        );
        assert_eq!(
            action_for(&policy, &[], "X@PARTNER.example"),
            PolicyAction::Require
        );
        assert_eq!(
            action_for(&policy, &[], "x@other.example"),
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

    fn rule(recipient: Option<&str>, sender: Option<&str>, action: PolicyAction) -> PolicyRule {
        PolicyRule {
            recipient: recipient.map(str::to_string),
            sender: sender.map(str::to_string),
            action,
        }
    }

    #[test]
    fn sender_rules_and_the_most_specific_rule_wins() {
        use PolicyAction::*;
        let policy = PolicyConfig {
            rules: vec![
                // Written first but least specific: loses to every rule below it that matches.
                rule(Some("*.example"), None, Opportunistic),
                rule(None, Some("legal.corp.example"), Require),
                rule(Some("partner.example"), None, Plain),
                rule(Some("*@partner.example"), None, Require), // same rank as above: later loses
                rule(Some("ceo@partner.example"), None, Require),
                rule(
                    Some("partner.example"),
                    Some("*@legal.corp.example"),
                    Require,
                ),
                rule(None, Some("press@corp.example"), Plain),
                rule(None, Some("*@corp.example"), Require),
            ],
            ..PolicyConfig::default()
        };
        let legal = ["ann@Legal.Corp.Example"];
        // The sender rule holds for recipients no recipient rule names.
        assert_eq!(action_for(&policy, &legal, "x@elsewhere.org"), Require);
        // Not for other senders, nor for a subdomain's or parent domain's senders.
        assert_eq!(
            action_for(&policy, &["bo@other.org"], "x@elsewhere.org"),
            Opportunistic
        );
        assert_eq!(
            action_for(&policy, &["a@sub.legal.corp.example"], "x@elsewhere.org"),
            Opportunistic
        );
        // A domain rule for the recipient beats the glob, and first of equals wins.
        assert_eq!(
            action_for(&policy, &["bo@other.org"], "x@partner.example"),
            Plain
        );
        // An address beats a domain.
        assert_eq!(
            action_for(&policy, &["bo@other.org"], "ceo@partner.example"),
            Require
        );
        // A recipient rule beats a sender rule; a rule naming both beats either.
        assert_eq!(
            action_for(&policy, &["press@corp.example"], "x@partner.example"),
            Plain
        );
        assert_eq!(action_for(&policy, &legal, "x@partner.example"), Require);
        // Among sender rules, the address beats the domain.
        assert_eq!(
            action_for(&policy, &["press@corp.example"], "x@else.org"),
            Plain
        );
        assert_eq!(
            action_for(&policy, &["ed@corp.example"], "x@else.org"),
            Require
        );
        // Any of the senders (envelope or From) brings its rules in.
        assert_eq!(
            action_for(
                &policy,
                &["bo@other.org", "ann@legal.corp.example"],
                "x@else.org"
            ),
            Require
        );
        assert_eq!(
            rule_for(&policy, &legal, "x@partner.example").and_then(|r| r.sender.as_deref()),
            Some("*@legal.corp.example")
        );
    }
}
