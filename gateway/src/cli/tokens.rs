//! `rpm-gateway tokens ...`: create, list and revoke API tokens. The secret
//! is printed once, at creation; only its SHA-256 is stored.

use clap::Subcommand;

use crate::store::tokens::{self, Role, TokenError};
use crate::store::Store;

/// `tokens` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (once).
    Create {
        /// A name for humans (who or what uses it).
        name: String,
        /// admin | read_only | care_team | ingest
        #[arg(long)]
        role: Role,
        /// Care team (role care_team; repeat for several).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// The only device it may push for (role ingest; repeat for several; default any).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// The only profile it may push with (role ingest; repeat; default any).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; requests with it are refused at once.
    Revoke {
        /// Token id (`tok_...`).
        id: String,
    },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Admin, Role::ReadOnly, Role::CareTeam, Role::Ingest]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// Runs a `tokens` command; the CLI's changes are audited with actor `cli`.
pub fn run(store: &Store, cmd: TokensCommand) -> Result<(), TokenError> {
    let audit = |action: &str, resource: &str| {
        let _ = crate::store::audit::append(
            store.conn(),
            &crate::store::audit::AuditEntry::cli(action, resource, None),
        );
    };
    match cmd {
        TokensCommand::Create {
            name,
            role,
            teams,
            devices,
            profiles,
            json,
        } => {
            let scope = tokens::IngestScope { devices, profiles };
            let t = tokens::create_scoped(store.conn(), &name, role, &teams, &scope)?;
            audit("token.create", &t.record.token_id);
            if json {
                let mut v = serde_json::to_value(&t.record)
                    .map_err(|e| TokenError::Invalid(e.to_string()))?;
                v["token"] = serde_json::Value::String(t.secret);
                println!("{v}");
            } else {
                println!("{}", t.secret);
                eprintln!(
                    "created {} ({}, role {}); the token above is shown only now",
                    t.record.token_id,
                    t.record.name,
                    t.record.role.name()
                );
            }
        }
        TokensCommand::List { json } => {
            for t in tokens::list(store.conn())? {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&t)
                            .map_err(|e| TokenError::Invalid(e.to_string()))?
                    );
                } else {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<21} {:<9} {:<7} {:<20} {}",
                        t.token_id,
                        t.role.name(),
                        state,
                        t.name,
                        t.care_teams.join(",")
                    );
                }
            }
        }
        TokensCommand::Revoke { id } => {
            if tokens::revoke(store.conn(), &id)? {
                audit("token.revoke", &id);
                println!("revoked {id}");
            } else {
                return Err(TokenError::Invalid(format!("no active token `{id}`")));
            }
        }
    }
    Ok(())
}
