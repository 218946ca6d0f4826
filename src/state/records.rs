//! The typed rows: provenance, lookup misses and Autocrypt peers, as JSON documents
//! keyed by fingerprint, (source, address) and (identity, peer). Every read-modify-write
//! runs inside one transaction, so two instances sharing PostgreSQL never lose each
//! other's update.

use super::{Arg, Rows, State, StateError};
use crate::keys::autocrypt::PeerState;
use crate::keys::provenance::Provenance;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

fn decode<T: DeserializeOwned>(what: &str, key: &str, text: &str) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Query {
        place: what.to_string(),
        message: format!("the row for {key} is unreadable ({e})"),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Query {
        place: "state".into(),
        message: format!("cannot encode a row: {e}"),
    })
}

fn first(rows: Vec<Vec<String>>) -> Option<String> {
    rows.into_iter().next().and_then(|r| r.into_iter().next())
}

fn get_provenance(rows: &mut dyn Rows, fpr: &str) -> Result<Option<Provenance>, StateError> {
    first(rows.query_text(
        "SELECT data FROM provenance WHERE fingerprint = $1",
        &[Arg::Text(fpr)],
    )?)
    .map(|t| decode("provenance", fpr, &t))
    .transpose()
}

pub(super) fn put_provenance(
    rows: &mut dyn Rows,
    fpr: &str,
    p: &Provenance,
    overwrite: bool,
) -> Result<(), StateError> {
    let data = encode(p)?;
    let sql = if overwrite {
        "INSERT INTO provenance (fingerprint, data) VALUES ($1, $2)
         ON CONFLICT (fingerprint) DO UPDATE SET data = excluded.data"
    } else {
        "INSERT INTO provenance (fingerprint, data) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    };
    rows.execute(sql, &[Arg::Text(fpr), Arg::Text(&data)])?;
    Ok(())
}

fn get_peers(
    rows: &mut dyn Rows,
    identity: &str,
    addrs: &[String],
) -> Result<BTreeMap<String, PeerState>, StateError> {
    let mut out = BTreeMap::new();
    for a in addrs {
        let found = first(rows.query_text(
            "SELECT data FROM autocrypt_peers WHERE identity = $1 AND peer = $2",
            &[Arg::Text(identity), Arg::Text(a)],
        )?);
        if let Some(t) = found {
            out.insert(a.clone(), decode("autocrypt_peers", a, &t)?);
        }
    }
    Ok(out)
}

pub(super) fn put_peer(
    rows: &mut dyn Rows,
    identity: &str,
    peer: &str,
    state: &PeerState,
    overwrite: bool,
) -> Result<(), StateError> {
    let data = encode(state)?;
    let sql = if overwrite {
        "INSERT INTO autocrypt_peers (identity, peer, data) VALUES ($1, $2, $3)
         ON CONFLICT (identity, peer) DO UPDATE SET data = excluded.data"
    } else {
        "INSERT INTO autocrypt_peers (identity, peer, data) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING"
    };
    rows.execute(
        sql,
        &[Arg::Text(identity), Arg::Text(peer), Arg::Text(&data)],
    )?;
    Ok(())
}

impl State {
    /// Where the certificate `fpr` (lower-case hex) came from, if it was discovered.
    pub fn provenance(&self, fpr: &str) -> Result<Option<Provenance>, StateError> {
        self.tx(|rows| get_provenance(rows, fpr))
    }

    /// Every discovered certificate's provenance, by fingerprint.
    pub fn all_provenance(&self) -> Result<BTreeMap<String, Provenance>, StateError> {
        self.tx(|rows| {
            rows.query_text("SELECT fingerprint, data FROM provenance", &[])?
                .into_iter()
                .map(|r| {
                    let [fpr, data]: [String; 2] = r.try_into().map_err(|_| StateError::Query {
                        place: "provenance".into(),
                        message: "unexpected columns".into(),
                    })?;
                    let p = decode("provenance", &fpr, &data)?;
                    Ok((fpr, p))
                })
                .collect()
        })
    }

    /// Replaces the provenance of `fpr` by what `f` makes of the stored one (`None`:
    /// none stored, or remove it), in one transaction. Returns the new value.
    pub fn update_provenance(
        &self,
        fpr: &str,
        f: impl FnOnce(Option<Provenance>) -> Option<Provenance> + Send,
    ) -> Result<Option<Provenance>, StateError> {
        self.tx(|rows| {
            let old = get_provenance(rows, fpr)?;
            let had = old.is_some();
            let new = f(old);
            match &new {
                Some(p) => put_provenance(rows, fpr, p, true)?,
                None if had => {
                    rows.execute(
                        "DELETE FROM provenance WHERE fingerprint = $1",
                        &[Arg::Text(fpr)],
                    )?;
                }
                None => {}
            }
            Ok(new)
        })
    }

    /// Did `source` find nothing for `address` at or after `since` (Unix time)?
    pub fn recent_miss(&self, source: &str, address: &str, since: i64) -> Result<bool, StateError> {
        self.tx(|rows| {
            Ok(!rows
                .query_text(
                    "SELECT source FROM key_misses WHERE source = $1 AND address = $2 AND at >= $3",
                    &[Arg::Text(source), Arg::Text(address), Arg::Int(since)],
                )?
                .is_empty())
        })
    }

    /// Remembers that `source` found nothing for `address` at `at`; misses older than
    /// `prune_before` are dropped on the way, when given.
    pub fn remember_miss(
        &self,
        source: &str,
        address: &str,
        at: i64,
        prune_before: Option<i64>,
    ) -> Result<(), StateError> {
        self.tx(|rows| {
            if let Some(before) = prune_before {
                rows.execute("DELETE FROM key_misses WHERE at < $1", &[Arg::Int(before)])?;
            }
            rows.execute(
                "INSERT INTO key_misses (source, address, at) VALUES ($1, $2, $3)
                 ON CONFLICT (source, address) DO UPDATE SET at = excluded.at",
                &[Arg::Text(source), Arg::Text(address), Arg::Int(at)],
            )?;
            Ok(())
        })
    }

    /// Forgets every remembered miss (after a refresh, keys may have changed).
    pub fn forget_misses(&self) -> Result<(), StateError> {
        self.tx(|rows| rows.execute("DELETE FROM key_misses", &[]).map(|_| ()))
    }

    /// What `identity` knows about `peer` (both normalised).
    pub fn peer(&self, identity: &str, peer: &str) -> Result<Option<PeerState>, StateError> {
        let addrs = [peer.to_string()];
        self.tx(|rows| Ok(get_peers(rows, identity, &addrs)?.remove(peer)))
    }

    /// Loads what `identity` knows about `addrs`, lets `f` change it (and add peers),
    /// and writes back what changed, in one transaction.
    pub fn update_peers<R: Send>(
        &self,
        identity: &str,
        addrs: &[String],
        f: impl FnOnce(&mut BTreeMap<String, PeerState>) -> R + Send,
    ) -> Result<R, StateError> {
        self.tx(|rows| {
            let before = get_peers(rows, identity, addrs)?;
            let mut peers = before.clone();
            let out = f(&mut peers);
            for (addr, state) in &peers {
                if before.get(addr) != Some(state) {
                    put_peer(rows, identity, addr, state, true)?;
                }
            }
            Ok(out)
        })
    }
}
