//! The agent's durable state: one redb database (`<state_dir>/state.redb`, 0600, inside the
//! 0700 state directory, which is itself a protected path no domain can open).
//!
//! Each change is one ACID transaction, committed (fsync) before the agent acts on it: a domain
//! is reported sealed only once its record is on disk, so a crash or a restart never forgets
//! a live domain or its label. Opening takes the database's lock, so two agents cannot share it.

use std::{os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::Context;
use bulkhead_common::DomainId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::domains::{DomainRecord, DomainStore};

/// Live domains by id; the value is the record as JSON, so fields can be added compatibly.
const DOMAINS: TableDefinition<u64, &[u8]> = TableDefinition::new("domains");

pub const STATE_FILE: &str = "state.redb";

pub struct StateDb {
    pub(crate) db: Database,
}

impl StateDb {
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(STATE_FILE);
        // Created private before redb writes anything into it.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let db = Database::create(&path).with_context(|| {
            format!(
                "opening the state database {} (is another agent running?)",
                path.display()
            )
        })?;
        // Create the tables once, so readers never meet a missing table.
        let txn = db.begin_write()?;
        txn.open_table(DOMAINS)?;
        crate::broker::ledger::create_tables(&txn)?;
        txn.commit()?;
        Ok(Self { db })
    }
}

impl DomainStore for StateDb {
    fn put(&self, record: &DomainRecord) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(record).context("encoding a domain record")?;
        let txn = self.db.begin_write()?;
        txn.open_table(DOMAINS)?
            .insert(record.id, bytes.as_slice())?;
        txn.commit().context("committing a domain record")?;
        Ok(())
    }

    fn remove(&self, id: DomainId) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(DOMAINS)?.remove(id)?;
        txn.commit().context("committing a domain's end")?;
        Ok(())
    }

    /// Every stored record. One that does not decode is skipped with an error in the log
    /// rather than stopping the agent: the domain's tasks stay confined by their kernel labels
    /// either way; only its label and end record are lost.
    fn load(&self) -> anyhow::Result<Vec<DomainRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOMAINS)?;
        let mut records = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            match serde_json::from_slice::<DomainRecord>(bytes.value()) {
                Ok(record) if record.id == id.value() => records.push(record),
                Ok(record) => tracing::error!(
                    key = id.value(),
                    record = record.id,
                    "stored domain record filed under another id; ignored"
                ),
                Err(err) => tracing::error!(
                    domain = id.value(),
                    error = %err,
                    "stored domain record does not decode; its label is lost"
                ),
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::Label;

    fn record(id: DomainId, label: Option<&str>) -> DomainRecord {
        DomainRecord {
            id,
            label: label.map(|l| Label::try_from(l.to_owned()).unwrap()),
            created: 1_700_000_000,
            sealed_pid: 42,
            sealed_uid: 1000,
            task: None,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.put(&record(7, Some("etl:load"))).unwrap();
            db.put(&record(9, None)).unwrap();
            db.remove(9).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap(), [record(7, Some("etl:load"))]);
    }

    #[test]
    fn the_file_is_private_and_locked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _db = StateDb::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = StateDb::open(dir.path())
            .err()
            .expect("second open refused");
        assert!(
            format!("{second:#}").contains("another agent"),
            "{second:#}"
        );
    }

    #[test]
    fn an_undecodable_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.put(&record(1, Some("good"))).unwrap();
        let txn = db.db.begin_write().unwrap();
        txn.open_table(DOMAINS)
            .unwrap()
            .insert(2, b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(db.load().unwrap(), [record(1, Some("good"))]);
    }
}
