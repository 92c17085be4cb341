//! `rpm-gateway users ...`: the web console's users. A password is read
//! from the terminal (asked twice, not echoed) or, for scripts, from
//! standard input with `--password-stdin`; never from an argument, which
//! other users of the machine could see in the process list.

use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};

use crate::console::auth::{hash_password, PasswordError};
use crate::store::tokens::Role;
use crate::store::users::{self, UserError};
use crate::store::Store;

/// `users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a console user.
    Add {
        /// Sign-in name (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        /// admin | read_only | care_team
        #[arg(long)]
        role: Role,
        /// Care team (role care_team; repeat for several).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (never their password hashes).
    List {
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: they cannot sign in, and their sessions end at once.
    Disable {
        /// Username.
        name: String,
    },
    /// Set a new password (ends the user's sessions and lock-out).
    Passwd {
        /// Username.
        name: String,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `users` failures.
#[derive(Debug, thiserror::Error)]
pub enum UsersCliError {
    /// Store trouble or an invalid request.
    #[error(transparent)]
    User(#[from] UserError),
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The password is not acceptable.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The password could not be read.
    #[error("cannot read the password: {0}")]
    Read(String),
}

/// Reads a password line from standard input, or asks for it twice on the
/// terminal with echo off.
fn read_password(from_stdin: bool) -> Result<String, UsersCliError> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| UsersCliError::Read(e.to_string()))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> Result<String, UsersCliError> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let echo = Echo::off();
        let mut line = String::new();
        let r = stdin.lock().read_line(&mut line);
        drop(echo);
        eprintln!();
        r.map_err(|e| UsersCliError::Read(e.to_string()))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask("password: ")?;
    let second = ask("again: ")?;
    if first != second {
        return Err(UsersCliError::Read("the two passwords differ".into()));
    }
    Ok(first)
}

/// Terminal echo off while it lives.
struct Echo(Option<rustix::termios::Termios>);

impl Echo {
    fn off() -> Echo {
        let fd = std::io::stdin();
        match rustix::termios::tcgetattr(&fd) {
            Ok(old) => {
                let mut quiet = old.clone();
                quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
                let _ =
                    rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet);
                Echo(Some(old))
            }
            Err(_) => Echo(None),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                old,
            );
        }
    }
}

/// Runs a `users` command; changes are audited with actor `cli`.
pub fn run(store: &Store, cmd: UsersCommand) -> Result<(), UsersCliError> {
    let audit = |action: &str, resource: &str| {
        let _ = crate::store::audit::append(
            store.conn(),
            &crate::store::audit::AuditEntry::cli(action, resource, None),
        );
    };
    match cmd {
        UsersCommand::Add {
            name,
            role,
            teams,
            password_stdin,
        } => {
            users::check_username(&name)?;
            if users::get(store.conn(), &name)?.is_some() {
                return Err(UserError::Invalid(format!("user `{name}` exists already")).into());
            }
            let hash = hash_password(&read_password(password_stdin)?)?;
            let u = users::create(store.conn(), &name, role, &teams, &hash)?;
            audit("user.create", &format!("user:{}", u.username));
            eprintln!(
                "created console user {} (role {}{})",
                u.username,
                u.role.name(),
                if u.care_teams.is_empty() {
                    String::new()
                } else {
                    format!(", teams {}", u.care_teams.join(","))
                }
            );
        }
        UsersCommand::List { json } => {
            for u in users::list(store.conn())? {
                if json {
                    println!("{}", serde_json::to_string(&u).unwrap_or_default());
                } else {
                    println!(
                        "{:<24} {:<9} {:<8} {}",
                        u.username,
                        u.role.name(),
                        if u.disabled_at.is_some() {
                            "disabled"
                        } else {
                            "active"
                        },
                        u.care_teams.join(",")
                    );
                }
            }
        }
        UsersCommand::Disable { name } => {
            if !users::disable(store.conn(), &name)? {
                return Err(UserError::Invalid(format!("no active user `{name}`")).into());
            }
            audit("user.disable", &format!("user:{name}"));
            eprintln!("disabled {name}; their sessions have ended");
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
        } => {
            if users::get(store.conn(), &name)?.is_none() {
                return Err(UserError::Invalid(format!("no user `{name}`")).into());
            }
            let hash = hash_password(&read_password(password_stdin)?)?;
            users::set_password(store.conn(), &name, &hash)?;
            audit("user.passwd", &format!("user:{name}"));
            eprintln!("password of {name} changed; their sessions have ended");
        }
    }
    Ok(())
}
