//! The cluster store: PostgreSQL through the synchronous `postgres` client, which fits the
//! store's own writer thread (it must not be called from inside a tokio runtime).
//!
//! Every commit is durable when it returns (the server's default `synchronous_commit = on`).
//! Schema migrations run under a transaction-scoped advisory lock, so hosts starting together
//! do not race each other.

use std::time::Duration;

use postgres::{Client, Config, NoTls};
use world::RegionId;

use crate::limits::{KEPT_CHECKPOINTS, PG_CONNECT_TIMEOUT_S};
use crate::SCHEMA_VERSION;
use crate::{
    check_batch, check_checkpoint, check_owner, from_db, owners_of, to_db, Checkpoint, LogRecord, Store,
    StoreError,
};

/// Schema migrations, in order: entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE terrane_log (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        seq BIGINT NOT NULL,
        tick BIGINT NOT NULL,
        payload BYTEA NOT NULL,
        checksum BIGINT NOT NULL,
        PRIMARY KEY (region_x, region_y, seq)
     );
     CREATE TABLE terrane_checkpoint (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        covers_seq BIGINT NOT NULL,
        tick BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        checksum BIGINT NOT NULL,
        PRIMARY KEY (region_x, region_y, covers_seq)
     );",
    // 2: owner tokens (fencing): the newest claim per region, and the token of each write.
    "CREATE TABLE terrane_region_owner (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        token BIGINT NOT NULL,
        PRIMARY KEY (region_x, region_y)
     );
     ALTER TABLE terrane_log ADD COLUMN owner BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE terrane_checkpoint ADD COLUMN owner BIGINT NOT NULL DEFAULT 0;",
];

/// Key of the advisory lock held while migrating the schema ("terrane" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_65_72_72_61_6e_65;

pub struct PgStore {
    client: Client,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), bringing the schema up to date.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let config: Config = url.parse()?;
        PgStore::connect_with(config)
    }

    /// Like [`PgStore::connect`], with the tables in `schema` (created if needed): lets tests
    /// and several worlds share one server.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        let mut config: Config = url.parse()?;
        let mut setup = PgStore::connect_raw(&config)?;
        setup.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.replace('"', "")))?;
        drop(setup);
        config.options(&format!("-c search_path={}", schema.replace([' ', '"', '\\'], "")));
        PgStore::connect_with(config)
    }

    fn connect_raw(config: &Config) -> Result<Client, StoreError> {
        let mut config = config.clone();
        config.connect_timeout(Duration::from_secs(PG_CONNECT_TIMEOUT_S));
        Ok(config.connect(NoTls)?)
    }

    fn connect_with(config: Config) -> Result<PgStore, StoreError> {
        let mut client = PgStore::connect_raw(&config)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS terrane_schema_version (version INTEGER NOT NULL)")?;
        let found: Option<i32> =
            tx.query_opt("SELECT version FROM terrane_schema_version", &[])?.map(|r| r.get(0));
        let found = found.unwrap_or(0).max(0) as u32;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        for step in &MIGRATIONS[found as usize..] {
            tx.batch_execute(step)?;
        }
        tx.execute("DELETE FROM terrane_schema_version", &[])?;
        tx.execute("INSERT INTO terrane_schema_version (version) VALUES ($1)", &[&(SCHEMA_VERSION as i32)])?;
        tx.commit()?;
        Ok(PgStore { client })
    }
}

fn xy(region: RegionId) -> (i32, i32) {
    (i32::from(region.x), i32::from(region.y))
}

fn region_of(x: i32, y: i32) -> RegionId {
    RegionId::new(x.clamp(0, i32::from(u16::MAX)) as u16, y.clamp(0, i32::from(u16::MAX)) as u16)
}

/// The fence inside a writing transaction: the region's owner row is locked in share mode
/// (created at token 0 if missing), so a claim waits for this transaction to end, and this
/// transaction sees any claim committed before it.
fn check_owner_locked(
    tx: &mut postgres::Transaction<'_>,
    region: RegionId,
    owner: u64,
) -> Result<(), StoreError> {
    let (x, y) = xy(region);
    tx.execute(
        "INSERT INTO terrane_region_owner (region_x, region_y, token) VALUES ($1, $2, 0)
         ON CONFLICT (region_x, region_y) DO NOTHING",
        &[&x, &y],
    )?;
    let newest: i64 = tx
        .query_one(
            "SELECT token FROM terrane_region_owner WHERE region_x = $1 AND region_y = $2 FOR SHARE",
            &[&x, &y],
        )?
        .get(0);
    check_owner(region, owner, from_db(newest))
}

impl Store for PgStore {
    fn claim(&mut self, region: RegionId) -> Result<u64, StoreError> {
        let (x, y) = xy(region);
        let token: i64 = self
            .client
            .query_one(
                "INSERT INTO terrane_region_owner (region_x, region_y, token) VALUES ($1, $2, 1)
                 ON CONFLICT (region_x, region_y)
                 DO UPDATE SET token = terrane_region_owner.token + 1
                 RETURNING token",
                &[&x, &y],
            )?
            .get(0);
        Ok(from_db(token))
    }

    fn owner(&mut self, region: RegionId) -> Result<u64, StoreError> {
        let (x, y) = xy(region);
        let row = self.client.query_opt(
            "SELECT token FROM terrane_region_owner WHERE region_x = $1 AND region_y = $2",
            &[&x, &y],
        )?;
        Ok(row.map_or(0, |r| from_db(r.get(0))))
    }

    fn append(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        check_batch(records)?;
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.client.transaction()?;
        for (region, owner) in owners_of(records) {
            check_owner_locked(&mut tx, region, owner)?;
        }
        let insert = tx.prepare(
            "INSERT INTO terrane_log (region_x, region_y, seq, tick, payload, checksum, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        for r in records {
            let (x, y) = xy(r.region);
            let result = tx.execute(
                &insert,
                &[&x, &y, &to_db(r.seq), &to_db(r.tick), &r.payload, &to_db(r.checksum()), &to_db(r.owner)],
            );
            if let Err(e) = result {
                if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(StoreError::Conflict { region: r.region, seq: r.seq });
                }
                return Err(e.into());
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn put_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        check_checkpoint(c)?;
        let (x, y) = xy(c.region);
        let mut tx = self.client.transaction()?;
        check_owner_locked(&mut tx, c.region, c.owner)?;
        tx.execute(
            "INSERT INTO terrane_checkpoint (region_x, region_y, covers_seq, tick, bytes, checksum, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (region_x, region_y, covers_seq)
             DO UPDATE SET tick = EXCLUDED.tick, bytes = EXCLUDED.bytes, checksum = EXCLUDED.checksum,
                owner = EXCLUDED.owner",
            &[&x, &y, &to_db(c.covers_seq), &to_db(c.tick), &c.bytes, &to_db(c.checksum()), &to_db(c.owner)],
        )?;
        tx.execute(
            "DELETE FROM terrane_checkpoint WHERE region_x = $1 AND region_y = $2 AND covers_seq NOT IN
               (SELECT covers_seq FROM terrane_checkpoint WHERE region_x = $1 AND region_y = $2
                ORDER BY covers_seq DESC LIMIT $3)",
            &[&x, &y, &(KEPT_CHECKPOINTS as i64)],
        )?;
        let kept: Vec<i64> = tx
            .query(
                "SELECT covers_seq FROM terrane_checkpoint WHERE region_x = $1 AND region_y = $2",
                &[&x, &y],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if kept.len() >= KEPT_CHECKPOINTS {
            // Only what every kept checkpoint covers may go (see the SQLite store).
            let covered_by_all = kept.iter().copied().min().unwrap_or(0);
            tx.execute(
                "DELETE FROM terrane_log WHERE region_x = $1 AND region_y = $2 AND seq <= $3",
                &[&x, &y, &covered_by_all],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn regions(&mut self) -> Result<Vec<RegionId>, StoreError> {
        let rows = self.client.query(
            "SELECT region_x, region_y FROM terrane_checkpoint
             UNION SELECT region_x, region_y FROM terrane_log ORDER BY 1, 2",
            &[],
        )?;
        Ok(rows.iter().map(|r| region_of(r.get(0), r.get(1))).collect())
    }

    fn cut_log(&mut self, region: RegionId, seq: u64) -> Result<(), StoreError> {
        let (x, y) = xy(region);
        self.client.execute(
            "DELETE FROM terrane_log WHERE region_x = $1 AND region_y = $2 AND seq > $3",
            &[&x, &y, &to_db(seq)],
        )?;
        Ok(())
    }

    fn forget(&mut self, region: RegionId) -> Result<(), StoreError> {
        let (x, y) = xy(region);
        let mut tx = self.client.transaction()?;
        tx.execute("DELETE FROM terrane_log WHERE region_x = $1 AND region_y = $2", &[&x, &y])?;
        tx.execute("DELETE FROM terrane_checkpoint WHERE region_x = $1 AND region_y = $2", &[&x, &y])?;
        tx.commit()?;
        Ok(())
    }

    fn raw_checkpoints(&mut self, region: RegionId) -> Result<Vec<(Checkpoint, u64)>, StoreError> {
        let (x, y) = xy(region);
        let rows = self.client.query(
            "SELECT covers_seq, tick, bytes, checksum, owner FROM terrane_checkpoint
             WHERE region_x = $1 AND region_y = $2 ORDER BY covers_seq DESC",
            &[&x, &y],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    Checkpoint {
                        region,
                        covers_seq: from_db(r.get(0)),
                        tick: from_db(r.get(1)),
                        bytes: r.get(2),
                        owner: from_db(r.get(4)),
                    },
                    from_db(r.get(3)),
                )
            })
            .collect())
    }

    fn raw_log(
        &mut self,
        region: RegionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(LogRecord, u64)>, StoreError> {
        let (x, y) = xy(region);
        let rows = self.client.query(
            "SELECT seq, tick, payload, checksum, owner FROM terrane_log
             WHERE region_x = $1 AND region_y = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            &[&x, &y, &to_db(after), &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    LogRecord {
                        region,
                        seq: from_db(r.get(0)),
                        tick: from_db(r.get(1)),
                        payload: r.get(2),
                        owner: from_db(r.get(4)),
                    },
                    from_db(r.get(3)),
                )
            })
            .collect())
    }
}
