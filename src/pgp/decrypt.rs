//! Decryption and signature verification of one OpenPGP message.
//!
//! Sequoia's streaming decryptor only releases plaintext that passed its integrity
//! check (MDC or AEAD, RFC 9580 §5.13); on top of that the plaintext is collected in
//! full and returned only when the whole message was processed without error, so a
//! truncated or tampered message never yields partial plaintext (EFAIL).

use crate::trust::Believed;
use openpgp::cert::Cert;
use openpgp::crypto::{KeyPair, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::types::SymmetricAlgorithm;
use openpgp::KeyHandle;
use sequoia_openpgp as openpgp;
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("none of our keys can decrypt this message")]
    NoKey,
    #[error("the decrypted message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("decryption failed: {0}")]
    Failed(String),
}

/// What the signature inside an encrypted message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    Unsigned,
    /// Verified with a known certificate.
    Good {
        fingerprint: String,
        /// The addresses in the signer's valid user IDs (normalised).
        addresses: Vec<String>,
    },
    /// Verified, but the signer's certificate does not carry the From address: the
    /// message claims to be from someone other than who signed it.
    WrongSigner {
        fingerprint: String,
    },
    /// A signature that does not verify (tampered, or the key is not valid).
    Bad,
    /// Signed by a key that is not in the store.
    UnknownKey {
        issuer: String,
    },
}

#[derive(Debug)]
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    pub signature: SignatureStatus,
}

struct Helper<'a> {
    keys: &'a [KeyPair],
    /// For each of `keys`, its X25519 form when it is a Curve25519 key (see
    /// [`X25519`]), unlocked once per message.
    fast: Vec<Option<X25519<'a>>>,
    certs: &'a [&'a Believed],
    signature: SignatureStatus,
    /// Secret-key operations tried on this message's PKESKs (see [`MAX_KEY_ATTEMPTS`]).
    attempts: usize,
}

/// At most this many secret-key operations per message. Each PKESK that names one of
/// our keys, or names none (a wildcard recipient, RFC 9580 §5.1), costs one per key,
/// and a sender chooses how many PKESKs a message carries: 100-byte packets costing an
/// RSA decryption each would let one stored message keep a core busy for minutes. A
/// message for us names each of our keys once, or hides the recipient a few times.
const MAX_KEY_ATTEMPTS: usize = 16;

/// What [`Helper`] returns when none of our keys opens any PKESK: found again by type
/// in sequoia's error, never by its text.
#[derive(Debug, thiserror::Error)]
#[error("none of our keys can decrypt this message")]
struct NoKey;

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self
            .certs
            .iter()
            .map(|b| &b.cert)
            .filter(|c| {
                ids.iter()
                    .any(|id| c.keys().any(|k| k.key().key_handle().aliases(id)))
            })
            .cloned()
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            if let MessageLayer::SignatureGroup { results } = layer {
                for result in results {
                    let status = match result {
                        Ok(good) => SignatureStatus::Good {
                            fingerprint: good.ka.cert().fingerprint().to_hex(),
                            addresses: proven_addresses(self.certs, good.ka.cert()),
                        },
                        Err(VerificationError::MissingKey { sig }) => SignatureStatus::UnknownKey {
                            issuer: sig
                                .get_issuers()
                                .first()
                                .map(|h| h.to_hex())
                                .unwrap_or_default(),
                        },
                        Err(_) => SignatureStatus::Bad,
                    };
                    // The best result wins when several signatures are present.
                    let better = matches!(
                        (&self.signature, &status),
                        (SignatureStatus::Unsigned, _)
                            | (_, SignatureStatus::Good { .. })
                            | (SignatureStatus::Bad, SignatureStatus::UnknownKey { .. })
                    );
                    if better && !matches!(self.signature, SignatureStatus::Good { .. }) {
                        self.signature = status;
                    }
                }
            }
        }
        // Signature problems are reported, not fatal: the content is still shown,
        // labelled with the result.
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            for (key, fast) in self.keys.iter().zip(self.fast.iter_mut()) {
                let matches = match pkesk.recipient() {
                    Some(r) => key.public().key_handle().aliases(r),
                    // Anonymous recipient (wildcard key ID): try every key.
                    None => true,
                };
                if !matches {
                    continue;
                }
                if self.attempts >= MAX_KEY_ATTEMPTS {
                    tracing::warn!(
                        pkesks = pkesks.len(),
                        "message names our keys more often than any real message does; not tried further"
                    );
                    return Err(anyhow::Error::new(NoKey));
                }
                self.attempts += 1;
                if let Some(fast) = fast {
                    // What this fails to open, Sequoia's own X25519 fails too.
                    if let Some((algo, sk)) = pkesk.decrypt(fast, sym_algo) {
                        if decrypt(algo, &sk) {
                            return Ok(None);
                        }
                    }
                    continue;
                }
                let mut kp = key.clone();
                if let Some((algo, sk)) = pkesk.decrypt(&mut kp, sym_algo) {
                    if decrypt(algo, &sk) {
                        return Ok(None);
                    }
                }
            }
        }
        Err(anyhow::Error::new(NoKey))
    }
}

/// An OpenPGP Curve25519 ECDH key (RFC 9580 §11.5) whose shared point is computed by
/// aws-lc (the TLS library's): Sequoia's OpenSSL 3 backend imports the key into OpenSSL
/// afresh for every message (`EVP_PKEY_fromdata`), which cost about a third of the CPU
/// of decrypting a short message. The KDF and key unwrapping stay Sequoia's.
struct X25519<'a> {
    public: &'a openpgp::packet::Key<
        openpgp::packet::key::PublicParts,
        openpgp::packet::key::UnspecifiedRole,
    >,
    secret: aws_lc_rs::agreement::PrivateKey,
}

impl<'a> X25519<'a> {
    /// `None` for any other kind of key (Sequoia decrypts with those itself).
    fn new(key: &'a KeyPair) -> Option<X25519<'a>> {
        use openpgp::crypto::mpi::{PublicKey, SecretKeyMaterial};
        use openpgp::types::Curve;
        if !matches!(
            key.public().mpis(),
            PublicKey::ECDH {
                curve: Curve::Cv25519,
                ..
            }
        ) {
            return None;
        }
        key.secret().map(|secret| match secret {
            SecretKeyMaterial::ECDH { scalar } => {
                // OpenPGP stores the scalar big-endian (leading zeros may be stripped);
                // X25519 (RFC 7748) takes it little-endian, 32 bytes.
                let mut r = scalar.value_padded(32);
                r.reverse();
                aws_lc_rs::agreement::PrivateKey::from_private_key(
                    &aws_lc_rs::agreement::X25519,
                    &r,
                )
                .ok()
                .map(|secret| X25519 {
                    public: key.public(),
                    secret,
                })
            }
            _ => None,
        })
    }
}

impl openpgp::crypto::Decryptor for X25519<'_> {
    fn public(
        &self,
    ) -> &openpgp::packet::Key<
        openpgp::packet::key::PublicParts,
        openpgp::packet::key::UnspecifiedRole,
    > {
        self.public
    }

    fn decrypt(
        &mut self,
        ciphertext: &openpgp::crypto::mpi::Ciphertext,
        plaintext_len: Option<usize>,
    ) -> openpgp::Result<SessionKey> {
        use openpgp::crypto::mpi::Ciphertext;
        let Ciphertext::ECDH { e, .. } = ciphertext else {
            return Err(anyhow::anyhow!("not an ECDH ciphertext"));
        };
        // The sender's ephemeral public key V; S = rV.
        let (v, _) = e.decode_point(&openpgp::types::Curve::Cv25519)?;
        let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::X25519, v);
        // (The error value is made before the agreement runs: a unit, so that a
        // decryption costs no error built for nothing.)
        let shared: openpgp::crypto::mem::Protected =
            aws_lc_rs::agreement::agree(&self.secret, peer, (), |s| Ok(s.into()))
                .map_err(|()| anyhow::anyhow!("X25519 key agreement failed"))?;
        openpgp::crypto::ecdh::decrypt_unwrap(self.public, &shared, ciphertext, plaintext_len)
    }
}

/// The addresses a good signature by `signer` proves: those of its valid, unrevoked user
/// IDs that something vouches for ([`Believed`]), never a user ID only the certificate's
/// maker claims.
fn proven_addresses(believed: &[&Believed], signer: &Cert) -> Vec<String> {
    use openpgp::cert::amalgamation::ValidAmalgamation;
    use openpgp::types::RevocationStatus;
    let fpr = signer.fingerprint();
    let Ok(signer) = signer.with_policy(&crate::keys::POLICY, None) else {
        return Vec::new();
    };
    let vouched: Vec<&String> = believed
        .iter()
        .filter(|b| b.cert.fingerprint() == fpr)
        .flat_map(|b| &b.addresses)
        .collect();
    signer
        .userids()
        .filter(|u| !matches!(u.revocation_status(), RevocationStatus::Revoked(_)))
        .filter_map(|u| {
            u.userid()
                .email()
                .ok()
                .flatten()
                .map(crate::keys::normalize_address)
        })
        .filter(|a| vouched.contains(&a))
        .collect()
}

/// Decrypts `ciphertext` (armored or binary) with `keys`, verifying signatures
/// against `certs`. Plaintext larger than `max_size` is refused.
pub fn decrypt_bytes(
    ciphertext: &[u8],
    keys: &[KeyPair],
    certs: &[&Believed],
    max_size: usize,
) -> Result<Decrypted, DecryptError> {
    if keys.is_empty() {
        return Err(DecryptError::NoKey);
    }
    let helper = Helper {
        keys,
        fast: keys.iter().map(X25519::new).collect(),
        certs,
        signature: SignatureStatus::Unsigned,
        attempts: 0,
    };
    // Sequoia holds back up to `buffer_size` bytes of plaintext until signatures are
    // checked (25 MiB by default, allocated per message: that made RSS climb under load).
    // Nothing here is released before the whole message is read and checked, so the
    // buffer only needs to cover a typical message.
    let buffer = ciphertext.len().clamp(64 * 1024, 1024 * 1024);
    // The usual armor is read here, several times faster than by Sequoia; any other
    // layout goes to Sequoia as it is.
    let binary = super::armor::decode(ciphertext);
    let ciphertext = binary.as_deref().unwrap_or(ciphertext);
    let mut decryptor = DecryptorBuilder::from_bytes(ciphertext)
        .map_err(|e| DecryptError::Failed(e.to_string()))?
        .buffer_size(buffer)
        .with_policy(&crate::keys::POLICY, None, helper)
        .map_err(|e| match e.downcast_ref::<NoKey>() {
            Some(_) => DecryptError::NoKey,
            None => DecryptError::Failed(e.to_string()),
        })?;
    let mut plaintext = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = decryptor
            .read(&mut chunk)
            .map_err(|e| DecryptError::Failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        if plaintext.len() + n > max_size {
            return Err(DecryptError::TooLarge(max_size));
        }
        plaintext.extend_from_slice(&chunk[..n]);
    }
    if !decryptor.message_processed() {
        return Err(DecryptError::Failed("message not fully processed".into()));
    }
    let signature = decryptor.into_helper().signature;
    Ok(Decrypted {
        plaintext,
        signature,
    })
}

impl SignatureStatus {
    /// A good signature counts only when the signer's certificate carries the From
    /// address the client will show; otherwise it is reported as from someone else.
    pub fn checked_against(self, from: Option<&str>) -> SignatureStatus {
        match self {
            SignatureStatus::Good {
                fingerprint,
                addresses,
            } => {
                let matches = from
                    .map(crate::keys::normalize_address)
                    .is_some_and(|f| addresses.contains(&f));
                if matches {
                    SignatureStatus::Good {
                        fingerprint,
                        addresses,
                    }
                } else {
                    SignatureStatus::WrongSigner { fingerprint }
                }
            }
            other => other,
        }
    }

    /// The value of the `Sealpost-Decrypted` header for this result.
    pub fn header_value(&self) -> String {
        match self {
            SignatureStatus::Unsigned => "yes; unsigned".into(),
            SignatureStatus::Good { fingerprint, .. } => {
                format!("yes; signature=good; signer={fingerprint}")
            }
            SignatureStatus::WrongSigner { fingerprint } => {
                format!("yes; signature=not-from-sender; signer={fingerprint}")
            }
            SignatureStatus::Bad => "yes; signature=bad".into(),
            SignatureStatus::UnknownKey { issuer } => {
                format!("yes; signature=unknown-key; issuer={issuer}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::packet::Packet;
    use openpgp::parse::PacketParser;
    use openpgp::policy::StandardPolicy;
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
    use std::io::Write;

    /// A message to `cert`, and its PKESK.
    fn pkesk_to(cert: &Cert) -> PKESK {
        let p = StandardPolicy::new();
        let recipients = cert.keys().with_policy(&p, None).for_transport_encryption();
        let mut sink = Vec::new();
        let message = Message::new(&mut sink);
        let message = Encryptor::for_recipients(message, recipients)
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(b"hello").unwrap();
        w.finalize().unwrap();
        let ppr = PacketParser::from_bytes(&sink).unwrap();
        let openpgp::parse::PacketParserResult::Some(pp) = ppr else {
            panic!("no packets");
        };
        match pp.packet {
            Packet::PKESK(p) => p,
            other => panic!("first packet {other:?}"),
        }
    }

    fn keypair(cert: &Cert) -> KeyPair {
        super::super::unwrap::tests::keypairs(cert).remove(0)
    }

    /// The X25519 done by aws-lc opens what Sequoia opens, to the same session key,
    /// and refuses what is not for the key.
    #[test]
    fn x25519_by_aws_lc_agrees_with_sequoia() {
        let (cert, _) = CertBuilder::general_purpose(Some("a@example.org"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .generate()
            .unwrap();
        let key = keypair(&cert);
        for _ in 0..8 {
            let pkesk = pkesk_to(&cert);
            let mut fast = X25519::new(&key).expect("a Cv25519 key takes the fast path");
            let by_aws_lc = pkesk.decrypt(&mut fast, None).expect("aws-lc opens it");
            let by_sequoia = pkesk.decrypt(&mut key.clone(), None).unwrap();
            assert_eq!(by_aws_lc.0, by_sequoia.0);
            assert_eq!(by_aws_lc.1.as_ref(), by_sequoia.1.as_ref());
        }
        let (other, _) = CertBuilder::general_purpose(Some("b@example.org"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .generate()
            .unwrap();
        let pkesk = pkesk_to(&other);
        assert!(pkesk
            .decrypt(&mut X25519::new(&key).unwrap(), None)
            .is_none());
        // Other kinds of keys are left to Sequoia.
        let (rsa, _) = CertBuilder::general_purpose(Some("c@example.org"))
            .set_cipher_suite(CipherSuite::RSA2k)
            .generate()
            .unwrap();
        assert!(X25519::new(&keypair(&rsa)).is_none());
    }

    /// A sender decides how many PKESKs a message carries: the secret-key operations
    /// tried on one message are bounded, whatever their number.
    #[test]
    fn key_attempts_per_message_are_bounded() {
        let (cert, _) = CertBuilder::general_purpose(Some("a@example.org"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .generate()
            .unwrap();
        let keys = [keypair(&cert)];
        let mut helper = Helper {
            keys: &keys,
            fast: keys.iter().map(X25519::new).collect(),
            certs: &[],
            signature: SignatureStatus::Unsigned,
            attempts: 0,
        };
        // Each opens, but none gives a session key that decrypts (as a crafted
        // message's would not).
        let pkesks: Vec<PKESK> = (0..40).map(|_| pkesk_to(&cert)).collect();
        let mut tried = 0;
        let r = helper.decrypt(&pkesks, &[], None, &mut |_, _| {
            tried += 1;
            false
        });
        assert!(r.is_err());
        assert_eq!(helper.attempts, MAX_KEY_ATTEMPTS);
        assert_eq!(tried, MAX_KEY_ATTEMPTS);
        // A real message within the bound opens at the first that works.
        helper.attempts = 0;
        let mut tried = 0;
        let r = helper.decrypt(&pkesks[..3], &[], None, &mut |_, _| {
            tried += 1;
            tried == 3
        });
        assert!(r.is_ok());
        assert_eq!(tried, 3);
    }
}
