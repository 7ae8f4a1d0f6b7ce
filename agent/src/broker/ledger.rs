//! The token ledger in the state database: every token handed out (by `jti`), every revocation,
//! and which tokens belong to which domain.
//!
//! Each change is one committed transaction before the broker acts on it: a token exists
//! outside the agent only once its `jti` is on disk, and a revocation is answered only once it
//! is. Entries are pruned once their token has expired (plus the verification leeway): an
//! expired token is refused on its `exp` alone, so the ledger holds live tokens only and stays
//! bounded under a steady load.

use anyhow::Context;
use bulkhead_common::DomainId;
use redb::{
    MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{
    group_commit::GroupCommit,
    mint::{Issued, IssuedRegistry},
};
use crate::state::StateDb;

/// Every token the broker handed out, by jti (JSON [`Issued`]).
const ISSUED: TableDefinition<&str, &[u8]> = TableDefinition::new("issued");
/// Revoked tokens, by jti (JSON [`Revoked`]).
const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked");
/// The jtis of each domain's tokens, to revoke them all when the domain ends.
const DOMAIN_TOKENS: MultimapTableDefinition<u64, &str> =
    MultimapTableDefinition::new("domain_tokens");

pub fn create_tables(txn: &WriteTransaction) -> anyhow::Result<()> {
    txn.open_table(ISSUED)?;
    txn.open_table(REVOKED)?;
    txn.open_multimap_table(DOMAIN_TOKENS)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// An operator or the owning supervisor asked.
    Requested,
    /// The domain's last task exited.
    DomainEnded,
    /// The caller the token was minted for vanished before the answer could be sent.
    CallerGone,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::DomainEnded => "domain_ended",
            Self::CallerGone => "caller_gone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub jti: String,
    /// The token's own expiry: the revocation matters until then.
    pub exp: u64,
    pub reason: RevokeReason,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// What the ledger knows of a `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStanding {
    Live(Issued),
    Revoked(Issued, Revoked),
    /// Never issued here, or expired and pruned.
    Unknown,
}

impl IssuedRegistry for StateDb {
    fn record(&self, issued: &Issued) -> anyhow::Result<()> {
        self.record_issued(std::slice::from_ref(issued))
    }
}

impl StateDb {
    /// Records issued tokens in one durable transaction: all of them, or none.
    fn record_issued(&self, batch: &[Issued]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut issued_table = txn.open_table(ISSUED)?;
            let mut domain_tokens = txn.open_multimap_table(DOMAIN_TOKENS)?;
            for issued in batch {
                let bytes =
                    serde_json::to_vec(issued).context("encoding an issued-token record")?;
                issued_table.insert(issued.jti.as_str(), bytes.as_slice())?;
                domain_tokens.insert(issued.domain, issued.jti.as_str())?;
            }
        }
        txn.commit().context("committing issued-token records")?;
        Ok(())
    }
}

/// The ledger as the broker records into it: concurrent mints share one durable commit
/// (see group_commit.rs), and each mint is answered only once its own `jti` is on disk.
pub struct GroupedLedger {
    group: GroupCommit<Issued>,
}

impl GroupedLedger {
    pub fn new(db: Arc<StateDb>) -> Self {
        Self {
            group: GroupCommit::new(move |batch: &[Issued]| db.record_issued(batch)),
        }
    }
}

impl IssuedRegistry for GroupedLedger {
    fn record(&self, issued: &Issued) -> anyhow::Result<()> {
        self.group.submit(issued.clone())
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("decoding a stored {what} record"))
}

impl StateDb {
    pub fn standing(&self, jti: &str) -> anyhow::Result<TokenStanding> {
        let txn = self.db.begin_read()?;
        let Some(issued) = txn.open_table(ISSUED)?.get(jti)? else {
            return Ok(TokenStanding::Unknown);
        };
        let issued: Issued = decode(issued.value(), "issued-token")?;
        Ok(match txn.open_table(REVOKED)?.get(jti)? {
            Some(revoked) => TokenStanding::Revoked(issued, decode(revoked.value(), "revocation")?),
            None => TokenStanding::Live(issued),
        })
    }

    /// Revokes one token. Returns what it was before: `Unknown` changes nothing.
    pub fn revoke(
        &self,
        jti: &str,
        reason: RevokeReason,
        now: u64,
    ) -> anyhow::Result<TokenStanding> {
        let standing = self.standing(jti)?;
        if let TokenStanding::Live(issued) = &standing {
            let txn = self.db.begin_write()?;
            insert_revocation(&txn, issued, reason, now)?;
            txn.commit().context("committing a revocation")?;
        }
        Ok(standing)
    }

    /// Revokes every live token of `domain` in one transaction; returns how many.
    pub fn revoke_domain(
        &self,
        domain: DomainId,
        reason: RevokeReason,
        now: u64,
    ) -> anyhow::Result<usize> {
        let live: Vec<Issued> = self
            .domain_tokens(domain)?
            .into_iter()
            .filter_map(|standing| match standing {
                TokenStanding::Live(issued) => Some(issued),
                _ => None,
            })
            .collect();
        if live.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        for issued in &live {
            insert_revocation(&txn, issued, reason, now)?;
        }
        txn.commit().context("committing a domain's revocations")?;
        Ok(live.len())
    }

    /// The standing of every token of `domain` still in the ledger.
    pub fn domain_tokens(&self, domain: DomainId) -> anyhow::Result<Vec<TokenStanding>> {
        let jtis: Vec<String> = {
            let txn = self.db.begin_read()?;
            let index = txn.open_multimap_table(DOMAIN_TOKENS)?;
            index
                .get(domain)?
                .map(|jti| jti.map(|jti| jti.value().to_owned()))
                .collect::<Result<_, _>>()?
        };
        jtis.iter().map(|jti| self.standing(jti)).collect()
    }

    /// Every domain that has tokens in the ledger.
    pub fn domains_with_tokens(&self) -> anyhow::Result<Vec<DomainId>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_multimap_table(DOMAIN_TOKENS)?;
        let mut domains = Vec::new();
        for entry in index.iter()? {
            domains.push(entry?.0.value());
        }
        Ok(domains)
    }

    /// Revocations of tokens that have not expired yet, for validators that poll.
    pub fn revocations(&self) -> anyhow::Result<Vec<Revoked>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REVOKED)?;
        let mut revoked = Vec::new();
        for entry in table.iter()? {
            revoked.push(decode(entry?.1.value(), "revocation")?);
        }
        Ok(revoked)
    }

    /// Forgets every token that expired before `cutoff` (its issue record, revocation and
    /// index entry): such a token is refused on its `exp` alone. Returns how many.
    pub fn prune(&self, cutoff: u64) -> anyhow::Result<usize> {
        let txn = self.db.begin_write()?;
        let mut expired: Vec<Issued> = Vec::new();
        {
            let mut issued = txn.open_table(ISSUED)?;
            for entry in issued.extract_if(|_, bytes| {
                // An undecodable record can never be checked; prune it rather than keep it
                // forever.
                serde_json::from_slice::<Issued>(bytes).map_or(true, |record| record.exp < cutoff)
            })? {
                let (jti, bytes) = entry?;
                match serde_json::from_slice::<Issued>(bytes.value()) {
                    Ok(record) => expired.push(record),
                    Err(err) => {
                        tracing::error!(jti = jti.value(), error = %err, "pruned an undecodable issued-token record")
                    }
                }
            }
            let mut revoked = txn.open_table(REVOKED)?;
            let mut index = txn.open_multimap_table(DOMAIN_TOKENS)?;
            for record in &expired {
                revoked.remove(record.jti.as_str())?;
                index.remove(record.domain, record.jti.as_str())?;
            }
        }
        txn.commit()
            .context("committing the pruning of expired tokens")?;
        Ok(expired.len())
    }

    /// How many tokens the ledger holds (live or revoked, not yet pruned).
    pub fn ledger_len(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(ISSUED)?.len()?)
    }
}

fn insert_revocation(
    txn: &WriteTransaction,
    issued: &Issued,
    reason: RevokeReason,
    now: u64,
) -> anyhow::Result<()> {
    let revoked = Revoked {
        jti: issued.jti.clone(),
        exp: issued.exp,
        reason,
        at: now,
    };
    let bytes = serde_json::to_vec(&revoked).context("encoding a revocation")?;
    txn.open_table(REVOKED)?
        .insert(issued.jti.as_str(), bytes.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(jti: &str, domain: DomainId, exp: u64) -> Issued {
        Issued {
            jti: jti.to_owned(),
            domain,
            sub: "ti".to_owned(),
            exp,
        }
    }

    #[test]
    fn issued_and_revoked_tokens_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.record(&issued("a", 7, 2000)).unwrap();
            db.record(&issued("b", 7, 2000)).unwrap();
            assert!(matches!(
                db.revoke("a", RevokeReason::Requested, 1000).unwrap(),
                TokenStanding::Live(_)
            ));
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert!(
            matches!(db.standing("a").unwrap(), TokenStanding::Revoked(_, r) if r.reason == RevokeReason::Requested)
        );
        assert_eq!(
            db.standing("b").unwrap(),
            TokenStanding::Live(issued("b", 7, 2000))
        );
        assert_eq!(db.standing("never").unwrap(), TokenStanding::Unknown);
    }

    #[test]
    fn revoking_unknown_or_revoked_tokens_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.revoke("never", RevokeReason::Requested, 1).unwrap(),
            TokenStanding::Unknown
        );
        assert!(db.revocations().unwrap().is_empty());
        db.record(&issued("a", 1, 2000)).unwrap();
        db.revoke("a", RevokeReason::DomainEnded, 5).unwrap();
        db.revoke("a", RevokeReason::Requested, 6).unwrap();
        let revoked = db.revocations().unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(
            (revoked[0].reason, revoked[0].at),
            (RevokeReason::DomainEnded, 5)
        );
    }

    #[test]
    fn a_domain_end_revokes_its_tokens_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.record(&issued("a1", 1, 2000)).unwrap();
        db.record(&issued("a2", 1, 2000)).unwrap();
        db.record(&issued("b1", 2, 2000)).unwrap();
        assert_eq!(
            db.revoke_domain(1, RevokeReason::DomainEnded, 10).unwrap(),
            2
        );
        assert_eq!(
            db.revoke_domain(1, RevokeReason::DomainEnded, 11).unwrap(),
            0
        );
        assert!(matches!(
            db.standing("a2").unwrap(),
            TokenStanding::Revoked(..)
        ));
        assert!(matches!(db.standing("b1").unwrap(), TokenStanding::Live(_)));
    }

    #[test]
    fn pruning_forgets_only_expired_tokens_and_keeps_the_ledger_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        // A steady load: each round issues 50 tokens living 100 s, then prunes.
        for round in 0..20u64 {
            let now = round * 100;
            for n in 0..50 {
                db.record(&issued(&format!("{round}-{n}"), round, now + 100))
                    .unwrap();
            }
            db.revoke(&format!("{round}-0"), RevokeReason::Requested, now)
                .unwrap();
            db.prune(now).unwrap();
            assert!(db.ledger_len().unwrap() <= 100, "round {round}");
            assert!(db.revocations().unwrap().len() <= 2, "round {round}");
        }
        assert!(db.domain_tokens(0).unwrap().is_empty());
        assert_eq!(db.domain_tokens(19).unwrap().len(), 50);
        assert!(matches!(
            db.standing("19-1").unwrap(),
            TokenStanding::Live(_)
        ));
    }
}
