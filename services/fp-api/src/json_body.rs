//! JSON request bodies whose errors name the offending field.
//!
//! actix's `Json` extractor reports serde's message without the field's path for type errors; here
//! the body is read as bytes and decoded with `serde_path_to_error`, so a wrong type, a missing field
//! or an unknown field each answer 422 with `field` set, and broken JSON answers 400.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = read_body(req, payload);
        Box::pin(async move { decode(&bytes.await?).map(JsonBody) })
    }
}

/// A body that may be left out: an empty one, or JSON `null` (which the OpenAPI document of an
/// optional body allows), is `None`; any other is decoded as [`JsonBody`] is.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = read_body(req, payload);
        Box::pin(async move {
            let bytes = bytes.await?;
            let is_null = || {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .is_ok_and(|value| value.is_null())
            };
            if bytes.is_empty() || is_null() {
                return Ok(OptionalJsonBody(None));
            }
            decode(&bytes).map(|body| OptionalJsonBody(Some(body)))
        })
    }
}

fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<web::Bytes, ApiError>> + 'static {
    let bytes = web::Bytes::from_request(req, payload);
    async move {
        bytes.await.map_err(|err| {
            if err.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge
            } else {
                ApiError::MalformedJson {
                    message: format!("could not read the request body: {err}"),
                }
            }
        })
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| ApiError::MalformedJson {
            message: format!("the body is not valid JSON: {err}"),
        })?;
    // Without this, `[]` or `null` would read as a struct whose fields all have defaults.
    if !value.is_object() {
        return Err(ApiError::MalformedJson {
            message: "the body must be a JSON object".to_owned(),
        });
    }
    // PostgreSQL text cannot hold U+0000: refuse it here, naming the field, not at the insert.
    if let Some(field) = path_of_nul(&value, "") {
        return Err(ApiError::invalid(
            field,
            "must not contain the NUL character (U+0000)",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = field_name(&path, &message);
        ApiError::invalid(field, strip_position(&message))
    })
}

/// The path (as serde_path_to_error writes it) of the first string holding U+0000, if any.
fn path_of_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| path_of_nul(item, &format!("{path}[{index}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if name.contains('\0') {
                return Some(field);
            }
            path_of_nul(item, &field)
        }),
        _ => None,
    }
}

/// The path serde_path_to_error reports. For a missing field that path is the object holding it,
/// so the name serde quotes in backticks is appended.
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (missing, path) {
        (Some(name), ".") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, path) => path.to_owned(),
    }
}

/// serde appends "at line 1 column 7": true but noise for an API caller who has the field name.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        star_rating: i32,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn field_of(body: &str) -> (String, String) {
        match decode::<Sample>(body.as_bytes()) {
            Err(ApiError::InvalidField { field, message }) => (field, message),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"star_rating": "five"}"#).0, "star_rating");
        assert_eq!(field_of(r#"{}"#).0, "star_rating");
        assert_eq!(field_of(r#"{"star_rating": 1, "bogus": 2}"#).0, "bogus");
        assert_eq!(
            field_of(r#"{"star_rating": 1, "inner": {}}"#).0,
            "inner.name"
        );
        let (_, message) = field_of(r#"{"star_rating": "five"}"#);
        assert!(!message.contains("line"), "{message}");
    }

    #[test]
    fn broken_json_is_malformed() {
        for body in [
            "{",
            "not json",
            r#"{"star_rating": 1} trailing"#,
            "",
            "[]",
            "null",
            "5",
        ] {
            assert!(
                matches!(
                    decode::<Sample>(body.as_bytes()),
                    Err(ApiError::MalformedJson { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn nul_characters_are_refused_where_they_are() {
        assert_eq!(
            field_of(r#"{"star_rating": 1, "inner": {"name": "a\u0000b"}}"#).0,
            "inner.name"
        );
        assert_eq!(field_of(r#"{"star_rating": 1, "x\u0000": 2}"#).0, "x\0");
        // An escaped backslash followed by "u0000" is text, not NUL.
        assert!(decode::<Sample>(br#"{"star_rating": 1, "inner": {"name": "a\\u0000"}}"#).is_ok());
    }
}
