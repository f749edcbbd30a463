//! The embedded store: one SQLite file under the data directory.
//!
//! Journal mode WAL (readers never block the writer) with `synchronous = FULL`: every commit
//! syncs the WAL before it returns. NORMAL would only sync at checkpoints of the WAL, so a
//! power cut could take back commits already acknowledged to people; FULL costs one fsync per
//! commit, which group commit (one transaction per tick's worth of changes) pays once for all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use world::RegionId;

use crate::limits::{KEPT_CHECKPOINTS, SQLITE_BUSY_TIMEOUT_MS};
use crate::SCHEMA_VERSION;
use crate::{
    check_batch, check_checkpoint, check_owner, from_db, owners_of, to_db, Checkpoint, LogRecord, Store,
    StoreError,
};

/// Schema migrations, in order: entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE log (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        tick INTEGER NOT NULL,
        payload BLOB NOT NULL,
        checksum INTEGER NOT NULL,
        PRIMARY KEY (region_x, region_y, seq)
     ) WITHOUT ROWID;
     CREATE TABLE checkpoint (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        covers_seq INTEGER NOT NULL,
        tick INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        checksum INTEGER NOT NULL,
        PRIMARY KEY (region_x, region_y, covers_seq)
     );",
    // 2: owner tokens (fencing): the newest claim per region, and the token of each write.
    "CREATE TABLE region_owner (
        region_x INTEGER NOT NULL,
        region_y INTEGER NOT NULL,
        token INTEGER NOT NULL,
        PRIMARY KEY (region_x, region_y)
     ) WITHOUT ROWID;
     ALTER TABLE log ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE checkpoint ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;",
];

/// The file name of the store inside the data directory.
pub const SQLITE_FILE: &str = "terrane.sqlite";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, bringing its schema up to date.
    pub fn open_dir(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        SqliteStore::open(&dir.join(SQLITE_FILE))
    }

    /// Opens (creating if needed) the store in the file `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let err = sqlite_err(path);
        let mut conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS)).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(&err)?;
        migrate(&mut conn).map_err(|e| match e {
            Migration::TooNew(found) => StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION },
            Migration::Db(e) => err(e),
        })?;
        Ok(SqliteStore { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sqlite_err(&self.path)
    }
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.display().to_string(), source }
}

/// A blob column read as bytes whatever type a damaged row holds there: a value that is not a
/// blob then fails its checksum (a recovery finding) instead of failing the whole read.
fn any_bytes(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(index)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        ValueRef::Integer(i) => i.to_le_bytes().to_vec(),
        ValueRef::Real(f) => f.to_le_bytes().to_vec(),
        ValueRef::Null => Vec::new(),
    })
}

enum Migration {
    TooNew(u32),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for Migration {
    fn from(e: rusqlite::Error) -> Self {
        Migration::Db(e)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), Migration> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: Option<i64> =
        tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    let found = found.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
    if found > SCHEMA_VERSION {
        return Err(Migration::TooNew(found));
    }
    for step in &MIGRATIONS[found as usize..] {
        tx.execute_batch(step)?;
    }
    tx.execute("DELETE FROM schema_version", [])?;
    tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])?;
    tx.commit()?;
    Ok(())
}

/// The region's newest owner token as this transaction sees it (0: never claimed).
fn newest_owner(tx: &Connection, region: RegionId) -> rusqlite::Result<u64> {
    let token: Option<i64> = tx
        .query_row(
            "SELECT token FROM region_owner WHERE region_x = ?1 AND region_y = ?2",
            params![region.x, region.y],
            |r| r.get(0),
        )
        .optional()?;
    Ok(token.map_or(0, from_db))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

impl Store for SqliteStore {
    fn claim(&mut self, region: RegionId) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = sqlite_err(&path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        let token: i64 = tx
            .query_row(
                "INSERT INTO region_owner (region_x, region_y, token) VALUES (?1, ?2, 1)
                 ON CONFLICT (region_x, region_y) DO UPDATE SET token = token + 1
                 RETURNING token",
                params![region.x, region.y],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(from_db(token))
    }

    fn owner(&mut self, region: RegionId) -> Result<u64, StoreError> {
        let err = self.err();
        newest_owner(&self.conn, region).map_err(err)
    }

    fn append(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        check_batch(records)?;
        if records.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = sqlite_err(&path);
        // Immediate: the write lock is taken before the owners are read, so no claim can come
        // between the check and the commit.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        for (region, owner) in owners_of(records) {
            check_owner(region, owner, newest_owner(&tx, region).map_err(&err)?)?;
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO log (region_x, region_y, seq, tick, payload, checksum, owner)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            for r in records {
                insert
                    .execute(params![
                        r.region.x,
                        r.region.y,
                        to_db(r.seq),
                        to_db(r.tick),
                        r.payload,
                        to_db(r.checksum()),
                        to_db(r.owner)
                    ])
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::Conflict { region: r.region, seq: r.seq }
                        } else {
                            err(e)
                        }
                    })?;
            }
        }
        tx.commit().map_err(&err)
    }

    fn put_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        check_checkpoint(c)?;
        let path = self.path.clone();
        let err = sqlite_err(&path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        check_owner(c.region, c.owner, newest_owner(&tx, c.region).map_err(&err)?)?;
        let (x, y) = (c.region.x, c.region.y);
        tx.execute(
            "INSERT OR REPLACE INTO checkpoint (region_x, region_y, covers_seq, tick, bytes, checksum, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![x, y, to_db(c.covers_seq), to_db(c.tick), c.bytes, to_db(c.checksum()), to_db(c.owner)],
        )
        .map_err(&err)?;
        tx.execute(
            "DELETE FROM checkpoint WHERE region_x = ?1 AND region_y = ?2 AND covers_seq NOT IN
               (SELECT covers_seq FROM checkpoint WHERE region_x = ?1 AND region_y = ?2
                ORDER BY covers_seq DESC LIMIT ?3)",
            params![x, y, KEPT_CHECKPOINTS as i64],
        )
        .map_err(&err)?;
        let kept: Vec<i64> = {
            let mut q = tx
                .prepare("SELECT covers_seq FROM checkpoint WHERE region_x = ?1 AND region_y = ?2")
                .map_err(&err)?;
            let rows = q.query_map(params![x, y], |r| r.get(0)).map_err(&err)?;
            rows.collect::<Result<_, _>>().map_err(&err)?
        };
        if kept.len() >= KEPT_CHECKPOINTS {
            // Only what every kept checkpoint covers may go: the older one may be needed if the
            // newer one turns out damaged, and it replays the log after itself.
            let covered_by_all = kept.iter().copied().min().unwrap_or(0);
            tx.execute(
                "DELETE FROM log WHERE region_x = ?1 AND region_y = ?2 AND seq <= ?3",
                params![x, y, covered_by_all],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    fn regions(&mut self) -> Result<Vec<RegionId>, StoreError> {
        let err = self.err();
        let mut q = self
            .conn
            .prepare(
                "SELECT region_x, region_y FROM checkpoint UNION SELECT region_x, region_y FROM log
                 ORDER BY 1, 2",
            )
            .map_err(&err)?;
        let rows = q.query_map([], |r| Ok(RegionId::new(r.get(0)?, r.get(1)?))).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn cut_log(&mut self, region: RegionId, seq: u64) -> Result<(), StoreError> {
        let err = self.err();
        self.conn
            .execute(
                "DELETE FROM log WHERE region_x = ?1 AND region_y = ?2 AND seq > ?3",
                params![region.x, region.y, to_db(seq)],
            )
            .map_err(&err)?;
        Ok(())
    }

    fn forget(&mut self, region: RegionId) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = sqlite_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        // The owner token stays: tokens only grow, so a fenced writer stays fenced.
        for table in ["log", "checkpoint"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE region_x = ?1 AND region_y = ?2"),
                params![region.x, region.y],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    fn raw_checkpoints(&mut self, region: RegionId) -> Result<Vec<(Checkpoint, u64)>, StoreError> {
        let err = self.err();
        let mut q = self
            .conn
            .prepare(
                "SELECT covers_seq, tick, bytes, checksum, owner FROM checkpoint
                 WHERE region_x = ?1 AND region_y = ?2 ORDER BY covers_seq DESC",
            )
            .map_err(&err)?;
        let rows = q
            .query_map(params![region.x, region.y], |r| {
                Ok((
                    Checkpoint {
                        region,
                        covers_seq: from_db(r.get(0)?),
                        tick: from_db(r.get(1)?),
                        bytes: any_bytes(r, 2)?,
                        owner: from_db(r.get(4)?),
                    },
                    from_db(r.get(3)?),
                ))
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    fn raw_log(
        &mut self,
        region: RegionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(LogRecord, u64)>, StoreError> {
        let err = self.err();
        let mut q = self
            .conn
            .prepare(
                "SELECT seq, tick, payload, checksum, owner FROM log
                 WHERE region_x = ?1 AND region_y = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )
            .map_err(&err)?;
        let rows = q
            .query_map(params![region.x, region.y, to_db(after), limit as i64], |r| {
                Ok((
                    LogRecord {
                        region,
                        seq: from_db(r.get(0)?),
                        tick: from_db(r.get(1)?),
                        payload: any_bytes(r, 2)?,
                        owner: from_db(r.get(4)?),
                    },
                    from_db(r.get(3)?),
                ))
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }
}
