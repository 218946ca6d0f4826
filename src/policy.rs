//! Per-recipient outbound decision: encrypt, send plain, or refuse.
//!
//! A `[[policy.rule]]` names a recipient pattern, a sender pattern, or both. The senders
//! of a message are its envelope sender, every address of every From and Sender field
//! and the authenticated login when it is an address. For one recipient:
//!
//! 1. Among the rules naming both sender and recipient: for each sender, its most
//!    specific matching rule. If any sender has one, the strictest of those decides
//!    (`require` > `opportunistic` > `plain`). This is the only way to relax a rule
//!    naming one side: write a rule naming both.
//! 2. Otherwise the strictest of: the most specific matching rule naming only the
//!    recipient, and, for each sender, its most specific matching rule naming only the
//!    sender (the strictest across senders).
//! 3. No rule matches: `[policy] default`.
//!
//! "Most specific" compares within one side: an address beats a whole domain
//! (`example.org` or `*@example.org`), which beats any other glob; among rules naming
//! both, the recipient pattern counts first, then the sender pattern; among equals the
//! rule written first wins.
//!
//! Addresses are compared normalised ([`crate::keys::normalize_address`]: case, IDNA,
//! `"quoted"` local parts), and a `require` rule also holds for the `+tag` subaddresses
//! of what it names (`boss@` covers `boss+x@`); other actions match only what they name.
//!
//! So adding a sender address, or a broad recipient rule, can never weaken a decision:
//! `sender = "legal.corp.example"` with `require` holds for every recipient unless a rule
//! naming both legal and that recipient says otherwise. The decision combines the rule's
//! action with whether a usable key was found.

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

/// The configured action for mail from `senders` to `recipient` (see the module
/// documentation for how rules combine). Addresses and patterns are compared in the one
/// normalised form ([`crate::keys::normalize_address`]): a rule for `bücher.example`
/// matches mail to `xn--bcher-kva.example`, and `Example.ORG.` is `example.org`.
pub fn action_for(policy: &PolicyConfig, senders: &[&str], recipient: &str) -> PolicyAction {
    let recipient = crate::keys::normalize_address(recipient);
    let mut senders: Vec<String> = senders
        .iter()
        .map(|s| crate::keys::normalize_address(s))
        .collect();
    senders.sort();
    senders.dedup();
    let rules: Vec<(&PolicyRule, Option<Pattern>, Option<Pattern>)> = policy
        .rules
        .iter()
        .map(|r| {
            (
                r,
                r.recipient.as_deref().map(Pattern::new),
                r.sender.as_deref().map(Pattern::new),
            )
        })
        .collect();
    // A `require` rule also holds for the `+tag` subaddresses of what it names
    // (`boss+x@` reaches boss's mailbox); other actions match only what they name.
    let matches = |p: &Pattern, address: &str, action: PolicyAction| {
        p.matches(address)
            || (action == PolicyAction::Require
                && base_address(address).is_some_and(|base| p.matches(&base)))
    };
    let recipient_rank = |rule: &PolicyRule, p: &Option<Pattern>| -> Option<u8> {
        p.as_ref()
            .filter(|p| matches(p, &recipient, rule.action))
            .map(Pattern::rank)
    };
    let sender_rank = |rule: &PolicyRule, p: &Option<Pattern>, sender: &str| -> Option<u8> {
        p.as_ref()
            .filter(|p| matches(p, sender, rule.action))
            .map(Pattern::rank)
    };

    // 1. Rules naming both sides: each sender's most specific one, strictest across senders.
    let pair = senders
        .iter()
        .filter_map(|s| {
            most_specific(rules.iter().filter_map(|(rule, rp, sp)| {
                Some((
                    (recipient_rank(rule, rp)?, sender_rank(rule, sp, s)?),
                    rule.action,
                ))
            }))
        })
        .reduce(strictest);
    if let Some(action) = pair {
        return action;
    }

    // 2. The recipient-only rule and the sender-only rules, strictest of all.
    let by_recipient = most_specific(rules.iter().filter_map(|(rule, rp, sp)| {
        if sp.is_some() {
            return None;
        }
        Some((recipient_rank(rule, rp)?, rule.action))
    }));
    let by_sender = senders.iter().filter_map(|s| {
        most_specific(rules.iter().filter_map(|(rule, rp, sp)| {
            if rp.is_some() {
                return None;
            }
            Some((sender_rank(rule, sp, s)?, rule.action))
        }))
    });
    by_recipient
        .into_iter()
        .chain(by_sender)
        .reduce(strictest)
        .unwrap_or(policy.default)
}

/// `local@domain` without a `+tag` (`boss+x@partner.example` → `boss@partner.example`),
/// or `None` when there is no tag.
fn base_address(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let (base, _tag) = local.split_once('+')?;
    (!base.is_empty()).then(|| format!("{base}@{domain}"))
}

/// The action of the highest-scoring candidate; among equals the first (the rule written
/// first).
fn most_specific<S: Ord>(
    candidates: impl Iterator<Item = (S, PolicyAction)>,
) -> Option<PolicyAction> {
    let mut best: Option<(S, PolicyAction)> = None;
    for (score, action) in candidates {
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, action));
        }
    }
    best.map(|(_, a)| a)
}

/// The stricter of two actions: `require` > `opportunistic` > `plain`.
pub fn strictest(a: PolicyAction, b: PolicyAction) -> PolicyAction {
    let rank = |a: PolicyAction| match a {
        PolicyAction::Plain => 0,
        PolicyAction::Opportunistic => 1,
        PolicyAction::Require => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
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
        // A recipient rule and a sender rule: the stricter decides; a rule naming both
        // sides beats either.
        assert_eq!(
            action_for(&policy, &["press@corp.example"], "x@partner.example"),
            Plain
        );
        assert_eq!(
            action_for(&policy, &["ed@corp.example"], "x@partner.example"),
            Require
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
    }

    /// Review F1: a second From address that hits a narrower, weaker sender rule must
    /// not downgrade the `require` another sender brings in.
    #[test]
    fn an_extra_sender_matching_a_weaker_narrower_rule_cannot_relax_require() {
        use PolicyAction::*;
        let policy = PolicyConfig {
            rules: vec![
                rule(None, Some("legal.corp.example"), Require),
                rule(None, Some("newsletter@corp.example"), Plain),
            ],
            ..PolicyConfig::default()
        };
        let senders = [
            "ann@legal.corp.example",
            "ann@legal.corp.example",
            "newsletter@corp.example",
        ];
        assert_eq!(action_for(&policy, &senders, "x@gmail.example"), Require);
    }

    /// Review F2: a recipient-only rule, however broad, does not outrank a sender-only
    /// `require`: the stricter of the two decides.
    #[test]
    fn a_broad_recipient_rule_does_not_relax_a_sender_require() {
        use PolicyAction::*;
        let policy = PolicyConfig {
            rules: vec![
                rule(Some("*"), None, Opportunistic),
                rule(None, Some("legal.corp.example"), Require),
            ],
            ..PolicyConfig::default()
        };
        let legal = ["ann@legal.corp.example"];
        assert_eq!(action_for(&policy, &legal, "x@gmail.example"), Require);
    }

    /// Only a rule naming both sides relaxes a one-sided rule, and among several
    /// senders' pair rules the strictest holds.
    #[test]
    fn a_rule_naming_both_sides_is_the_only_relaxation() {
        use PolicyAction::*;
        let policy = PolicyConfig {
            rules: vec![
                rule(None, Some("legal.corp.example"), Require),
                rule(Some("partner.example"), None, Require),
                rule(Some("partner.example"), Some("legal.corp.example"), Plain),
                rule(Some("*"), Some("ann@legal.corp.example"), Opportunistic),
                rule(Some("partner.example"), Some("ed@corp.example"), Require),
            ],
            default: Plain,
            ..PolicyConfig::default()
        };
        // ann's most specific pair rule for partner.example is the domain one: plain.
        assert_eq!(
            action_for(&policy, &["ann@legal.corp.example"], "x@partner.example"),
            Plain
        );
        // For others, ann's glob pair rule relaxes legal's sender require.
        assert_eq!(
            action_for(&policy, &["ann@legal.corp.example"], "x@else.org"),
            Opportunistic
        );
        // bob has no pair rule for else.org: legal's require holds.
        assert_eq!(
            action_for(&policy, &["bob@legal.corp.example"], "x@else.org"),
            Require
        );
        // A second sender with a stricter pair rule: the strictest pair rule decides.
        assert_eq!(
            action_for(
                &policy,
                &["ann@legal.corp.example", "ed@corp.example"],
                "x@partner.example"
            ),
            Require
        );
        // No pair rule, no sender rule: the recipient rule, else the default.
        assert_eq!(
            action_for(&policy, &["z@o.example"], "x@partner.example"),
            Require
        );
        assert_eq!(action_for(&policy, &["z@o.example"], "x@o.example"), Plain);
        assert_eq!(action_for(&policy, &[], "x@o.example"), Plain);
    }

    /// Review F4: an address-level `require` is not dodged by an equivalent spelling of
    /// the address (a quoted local part) or a `+tag` subaddress of it.
    #[test]
    fn a_quoted_or_subaddressed_recipient_still_meets_an_address_require() {
        use PolicyAction::*;
        assert_eq!(
            crate::keys::normalize_address("<\"Boss\"@Partner.Example>"),
            "boss@partner.example"
        );
        let policy = PolicyConfig {
            rules: vec![
                rule(Some("boss@partner.example"), None, Require),
                rule(None, Some("ceo@corp.example"), Require),
                rule(Some("news@partner.example"), None, Plain),
            ],
            ..PolicyConfig::default()
        };
        for r in [
            "\"boss\"@partner.example",
            "boss+x@partner.example",
            "\"boss+x\"@Partner.Example",
        ] {
            assert_eq!(action_for(&policy, &[], r), Require, "{r}");
        }
        assert_eq!(
            action_for(&policy, &["ceo+x@corp.example"], "x@else.example"),
            Require
        );
        // Only require reaches subaddresses: a plain rule for news@ stays with news@.
        assert_eq!(
            action_for(&policy, &[], "news+x@partner.example"),
            Opportunistic
        );
        assert_eq!(
            action_for(&policy, &[], "bossy@partner.example"),
            Opportunistic
        );
    }
}
