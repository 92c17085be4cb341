//! `GET /api/v1/boxes`: the home boxes that push to this hub, with the
//! health each reported last (last contact, backlog, clock offset, BLE
//! adapter state, version) and whether it is silent.
//!
//! Admin and read-only tokens see every box. A care-team token sees the
//! boxes of its own patients (a box whose token names a device assigned to
//! one of them), so a nurse can tell a silent box from a silent patient;
//! other boxes are not listed, as other teams' patients are not.

use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;

use super::auth::Principal;
use super::problem::{ApiError, Json};
use super::ApiState;
use crate::store::boxes::BoxRow;

/// The list.
#[derive(Debug, Serialize)]
pub struct Boxes {
    /// By box id.
    pub items: Vec<BoxRow>,
}

/// `GET /api/v1/boxes` (admin, read-only; care teams: their patients' boxes).
pub async fn list(State(st): State<Arc<ApiState>>, p: Principal) -> Result<Json<Boxes>, ApiError> {
    p.require_read()?;
    let scope = p.scope_json();
    let items = st
        .db
        .run(move |s| Ok(crate::store::boxes::list(s.conn(), scope.as_deref())?))
        .await?;
    Ok(Json(Boxes { items }))
}
