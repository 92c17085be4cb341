//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every refusal the API makes goes through [`ApiError`]: a stable `type`
//! per kind, a human `detail` about the client's own input, and never a
//! store error's text (which could name patients or files). The extractor
//! wrappers ([`Json`], [`Query`], [`Path`]) turn axum's rejections into
//! problems too, so bad input is always a 4xx with a JSON body, never a 500.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

/// Content type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (query, path, body).
    #[error("{0}")]
    BadRequest(String),
    /// No valid bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token's role may not do this.
    #[error("this token's role does not allow this request")]
    Forbidden,
    /// No such resource (or not visible to this token).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but not acceptable (unknown profile, invalid override).
    #[error("{0}")]
    Unprocessable(String),
    /// Body over the limit (`api.max_body_bytes`).
    #[error("request body too large for this API (api.max_body_bytes)")]
    TooLarge,
    /// Wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Route exists, method does not.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// No such route.
    #[error("no such resource")]
    NoRoute,
    /// Over a rate limit; retry after this many seconds.
    #[error("too many requests (or failed authentications) from this client; retry after {0} s")]
    TooManyRequests(u64),
    /// The request took longer than `api.request_timeout`.
    #[error("the request took too long and was abandoned")]
    Timeout,
    /// A dependency is down (store busy, writer stopped).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a store failure; details go to the log, not the client.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable problem type slug.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) | ApiError::NoRoute => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooLarge => "too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::TooManyRequests(_) => "rate-limited",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("urn:rpm-gateway:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                ApiError::Unavailable("the store is busy; retry shortly".into())
            }
            StoreError::WriterGone => ApiError::Unavailable("the gateway is shutting down".into()),
            StoreError::Paused(_) => ApiError::Unavailable(
                "the store cannot be written now (see /readyz); retry later".into(),
            ),
            e if e.is_disk_full() => {
                ApiError::Unavailable("the store's disk is full (see /readyz); retry later".into())
            }
            _ => {
                tracing::error!(error = %e, "api: store failure");
                ApiError::Internal
            }
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary (the status reason).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::TooManyRequests(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rpm-gateway\""),
            );
        }
        resp
    }
}

/// A JSON body whose rejection is a problem.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

/// Maps a JSON body rejection to a problem.
pub fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(rej.body_text()),
        s if s.is_client_error() => ApiError::BadRequest(rej.body_text()),
        _ => ApiError::BadRequest(rej.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters whose rejection is a problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> ApiError {
    let text = rej.body_text();
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    ApiError::BadRequest(format!("query: {text}"))
}

/// Path parameters whose rejection is a problem.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej) => Err(path_rejection(rej)),
        }
    }
}

fn path_rejection(rej: PathRejection) -> ApiError {
    if rej.status().is_server_error() {
        tracing::error!(error = %rej.body_text(), "api: path parameters do not match the route");
        ApiError::Internal
    } else {
        ApiError::BadRequest(format!("path: {}", rej.body_text()))
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise it must be
/// `application/json` and parse (for action endpoints whose body is optional).
pub fn optional_json<T: DeserializeOwned + Default>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;

    async fn answer(e: ApiError) -> (StatusCode, axum::http::HeaderMap, Problem) {
        let r = e.into_response();
        let (parts, body) = r.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let p: Problem = serde_json::from_slice(&bytes).expect("a problem document");
        (parts.status, parts.headers, p)
    }

    /// Every refusal is a problem document whose status matches the
    /// answer's, with a stable type; a 429 says when to retry, a 401 how to
    /// authenticate.
    #[tokio::test]
    async fn every_refusal_is_a_problem_document() {
        let all = [
            ApiError::BadRequest("x".into()),
            ApiError::Unauthorized,
            ApiError::Forbidden,
            ApiError::NotFound("patient"),
            ApiError::Conflict("x".into()),
            ApiError::Unprocessable("x".into()),
            ApiError::TooLarge,
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::NoRoute,
            ApiError::TooManyRequests(7),
            ApiError::Timeout,
            ApiError::Unavailable("x".into()),
            ApiError::Internal,
        ];
        for e in all {
            let (slug, status) = (e.slug(), e.status());
            let (got, headers, p) = answer(e).await;
            assert_eq!(got, status);
            assert_eq!(p.status, status.as_u16());
            assert_eq!(p.kind, format!("urn:rpm-gateway:problem:{slug}"));
            assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
            match status {
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(headers[header::RETRY_AFTER], "7"),
                StatusCode::UNAUTHORIZED => {
                    assert!(headers.contains_key(header::WWW_AUTHENTICATE))
                }
                _ => {}
            }
        }
    }

    /// A store failure never reaches the client as text (it could name a
    /// patient or a file); a busy or paused store is a 503 to retry.
    #[tokio::test]
    async fn store_failures_are_unavailable_or_internal_without_their_text() {
        let busy = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        ));
        assert_eq!(
            ApiError::from(busy).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(StoreError::WriterGone).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let secret = StoreError::Encode("patient p-4711 in /var/lib/rpm".into());
        let (status, _, p) = answer(ApiError::from(secret)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.detail.contains("p-4711") && !p.detail.contains("/var/lib"));
    }

    /// Bad query strings and bodies are 4xx problems, never a 500.
    #[tokio::test]
    async fn extractors_refuse_bad_input_as_problems() {
        #[derive(Debug, serde::Deserialize)]
        struct Q {
            #[allow(dead_code)]
            limit: usize,
        }
        let req = axum::http::Request::get("/x?limit=many")
            .body(Body::empty())
            .unwrap();
        let (mut parts, _) = req.into_parts();
        let e = Query::<Q>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        let req = axum::http::Request::post("/x")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"limit\":"))
            .unwrap();
        let e = Json::<Q>::from_request(req, &()).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);

        let req = axum::http::Request::post("/x")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("{}"))
            .unwrap();
        let e = Json::<Q>::from_request(req, &()).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let h = axum::http::HeaderMap::new();
        let d: Vec<u8> = optional_json(&h, b"").unwrap();
        assert!(d.is_empty());
        assert!(optional_json::<Vec<u8>>(&h, b"[1]").is_err());
    }
}
