//! A WhatsApp message template as an app asks for it: the template's name, its language
//! and the values of its body placeholders (`{{1}}`, `{{2}}`, …).
//!
//! Templates are the only way to message a WhatsApp user outside the 24-hour customer
//! service window, so they carry personal data (the parameter values usually hold names,
//! codes, amounts): they are stored sealed like a body, and `Debug` redacts the values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest template name Meta accepts (lowercase letters, digits and underscores).
pub const MAX_NAME_CHARS: usize = 512;
/// Most body parameters we pass on; Meta's templates have far fewer placeholders.
pub const MAX_PARAMETERS: usize = 100;
/// Longest single parameter value (Meta's limit for a body text parameter is 1024 in
/// practice; a template message body as a whole is limited to 1024 characters).
pub const MAX_PARAMETER_CHARS: usize = 1024;

/// A validated WhatsApp template request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappTemplate {
    /// The approved template's name, e.g. `order_update`.
    pub name: String,
    /// Its language code, e.g. `en_US` or `de`.
    pub language: String,
    /// The values of the body placeholders, in order.
    #[serde(default)]
    pub parameters: Vec<String>,
}

impl fmt::Debug for WhatsappTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsappTemplate")
            .field("name", &self.name)
            .field("language", &self.language)
            .field(
                "parameters",
                &format_args!("[{} redacted]", self.parameters.len()),
            )
            .finish()
    }
}

/// Why a template request was refused. The text never quotes a parameter value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl WhatsappTemplate {
    /// Checks a template request. The name and language become part of a JSON document
    /// sent to Meta, so they are held to the character sets Meta documents; parameter
    /// values are free text but may not hold control characters other than newline and tab.
    pub fn new(
        name: &str,
        language: &str,
        parameters: Vec<String>,
    ) -> Result<WhatsappTemplate, TemplateError> {
        let err = |m: &str| Err(TemplateError(m.to_owned()));
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return err("template.name must be 1-512 lowercase letters, digits or underscores");
        }
        if !(2..=15).contains(&language.len())
            || !language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err("template.language must be a language code such as en_US");
        }
        if parameters.len() > MAX_PARAMETERS {
            return err("template.parameters may hold at most 100 values");
        }
        for p in &parameters {
            if p.is_empty() || p.chars().count() > MAX_PARAMETER_CHARS {
                return err(
                    "template.parameters must be non-empty strings of at most 1024 characters",
                );
            }
            if p.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return err("template.parameters must not contain control characters");
            }
        }
        Ok(WhatsappTemplate {
            name: name.to_owned(),
            language: language.to_owned(),
            parameters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_language_and_parameters() {
        let ok = WhatsappTemplate::new("order_update", "en_US", vec!["Ada".into()]).unwrap();
        assert!(!format!("{ok:?}").contains("Ada"));
        assert!(WhatsappTemplate::new("Order Update", "en_US", vec![]).is_err());
        assert!(WhatsappTemplate::new("", "en_US", vec![]).is_err());
        assert!(WhatsappTemplate::new("x", "e\"n", vec![]).is_err());
        assert!(WhatsappTemplate::new("x", "en", vec![String::new()]).is_err());
        let e = WhatsappTemplate::new("x", "en", vec!["secret\u{7}".into()]).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
