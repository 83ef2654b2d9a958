//! Shapes shared by several routes: timestamps, lists, pagination parameters.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// RFC 3339 (UTC, millisecond precision) from unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// An optional RFC 3339 query parameter, as unix milliseconds.
pub fn time_param(name: &str, v: Option<&str>) -> Result<Option<i64>, crate::error::ApiError> {
    v.map(|s| {
        s.parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|_| {
                crate::error::ApiError::unprocessable(
                    "invalid_request",
                    format!("{name} must be an RFC 3339 timestamp"),
                )
            })
    })
    .transpose()
}

/// A page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    pub fn new(data: Vec<T>, next: Option<portcullis_store::Cursor>) -> List<T> {
        List {
            data,
            next_cursor: next.map(|c| c.encode()),
        }
    }
}

/// Pagination parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(20),
            Some(n @ 1..=100) => Ok(n),
            Some(_) => Err(ApiError::unprocessable(
                "invalid_limit",
                "limit must be between 1 and 100",
            )),
        }
    }

    pub fn cursor(&self) -> Result<Option<portcullis_store::Cursor>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(c) => portcullis_store::Cursor::decode(c)
                .map(Some)
                .ok_or_else(|| ApiError::unprocessable("invalid_cursor", "cursor is not valid")),
        }
    }
}

/// Parses a JSON request body, requiring `Content-Type: application/json`.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !json {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    check_json_shape(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "request body is not valid JSON".to_owned()
            }
            // serde's data errors name the field and the expectation, never the value.
            _ => format!("invalid request: {e}"),
        };
        ApiError::unprocessable("invalid_request", message)
    })
}

/// Deepest nesting of objects and arrays a request body may have. Our request bodies nest
/// three levels at most; the limit leaves room for `metadata` without letting a nesting bomb
/// near serde's recursion.
pub const MAX_JSON_DEPTH: usize = 32;

/// Most values (members and elements, at any depth) a request body may hold.
pub const MAX_JSON_VALUES: usize = 2_000;

/// Refuses bodies nested deeper than [`MAX_JSON_DEPTH`] or holding more than
/// [`MAX_JSON_VALUES`] values, before anything is parsed or allocated. Hand-written because
/// serde_json only bounds recursion (at 128, as an error indistinguishable from bad syntax)
/// and never counts fields; one linear pass over bytes already in memory costs far less than
/// the parse it guards. Syntax is left to the parser.
fn check_json_shape(body: &[u8]) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut values = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                values += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::unprocessable(
                        "json_too_deep",
                        format!("request body nests deeper than {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => {}
        }
        if values > MAX_JSON_VALUES {
            return Err(ApiError::unprocessable(
                "json_too_many_values",
                format!("request body holds more than {MAX_JSON_VALUES} values"),
            ));
        }
    }
    Ok(())
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// A human-readable message.
    pub error: String,
    /// A stable snake_case code, e.g. `invalid_phone_number`.
    pub code: String,
    /// The request's id, also in the `X-Request-Id` header.
    pub request_id: String,
}

/// A resource id from the path. Anything that does not decode to text is simply not an id
/// of ours, so it answers 404 exactly like an unknown id (never 400, which would tell a
/// prober something different).
pub struct IdPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|_| ApiError::not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<&'static str> {
        match check_json_shape(body.as_bytes()) {
            Ok(()) => None,
            Err(ApiError::Client { code, .. }) => Some(code),
            Err(_) => Some("other"),
        }
    }

    #[test]
    fn nesting_is_bounded_at_the_limit() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert_eq!(code(&ok), None);
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(code(&deep), Some("json_too_deep"));
        // An unterminated bomb is refused as soon as it passes the limit.
        assert_eq!(code(&"{\"a\":".repeat(100_000)), Some("json_too_deep"));
    }

    #[test]
    fn brackets_and_commas_inside_strings_do_not_count() {
        let s = format!(
            "{{\"body\":\"{}\\\"{}\"}}",
            "[".repeat(500),
            ",".repeat(5000)
        );
        assert_eq!(code(&s), None);
    }

    #[test]
    fn values_are_counted_at_every_depth() {
        let many = format!("[{}]", vec!["1"; MAX_JSON_VALUES + 1].join(","));
        assert_eq!(code(&many), Some("json_too_many_values"));
        let fits = format!("[{}]", vec!["1"; MAX_JSON_VALUES / 2].join(","));
        assert_eq!(code(&fits), None);
        let members: Vec<String> = (0..MAX_JSON_VALUES)
            .map(|i| format!("\"k{i}\":1"))
            .collect();
        assert_eq!(
            code(&format!("{{\"metadata\":{{{}}}}}", members.join(","))),
            Some("json_too_many_values")
        );
    }
}
