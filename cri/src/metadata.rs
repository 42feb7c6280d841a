//! The persistent metadata store: pods, containers and images, in SQLite.
//!
//! SQLite in WAL mode with `synchronous=FULL`: a committed transaction survives kill -9 and
//! power loss, a torn one is rolled back on the next open. It was chosen over redb because a
//! Proxmox admin can open the file with the `sqlite3` shell to see what the runtime thinks
//! exists, and because the schema version (`PRAGMA user_version`) and migrations are plain
//! SQL. Records are JSON documents keyed by ID, with a unique `key` column where CRI needs
//! uniqueness (a pod's or container's metadata), so record shapes can grow without a
//! migration while uniqueness is enforced by the database itself.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Migrations in order; the schema version is the number applied. Never edit one that has
/// shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the three record tables.
    "CREATE TABLE pods (id TEXT PRIMARY KEY, key TEXT UNIQUE, data TEXT NOT NULL);
     CREATE TABLE containers (id TEXT PRIMARY KEY, key TEXT UNIQUE, data TEXT NOT NULL);
     CREATE TABLE images (id TEXT PRIMARY KEY, key TEXT UNIQUE, data TEXT NOT NULL);",
];

pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Pods,
    Containers,
    Images,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Containers => "containers",
            Self::Images => "images",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata store {path}: {error}")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error(
        "metadata store {path} has schema version {found}, newer than this pvecri knows ({known}); refusing to touch it"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("{table} record {id}: {error}")]
    Json {
        table: &'static str,
        id: String,
        error: serde_json::Error,
    },
    #[error("{table}: a record with key {key} already exists")]
    DuplicateKey { table: &'static str, key: String },
    #[error("metadata store lock poisoned")]
    Poisoned,
}

pub struct MetadataStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("path", &self.path)
            .finish()
    }
}

impl MetadataStore {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let sql = |error| MetadataError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let found: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if found > SCHEMA_VERSION {
            return Err(MetadataError::TooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            tracing::info!(version = i + 1, "metadata store migrated");
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<u32, MetadataError> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, MetadataError> {
        let conn = self.conn.lock().map_err(|_| MetadataError::Poisoned)?;
        f(&conn).map_err(|error| MetadataError::Sqlite {
            path: self.path.clone(),
            error,
        })
    }

    /// Inserts or replaces the record `id`. `key`, when given, must be unique in the table
    /// across records with other IDs.
    pub fn put<T: Serialize>(
        &self,
        table: Table,
        id: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<(), MetadataError> {
        let data = serde_json::to_string(value).map_err(|error| MetadataError::Json {
            table: table.name(),
            id: id.to_string(),
            error,
        })?;
        let sql = format!(
            "INSERT INTO {} (id, key, data) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET key = excluded.key, data = excluded.data",
            table.name()
        );
        let result = self.with(|c| c.execute(&sql, params![id, key, data]));
        match result {
            Err(MetadataError::Sqlite {
                error: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(MetadataError::DuplicateKey {
                    table: table.name(),
                    key: key.unwrap_or_default().to_string(),
                })
            }
            other => other.map(|_| ()),
        }
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        id: &str,
    ) -> Result<Option<T>, MetadataError> {
        let sql = format!("SELECT data FROM {} WHERE id = ?1", table.name());
        let data: Option<String> =
            self.with(|c| c.query_row(&sql, params![id], |r| r.get(0)).optional())?;
        data.map(|d| decode(table, id, &d)).transpose()
    }

    /// The ID of the record holding `key`, if any.
    pub fn id_by_key(&self, table: Table, key: &str) -> Result<Option<String>, MetadataError> {
        let sql = format!("SELECT id FROM {} WHERE key = ?1", table.name());
        self.with(|c| c.query_row(&sql, params![key], |r| r.get(0)).optional())
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, MetadataError> {
        let sql = format!("SELECT id, data FROM {} ORDER BY id", table.name());
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        rows.iter().map(|(id, d)| decode(table, id, d)).collect()
    }

    /// Returns whether a record was removed.
    pub fn delete(&self, table: Table, id: &str) -> Result<bool, MetadataError> {
        let sql = format!("DELETE FROM {} WHERE id = ?1", table.name());
        Ok(self.with(|c| c.execute(&sql, params![id]))? > 0)
    }
}

fn decode<T: DeserializeOwned>(table: Table, id: &str, data: &str) -> Result<T, MetadataError> {
    serde_json::from_str(data).map_err(|error| MetadataError::Json {
        table: table.name(),
        id: id.to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        n: u64,
    }

    fn rec(name: &str, n: u64) -> Rec {
        Rec {
            name: name.into(),
            n,
        }
    }

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(&dir.path().join("m.db")).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s.put(Table::Pods, "b", Some("ns/b"), &rec("b", 2)).unwrap();
        s.put(Table::Pods, "a", Some("ns/a"), &rec("a", 1)).unwrap();
        assert_eq!(s.get::<Rec>(Table::Pods, "a").unwrap(), Some(rec("a", 1)));
        assert_eq!(s.get::<Rec>(Table::Containers, "a").unwrap(), None);
        assert_eq!(
            s.id_by_key(Table::Pods, "ns/b").unwrap().as_deref(),
            Some("b")
        );
        let all: Vec<Rec> = s.list(Table::Pods).unwrap();
        assert_eq!(all, vec![rec("a", 1), rec("b", 2)]);
        assert!(s.delete(Table::Pods, "a").unwrap());
        assert!(!s.delete(Table::Pods, "a").unwrap());
    }

    #[test]
    fn duplicate_key_is_refused_but_same_id_updates() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetadataStore::open(&dir.path().join("m.db")).unwrap();
        s.put(Table::Containers, "x", Some("k"), &rec("x", 1))
            .unwrap();
        s.put(Table::Containers, "x", Some("k"), &rec("x", 2))
            .unwrap();
        assert!(matches!(
            s.put(Table::Containers, "y", Some("k"), &rec("y", 1)),
            Err(MetadataError::DuplicateKey { .. })
        ));
        assert_eq!(
            s.get::<Rec>(Table::Containers, "x").unwrap(),
            Some(rec("x", 2))
        );
        assert_eq!(s.get::<Rec>(Table::Containers, "y").unwrap(), None);
    }

    #[test]
    fn survives_reopen_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let s = MetadataStore::open(&path).unwrap();
            s.put(Table::Images, "i", None, &rec("i", 7)).unwrap();
        }
        let s = MetadataStore::open(&path).unwrap();
        assert_eq!(s.get::<Rec>(Table::Images, "i").unwrap(), Some(rec("i", 7)));
        s.with(|c| c.pragma_update(None, "user_version", SCHEMA_VERSION + 1))
            .unwrap();
        drop(s);
        assert!(matches!(
            MetadataStore::open(&path),
            Err(MetadataError::TooNew { .. })
        ));
    }
}
