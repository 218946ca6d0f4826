//! What sealpost believes about certificates and addresses, in one place.
//!
//! A certificate's user IDs are claims made by whoever made the certificate; anyone can
//! write `ceo@corp.example` into their own. So a certificate speaks for an address only as
//! far as something sealpost trusts vouched for that address: the administrator's import,
//! the Web Key Directory of that address's domain, a verifying key server that checked the
//! e-mail, or an Autocrypt header in a message (authenticated or not). The key code decides
//! what each source vouches for ([`Believed`], [`Found`]); the view code and the outbound
//! policy only ask these types, so both follow the same rules.

use sequoia_openpgp::Cert;

/// What vouches for a certificate speaking for an address, strongest first (kept in
/// the state database beside each discovered certificate; see `crate::state`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Vouch {
    /// One of this instance's own identities (its key is in the config).
    Identity,
    /// Imported into the store by the administrator (`sealpost keys import`).
    Local,
    /// Served by the Web Key Directory of the address's own domain.
    Wkd,
    /// Served by a key server for exactly this address (VKS verifies the e-mail).
    Vks,
    /// Announced in an Autocrypt header of a message that was authenticated (signed good
    /// by a key already bound to the address, or passed DKIM/DMARC at the own provider).
    AutocryptAuthenticated,
    /// Announced in an Autocrypt header (or gossip) of a message nobody authenticated:
    /// better than plaintext, not proof of whose key it is.
    Autocrypt,
}

impl Vouch {
    /// May a key vouched for this way satisfy a `require` policy? Only keys whose binding
    /// to the address something checked: an unauthenticated Autocrypt key is used
    /// opportunistically but never counts as the recipient's key.
    pub fn satisfies_require(self) -> bool {
        !matches!(self, Vouch::Autocrypt)
    }
}

/// A certificate and the (normalised) addresses it is believed to speak for. A good
/// signature by it proves a From only when that From is among `addresses`.
#[derive(Debug, Clone)]
pub struct Believed {
    pub cert: Cert,
    pub addresses: Vec<String>,
}

impl Believed {
    /// A certificate believed for exactly the given addresses.
    pub fn for_addresses(cert: Cert, addresses: &[&str]) -> Believed {
        Believed {
            cert,
            addresses: addresses
                .iter()
                .map(|a| crate::keys::normalize_address(a))
                .collect(),
        }
    }

    /// A certificate believed for every address in its user IDs (self-signed claims
    /// included: only for certificates the administrator put there).
    pub fn for_all_user_ids(cert: Cert) -> Believed {
        let addresses = cert
            .userids()
            .filter_map(|u| {
                u.userid()
                    .email()
                    .ok()
                    .flatten()
                    .map(crate::keys::normalize_address)
            })
            .collect();
        Believed { cert, addresses }
    }

    /// Is the certificate believed to speak for `address`?
    pub fn vouches_for(&self, address: &str) -> bool {
        let a = crate::keys::normalize_address(address);
        self.addresses.contains(&a)
    }
}

/// The keys found for one recipient and the strongest thing that vouches for them.
#[derive(Debug, Clone)]
pub struct Found {
    pub certs: Vec<Cert>,
    pub vouch: Vouch,
}
