//! Reading a connection's configuration object: the checks every provider type shares.
//!
//! Errors are plain sentences naming the field, never its value (a configuration holds
//! credentials); each provider wraps them in its own `ConfigError`.

use portcullis_domain::SenderId;
use serde_json::{Map, Value};

/// The object, refusing a field not in `fields`.
pub(crate) fn object<'a>(
    value: &'a Value,
    fields: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let Some(obj) = value.as_object() else {
        return Err("must be a JSON object".to_owned());
    };
    if let Some(unknown) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?} (expected {})",
            fields.join(", ")
        ));
    }
    Ok(obj)
}

/// An optional string field.
pub(crate) fn string<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// An optional rate in messages per second (`sender_mps`, `tps`): a positive number.
pub(crate) fn rate(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n > 0.0 && n.is_finite() => Ok(Some(n)),
            _ => Err(format!("{name} must be a positive number")),
        },
    }
}

/// A provider's API host root (`https://api.twilio.com`), without a trailing slash.
/// `https://` only, except plain `http://` for a loopback host (a local stand-in): every
/// request carries a credential. `example` is the provider's own host, for the message.
pub(crate) fn base_url(raw: &str, example: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("base_url {why}"));
    let Ok(url) = reqwest::Url::parse(raw) else {
        return bad("is not a URL");
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return bad("has no host"),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return bad("must use https:// (plain http only for a loopback stand-in)"),
        _ => return bad("must be an https:// URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials");
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(format!(
            "base_url must be the API host root, like {example}"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A required, non-empty list of sender numbers or alphanumeric ids, canonical.
pub(crate) fn senders(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match obj.get(name) {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                let s = item
                    .as_str()
                    .ok_or_else(|| format!("{name} must hold strings"))?;
                SenderId::parse(s)
                    .map(|sender| sender.as_str().to_owned())
                    .map_err(|e| format!("{name}: {e}"))
            })
            .collect(),
        _ => Err(format!(
            "{name} must be a non-empty array of sender numbers"
        )),
    }
}
