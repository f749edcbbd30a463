//! The same behaviour tests against both backends: SQLite in a temporary directory, and
//! PostgreSQL at `TERRANE_TEST_POSTGRES` (started by scripts/services/postgres.sh), each test in
//! a schema of its own.

use store::limits::MAX_APPEND_RECORDS;
use store::{Checkpoint, LogRecord, PgStore, SqliteStore, Store, StoreError};
use world::RegionId;

const R: RegionId = RegionId::new(3, 4);

fn record(region: RegionId, seq: u64) -> LogRecord {
    LogRecord {
        region,
        seq,
        tick: seq * 10,
        payload: format!("change {seq} of {region}").into_bytes(),
        owner: 0,
    }
}

fn checkpoint(covers_seq: u64, body: &str) -> Checkpoint {
    Checkpoint { region: R, covers_seq, tick: covers_seq * 10, bytes: body.as_bytes().repeat(100), owner: 0 }
}

fn owned(mut r: LogRecord, owner: u64) -> LogRecord {
    r.owner = owner;
    r
}

fn seqs(log: &[LogRecord]) -> Vec<u64> {
    log.iter().map(|r| r.seq).collect()
}

/// A backend under test plus a way to damage what it stored, as a disk or a bug would.
trait Backend {
    fn store(&mut self) -> &mut dyn Store;
    /// Runs SQL against the raw tables (named `log` and `checkpoint` in the SQL given).
    fn corrupt(&mut self, sql: &str);
    /// Opens the same storage again, as after a restart.
    fn reopen(&mut self);
    /// Flips the bits of the first byte of a stored checkpoint's snapshot.
    fn flip_checkpoint_byte(&mut self, covers_seq: u64);
    /// Sets the stored schema version to 99 and opens again: the error it gives.
    fn bump_schema_and_reopen(&mut self) -> StoreError;
    /// A second connection to the same storage: another host sharing the store.
    fn second(&mut self) -> Box<dyn Store>;
}

struct Sqlite {
    dir: tempfile::TempDir,
    store: Option<SqliteStore>,
}

impl Backend for Sqlite {
    fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut().expect("open")
    }
    fn corrupt(&mut self, sql: &str) {
        self.store = None;
        let conn = rusqlite::Connection::open(self.dir.path().join("terrane.sqlite")).expect("open raw");
        conn.execute_batch(sql).expect("corrupting SQL");
        drop(conn);
        self.reopen();
    }
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(SqliteStore::open_dir(self.dir.path()).expect("reopen"));
    }
    fn flip_checkpoint_byte(&mut self, covers_seq: u64) {
        self.corrupt(&format!(
            "UPDATE checkpoint SET bytes = X'FF' || substr(bytes, 2) WHERE covers_seq = {covers_seq};"
        ));
    }
    fn bump_schema_and_reopen(&mut self) -> StoreError {
        self.store = None;
        let conn = rusqlite::Connection::open(self.dir.path().join("terrane.sqlite")).expect("open raw");
        conn.execute_batch("UPDATE schema_version SET version = 99").expect("bump");
        drop(conn);
        SqliteStore::open_dir(self.dir.path()).err().expect("a newer schema must be refused")
    }
    fn second(&mut self) -> Box<dyn Store> {
        Box::new(SqliteStore::open_dir(self.dir.path()).expect("second connection"))
    }
}

fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_dir(dir.path()).expect("open store");
    Sqlite { dir, store: Some(store) }
}

struct Pg {
    url: String,
    schema: String,
    store: Option<PgStore>,
}

impl Backend for Pg {
    fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut().expect("open")
    }
    fn corrupt(&mut self, sql: &str) {
        let sql = sql.replace(" log ", " terrane_log ").replace(" checkpoint ", " terrane_checkpoint ");
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("raw connection");
        c.batch_execute(&format!("SET search_path = {}; {sql}", self.schema)).expect("corrupting SQL");
        self.reopen();
    }
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(PgStore::connect_in_schema(&self.url, &self.schema).expect("reconnect"));
    }
    fn flip_checkpoint_byte(&mut self, covers_seq: u64) {
        self.corrupt(&format!(
            "UPDATE checkpoint SET bytes = set_byte(bytes, 0, 255 - get_byte(bytes, 0)) \
             WHERE covers_seq = {covers_seq};"
        ));
    }
    fn bump_schema_and_reopen(&mut self) -> StoreError {
        self.store = None;
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("raw connection");
        c.batch_execute(&format!("UPDATE {}.terrane_schema_version SET version = 99", self.schema))
            .expect("bump");
        PgStore::connect_in_schema(&self.url, &self.schema).err().expect("a newer schema must be refused")
    }
    fn second(&mut self) -> Box<dyn Store> {
        Box::new(PgStore::connect_in_schema(&self.url, &self.schema).expect("second connection"))
    }
}

fn pg(test: &str) -> Pg {
    let Ok(url) = std::env::var("TERRANE_TEST_POSTGRES") else {
        panic!(
            "TERRANE_TEST_POSTGRES is not set: run the tests through ./scripts/test, which starts a \
             PostgreSQL server for them (scripts/services/postgres.sh)"
        );
    };
    let schema = format!("t_{test}_{}", std::process::id());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect to TERRANE_TEST_POSTGRES");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).expect("fresh schema");
    let store = PgStore::connect_in_schema(&url, &schema).expect("open PostgreSQL store");
    Pg { url, schema, store: Some(store) }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[test] fn $name() { super::$name(&mut super::sqlite()); })*
        }
        mod postgres_backend {
            $(#[test] fn $name() { super::$name(&mut super::pg(stringify!($name))); })*
        }
    };
}

both_backends!(
    appended_records_come_back_in_order_after_a_reopen,
    an_append_is_all_or_nothing,
    a_sequence_number_is_written_once,
    a_checkpoint_keeps_two_and_truncates_what_both_cover,
    a_flipped_byte_in_the_newest_checkpoint_falls_back_to_the_previous_one_and_its_log,
    a_corrupt_log_record_ends_the_run_and_later_good_records_are_not_used,
    a_truncated_log_tail_is_cut_and_the_rest_recovered,
    a_gap_in_the_log_ends_the_run,
    regions_are_listed_and_forgotten,
    a_newer_schema_is_refused,
    oversized_batches_are_refused,
    a_claim_fences_the_previous_owners_appends_and_checkpoints,
    a_fenced_region_refuses_the_whole_batch_and_others_go_through_alone,
    owner_tokens_only_grow_across_reopen_and_forget,
);

fn appended_records_come_back_in_order_after_a_reopen(b: &mut dyn Backend) {
    let other = RegionId::new(9, 9);
    b.store().append(&[record(R, 1), record(other, 1), record(R, 2)]).unwrap();
    b.store().append(&[record(R, 3)]).unwrap();
    b.reopen();
    let got = b.store().recover(R).unwrap();
    assert_eq!(got.log, vec![record(R, 1), record(R, 2), record(R, 3)]);
    assert!(got.checkpoints.is_empty() && got.damage.is_empty());
    assert_eq!(got.last_seq(), 3);
    assert_eq!(seqs(&b.store().recover(other).unwrap().log), vec![1]);
    assert!(b.store().recover(RegionId::new(0, 0)).unwrap().is_empty());
}

fn an_append_is_all_or_nothing(b: &mut dyn Backend) {
    b.store().append(&[record(R, 1)]).unwrap();
    // The batch's second record collides with a stored one: the first must not stay either.
    let err = b.store().append(&[record(R, 2), record(R, 1)]).unwrap_err();
    assert!(matches!(err, StoreError::OutOfOrder { .. }), "{err}");
    let err = b.store().append(&[record(RegionId::new(1, 1), 1), record(R, 1)]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { seq: 1, .. }), "{err}");
    assert!(b.store().recover(RegionId::new(1, 1)).unwrap().is_empty());
    assert_eq!(seqs(&b.store().recover(R).unwrap().log), vec![1]);
}

fn a_sequence_number_is_written_once(b: &mut dyn Backend) {
    b.store().append(&[record(R, 1), record(R, 2)]).unwrap();
    let mut twin = record(R, 2);
    twin.payload = b"a second writer".to_vec();
    let err = b.store().append(&[twin]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { seq: 2, .. }), "{err}");
    assert_eq!(b.store().recover(R).unwrap().log[1], record(R, 2));
}

fn a_checkpoint_keeps_two_and_truncates_what_both_cover(b: &mut dyn Backend) {
    let records: Vec<LogRecord> = (1..=10).map(|s| record(R, s)).collect();
    b.store().append(&records).unwrap();
    b.store().put_checkpoint(&checkpoint(4, "first")).unwrap();
    // One checkpoint: nothing to fall back on, so the whole log stays.
    assert_eq!(b.store().raw_log(R, 0, 100).unwrap().len(), 10);
    b.store().put_checkpoint(&checkpoint(7, "second")).unwrap();
    // Both cover 1..=4: those go; 5..=7 stay for the older one.
    assert_eq!(seqs(&b.store().recover(R).unwrap().log), vec![5, 6, 7, 8, 9, 10]);
    b.store().put_checkpoint(&checkpoint(9, "third")).unwrap();
    let got = b.store().recover(R).unwrap();
    assert_eq!(got.checkpoints.iter().map(|c| c.covers_seq).collect::<Vec<_>>(), vec![9, 7]);
    assert_eq!(got.checkpoints[0], checkpoint(9, "third"));
    assert_eq!(seqs(&got.log), vec![8, 9, 10]);
    assert_eq!(got.last_seq(), 10);
    assert!(got.damage.is_empty());
}

fn a_flipped_byte_in_the_newest_checkpoint_falls_back_to_the_previous_one_and_its_log(b: &mut dyn Backend) {
    b.store().append(&(1..=6).map(|s| record(R, s)).collect::<Vec<_>>()).unwrap();
    b.store().put_checkpoint(&checkpoint(2, "older")).unwrap();
    b.store().put_checkpoint(&checkpoint(5, "newer")).unwrap();
    // Flip the first byte of the newest checkpoint's snapshot.
    b.flip_checkpoint_byte(5);
    let got = b.store().recover(R).unwrap();
    assert_eq!(got.checkpoints, vec![checkpoint(2, "older")]);
    assert_eq!(seqs(&got.log), vec![3, 4, 5, 6], "the older checkpoint replays the log after it");
    assert_eq!(got.damage.len(), 1, "{:?}", got.damage);
    assert!(got.damage[0].contains("checksum"), "{:?}", got.damage);
}

fn a_corrupt_log_record_ends_the_run_and_later_good_records_are_not_used(b: &mut dyn Backend) {
    b.store().append(&(1..=5).map(|s| record(R, s)).collect::<Vec<_>>()).unwrap();
    b.corrupt("UPDATE log SET checksum = checksum + 1 WHERE seq = 3;");
    let got = b.store().recover(R).unwrap();
    assert_eq!(seqs(&got.log), vec![1, 2], "records 4 and 5 are intact but come after a bad one");
    assert!(got.damage[0].contains("#3"), "{:?}", got.damage);
}

fn a_truncated_log_tail_is_cut_and_the_rest_recovered(b: &mut dyn Backend) {
    b.store().append(&(1..=5).map(|s| record(R, s)).collect::<Vec<_>>()).unwrap();
    // A torn write: the last record's payload lost its second half.
    b.corrupt("UPDATE log SET payload = substr(payload, 1, 4) WHERE seq = 5;");
    let got = b.store().recover(R).unwrap();
    assert_eq!(seqs(&got.log), vec![1, 2, 3, 4]);
    assert_eq!(got.damage.len(), 1);
    assert_eq!(got.last_seq(), 4);
}

fn a_gap_in_the_log_ends_the_run(b: &mut dyn Backend) {
    b.store().append(&(1..=5).map(|s| record(R, s)).collect::<Vec<_>>()).unwrap();
    b.corrupt("DELETE FROM log WHERE seq = 2;");
    let got = b.store().recover(R).unwrap();
    assert_eq!(seqs(&got.log), vec![1]);
    assert!(got.damage[0].contains("jumps"), "{:?}", got.damage);
}

fn regions_are_listed_and_forgotten(b: &mut dyn Backend) {
    let a = RegionId::new(0, 1);
    let c = RegionId::new(2, 0);
    b.store().append(&[record(c, 1), record(a, 1)]).unwrap();
    b.store().put_checkpoint(&checkpoint(0, "only a checkpoint")).unwrap();
    assert_eq!(b.store().regions().unwrap(), vec![a, c, R]);
    b.store().forget(c).unwrap();
    b.store().forget(R).unwrap();
    assert_eq!(b.store().regions().unwrap(), vec![a]);
}

fn a_newer_schema_is_refused(b: &mut dyn Backend) {
    b.store().append(&[record(R, 1)]).unwrap();
    let err = b.bump_schema_and_reopen();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
}

fn oversized_batches_are_refused(b: &mut dyn Backend) {
    let batch: Vec<LogRecord> = (1..=MAX_APPEND_RECORDS as u64 + 1).map(|s| record(R, s)).collect();
    assert!(matches!(b.store().append(&batch), Err(StoreError::BatchTooLarge(_))));
    assert!(b.store().recover(R).unwrap().is_empty());
}

fn a_claim_fences_the_previous_owners_appends_and_checkpoints(b: &mut dyn Backend) {
    let old = b.store().claim(R).unwrap();
    b.store().append(&[owned(record(R, 1), old)]).unwrap();
    // Another host takes the region over: it claims before it reads.
    let mut new_owner = b.second();
    let new = new_owner.claim(R).unwrap();
    assert!(new > old, "a claim raises the token: {old} then {new}");
    assert_eq!(seqs(&new_owner.recover(R).unwrap().log), vec![1]);
    // The old owner wakes up: its queued append and checkpoint are refused.
    let err = b.store().append(&[owned(record(R, 2), old)]).unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { region: R, owner, newest } if owner == old && newest == new),
        "{err}"
    );
    let mut c = checkpoint(1, "stale");
    c.owner = old;
    assert!(matches!(b.store().put_checkpoint(&c), Err(StoreError::Fenced { .. })));
    // The new owner continues the log; nothing of the old one's is interleaved.
    let mut mine = record(R, 2);
    mine.payload = b"the new owner's change".to_vec();
    new_owner.append(&[owned(mine.clone(), new)]).unwrap();
    let mut c = checkpoint(2, "fresh");
    c.owner = new;
    new_owner.put_checkpoint(&c).unwrap();
    assert_eq!(b.store().recover(R).unwrap().checkpoints, vec![c]);
    let log: Vec<LogRecord> = b.store().raw_log(R, 0, 10).unwrap().into_iter().map(|(r, _)| r).collect();
    assert_eq!(log, vec![owned(record(R, 1), old), owned(mine, new)]);
    assert_eq!(b.store().owner(R).unwrap(), new);
}

fn a_fenced_region_refuses_the_whole_batch_and_others_go_through_alone(b: &mut dyn Backend) {
    let other = RegionId::new(7, 7);
    let old = b.store().claim(R).unwrap();
    let mine = b.store().claim(other).unwrap();
    b.second().claim(R).unwrap();
    let batch = [owned(record(other, 1), mine), owned(record(R, 1), old)];
    let err = b.store().append(&batch).unwrap_err();
    assert!(matches!(err, StoreError::Fenced { region: R, .. }), "{err}");
    assert!(b.store().recover(other).unwrap().is_empty(), "the batch is all or nothing");
    b.store().append(&batch[..1]).unwrap();
    assert_eq!(seqs(&b.store().recover(other).unwrap().log), vec![1]);
    assert!(b.store().recover(R).unwrap().is_empty());
}

fn owner_tokens_only_grow_across_reopen_and_forget(b: &mut dyn Backend) {
    assert_eq!(b.store().owner(R).unwrap(), 0);
    let first = b.store().claim(R).unwrap();
    b.reopen();
    let second = b.store().claim(R).unwrap();
    assert!(second > first);
    b.store().forget(R).unwrap();
    assert_eq!(b.store().owner(R).unwrap(), second, "forgetting a region does not unfence its old owners");
    let err = b.store().append(&[owned(record(R, 1), first)]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
}

/// A store written by the first schema (no owner tokens) is brought up to date in place.
#[test]
fn a_version_1_sqlite_store_is_migrated_and_keeps_its_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("terrane.sqlite");
    let v1 = rusqlite::Connection::open(&path).expect("open raw");
    let r = record(R, 1);
    v1.execute_batch(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);
         INSERT INTO schema_version VALUES (1);
         CREATE TABLE log (region_x INTEGER NOT NULL, region_y INTEGER NOT NULL, seq INTEGER NOT NULL,
            tick INTEGER NOT NULL, payload BLOB NOT NULL, checksum INTEGER NOT NULL,
            PRIMARY KEY (region_x, region_y, seq)) WITHOUT ROWID;
         CREATE TABLE checkpoint (region_x INTEGER NOT NULL, region_y INTEGER NOT NULL,
            covers_seq INTEGER NOT NULL, tick INTEGER NOT NULL, bytes BLOB NOT NULL,
            checksum INTEGER NOT NULL, PRIMARY KEY (region_x, region_y, covers_seq));",
    )
    .expect("version 1 schema");
    v1.execute(
        "INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![R.x, R.y, 1i64, 10i64, r.payload, r.checksum() as i64],
    )
    .expect("a version 1 record");
    drop(v1);
    let mut store = SqliteStore::open_dir(dir.path()).expect("migrate");
    assert_eq!(store.recover(R).unwrap().log, vec![r]);
    assert_eq!(store.claim(R).unwrap(), 1);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(store::SCHEMA_VERSION));
}
