//! `rpm-gateway store ...`: the command-line edge of the store's
//! encryption at rest (`anyhow` lives here, as in `cli.rs`).

use clap::Subcommand;
use rusqlite::types::ValueRef;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::store::maintenance::{self, Rewritten};
use crate::store::secrets::{self, KeySource};

/// `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Whether the store is encrypted, where its key comes from, and whether it opens with it.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Encrypt a plain store with the store key (set `encryption = true` under [store] first). The gateway must be stopped.
    Encrypt,
    /// Put the store under a new key: re-encrypt it and re-seal its webhook secrets. The gateway must be stopped.
    Rekey {
        /// The new key: a file of 64 hex digits, mode 0600; a new random key is written there when it does not exist.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Decrypt an encrypted store, for support (set `encryption = false` under [store] first). The gateway must be stopped.
    Decrypt,
    /// Run one read-only SQL statement on the store (opened with its key) and print the rows, tab-separated.
    Query {
        /// The statement, e.g. "SELECT COUNT(*) FROM readings".
        sql: String,
    },
}

/// Runs a `store` command.
pub fn store(config: &Config, cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    let path = &config.store.path;
    match cmd {
        StoreCommand::Status { json } => {
            let s = maintenance::status(path)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "store {}: {}, {} byte(s); encryption {} (SQLCipher {}); key from {}",
                    s.path.display(),
                    s.format,
                    s.bytes,
                    if s.encryption { "on" } else { "off" },
                    s.sqlcipher,
                    s.key_source,
                );
                match &s.error {
                    None => println!("the gateway opens it as configured"),
                    Some(e) => println!("the gateway cannot open it: {e}"),
                }
                if s.encryption && s.key_next_to_store {
                    println!("{}", NEXT_TO_STORE);
                }
            }
            return Ok(if s.opens {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        StoreCommand::Encrypt => {
            let r = maintenance::encrypt(path)?;
            println!(
                "encrypted {} with the store key from {}: {}; the plain file is gone, with its -wal and -shm",
                path.display(),
                secrets::source_for(path),
                kept(&r)
            );
            if matches!(secrets::source_for(path), KeySource::NextToStore(_)) {
                println!("{NEXT_TO_STORE}");
            }
        }
        StoreCommand::Decrypt => {
            let r = maintenance::decrypt(path)?;
            println!(
                "decrypted {}: {}. It is plain now: anyone who can read the file reads the health data in it; encrypt it again (`store encrypt`) when support is done",
                path.display(),
                kept(&r)
            );
        }
        StoreCommand::Rekey { new_key_file } => {
            let old = secrets::source_for(path);
            let encrypted =
                crate::store::cipher::Format::of(path)? == crate::store::cipher::Format::Encrypted;
            let done = maintenance::rekey(path, &new_key_file)?;
            if done.key_made {
                println!(
                    "wrote a new store key to {} (mode 0600)",
                    new_key_file.display()
                );
            }
            let r = done.rewritten;
            println!(
                "{} {} under the new key: {}; {} webhook endpoint(s) re-sealed",
                if encrypted {
                    "re-encrypted"
                } else {
                    "re-sealed the secrets of"
                },
                path.display(),
                kept(&r),
                r.resealed
            );
            println!(
                "the old key ({old}) no longer opens {}: give the gateway the new key before it starts: {}",
                if encrypted { "the store" } else { "its secrets" },
                match &old {
                    KeySource::Env => format!(
                        "set RPM_STORE_KEY to the contents of {}",
                        new_key_file.display()
                    ),
                    KeySource::Credential(p) => format!(
                        "replace the credential {} with {}",
                        p.display(),
                        new_key_file.display()
                    ),
                    KeySource::File(_) | KeySource::NextToStore(_) | KeySource::Given => format!(
                        "set key_file = \"{}\" under [store] (and delete the old key file)",
                        new_key_file.display()
                    ),
                }
            );
        }
        StoreCommand::Query { sql } => query(path, &sql)?,
    }
    Ok(ExitCode::SUCCESS)
}

const NEXT_TO_STORE: &str = "warning: the key is next to the store: that protects copies of the store file, not a stolen disk; keep it elsewhere (store.key_file on another medium, RPM_STORE_KEY, the systemd credential rpm-store-key)";

fn kept(r: &Rewritten) -> String {
    format!(
        "{} reading(s), {} row(s) in {} table(s) kept, {} byte(s)",
        r.readings, r.rows, r.tables, r.bytes
    )
}

fn query(path: &Path, sql: &str) -> anyhow::Result<()> {
    let conn = crate::store::cipher::open_read_only(path)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    let mut stmt = conn.prepare(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut line = Vec::with_capacity(columns);
        for i in 0..columns {
            line.push(match row.get_ref(i)? {
                ValueRef::Null => String::new(),
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(v) => v.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Blob(b) => format!("X'{}'", hex::encode(b)),
            });
        }
        println!("{}", line.join("\t"));
    }
    Ok(())
}
