//! Where a host keeps its world: the options `--data`, `--fresh` and `--store`, and opening the
//! store they name (SQLite under the data directory by default, PostgreSQL with --store).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use host::durable::{Durability, DurableConfig};

#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Directory that keeps the world across restarts (checkpoints and the write-ahead log).
    #[arg(long = "data", default_value = "terrane-data", value_name = "DIR")]
    pub data: PathBuf,
    /// Start from a new world: what --data holds is deleted first.
    #[arg(long)]
    pub fresh: bool,
    /// Keep the world in PostgreSQL instead of --data (postgres://user@host:port/db).
    #[arg(long, env = "TERRANE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Seconds between a region's full checkpoints.
    #[arg(long, default_value_t = host::durable::DEFAULT_CHECKPOINT_PERIOD.as_secs_f64())]
    pub checkpoint_every: f64,
}

impl DataArgs {
    /// `terrane host`: durable only when asked, with the default period.
    pub fn for_host(data: Option<PathBuf>, store: Option<String>) -> DataArgs {
        DataArgs {
            data: data.unwrap_or_else(|| PathBuf::from("terrane-data")),
            fresh: false,
            store,
            checkpoint_every: host::durable::DEFAULT_CHECKPOINT_PERIOD.as_secs_f64(),
        }
    }

    /// Opens the store (clearing it first with --fresh) and starts its writer.
    pub fn open(&self) -> anyhow::Result<Arc<Durability>> {
        anyhow::ensure!(
            self.checkpoint_every.is_finite() && self.checkpoint_every > 0.0,
            "--checkpoint-every must be a positive number of seconds"
        );
        let config = DurableConfig {
            checkpoint_period: std::time::Duration::from_secs_f64(self.checkpoint_every),
            shared_as: self.store.as_deref().map(store_name),
        };
        let fresh = self.fresh;
        let opener: host::durable::StoreOpener = match &self.store {
            Some(url) => {
                let url = url.clone();
                Box::new(move || {
                    let mut s = store::PgStore::connect(&url)?;
                    if fresh {
                        forget_all(&mut s)?;
                    }
                    Ok(Box::new(s) as Box<dyn store::Store>)
                })
            }
            None => {
                if fresh && self.data.exists() {
                    let file = self.data.join(store::SQLITE_FILE);
                    for f in
                        [file.clone(), file.with_extension("sqlite-wal"), file.with_extension("sqlite-shm")]
                    {
                        if f.exists() {
                            std::fs::remove_file(&f)
                                .map_err(|e| anyhow::anyhow!("--fresh cannot remove {}: {e}", f.display()))?;
                        }
                    }
                }
                let dir = self.data.clone();
                Box::new(move || Ok(Box::new(store::SqliteStore::open_dir(&dir)?) as Box<dyn store::Store>))
            }
        };
        let where_ =
            self.store.as_deref().map_or_else(|| self.data.display().to_string(), |_| "PostgreSQL".into());
        Durability::start(opener, config)
            .map_err(|e| anyhow::anyhow!("cannot open the store in {where_}: {e}"))
    }
}

/// How a PostgreSQL store is named to the cluster: the URL without user or password
/// (`postgres://user:secret@h:5432/db?x=y` → `postgres://h:5432/db`), or a key=value
/// connection string's host, port and dbname. Hosts whose stores have the same name share one.
pub fn store_name(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let server = authority.rsplit_once('@').map_or(authority, |(_, s)| s);
        let db = path.split('?').next().unwrap_or("");
        return format!("{scheme}://{server}/{db}");
    }
    let keep = ["host", "hostaddr", "port", "dbname"];
    let mut parts: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| kv.split_once('=').is_some_and(|(k, _)| keep.contains(&k)))
        .collect();
    parts.sort_unstable();
    parts.join(" ")
}

fn forget_all(s: &mut dyn store::Store) -> Result<(), store::StoreError> {
    for r in s.regions()? {
        s.forget(r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::store_name;

    #[test]
    fn a_store_is_named_without_its_credentials() {
        assert_eq!(
            store_name("postgres://terrane:s3cret@10.0.0.5:5432/world?sslmode=disable"),
            "postgres://10.0.0.5:5432/world"
        );
        assert_eq!(
            store_name("postgres://terrane@127.0.0.1:5432/postgres"),
            "postgres://127.0.0.1:5432/postgres"
        );
        assert_eq!(store_name("postgresql://db.local"), "postgresql://db.local/");
        assert_eq!(
            store_name("user=t password=x host=db port=5433 dbname=w"),
            store_name("dbname=w port=5433 host=db password=y")
        );
        assert!(!store_name("user=t password=x host=db").contains('x'));
    }
}
