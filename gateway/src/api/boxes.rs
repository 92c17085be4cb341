//! `GET /api/v1/boxes`: the home boxes that push to this hub, with the
//! health each reported last (last contact, backlog, clock offset, BLE
//! adapter state, version) and whether it is silent.
//!
//! Boxes are operational, not clinical, and a box is not tied to one care
//! team (its devices may be, one day, several patients'): the list is for
//! operators (admin and read-only tokens), like the quarantine and the
//! webhooks; care-team tokens get 403.

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

/// `GET /api/v1/boxes` (admin, read-only).
pub async fn list(State(st): State<Arc<ApiState>>, p: Principal) -> Result<Json<Boxes>, ApiError> {
    p.require_operator_read()?;
    let items = st
        .db
        .run(|s| Ok(crate::store::boxes::list(s.conn())?))
        .await?;
    Ok(Json(Boxes { items }))
}
