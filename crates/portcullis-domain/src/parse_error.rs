use std::fmt;

/// The longest slice of the offending input an error keeps: enough to recognise a typo, too
/// little for an error message to become a channel for arbitrary caller text.
const MAX_ECHO_CHARS: usize = 32;

/// A string that names none of the values of a closed vocabulary (purpose, status, channel,
/// role, encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEnumError {
    kind: &'static str,
    code: &'static str,
    value: String,
    expected: &'static [&'static str],
}

impl ParseEnumError {
    pub(crate) fn new(
        kind: &'static str,
        code: &'static str,
        value: &str,
        expected: &'static [&'static str],
    ) -> Self {
        let mut echoed: String = value.chars().take(MAX_ECHO_CHARS).collect();
        if value.chars().nth(MAX_ECHO_CHARS).is_some() {
            echoed.push('…');
        }
        Self {
            kind,
            code,
            value: echoed,
            expected,
        }
    }

    /// The API error code, e.g. `invalid_purpose`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What was being parsed, e.g. `purpose`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The accepted spellings.
    pub fn expected(&self) -> &'static [&'static str] {
        self.expected
    }
}

impl fmt::Display for ParseEnumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}; expected one of: {}",
            self.kind,
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for ParseEnumError {}

/// Generates `as_str`, `parse`, `ALL`, `Display` and `FromStr` for a fieldless enum whose
/// wire spelling is fixed, so the serde name, the parser and the printer cannot drift apart.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $kind:literal, $code:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the exact wire spelling (case-sensitive, as in the API).
            pub fn parse(s: &str) -> Result<Self, $crate::parse_error::ParseEnumError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::parse_error::ParseEnumError::new(
                        $kind,
                        $code,
                        s,
                        Self::NAMES,
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::parse_error::ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <::std::string::String as ::serde::Deserialize>::deserialize(deserializer)?;
                Self::parse(&s).map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_truncated() {
        let long = "x".repeat(1000);
        let err = ParseEnumError::new("purpose", "invalid_purpose", &long, &["otp"]);
        let msg = err.to_string();
        assert!(msg.len() < 100, "{msg}");
        assert!(msg.contains('…'));
    }

    #[test]
    fn message_lists_choices() {
        let err = ParseEnumError::new("role", "invalid_role", "root", &["reader", "admin"]);
        assert_eq!(
            err.to_string(),
            r#"unknown role "root"; expected one of: reader, admin"#
        );
        assert_eq!(err.code(), "invalid_role");
        assert_eq!(err.kind(), "role");
    }
}
