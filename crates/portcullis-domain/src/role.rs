//! API key roles. They nest: `admin` ⊇ `sender` ⊇ `reader`.

use crate::parse_error::string_enum;

string_enum! {
    /// What an API key may do. Declared from least to most privileged, so the derived order
    /// is the privilege order.
    pub enum Role: "role", "invalid_role" {
        /// Read only.
        Reader => "reader",
        /// Send and read messages, mint realtime tokens.
        Sender => "sender",
        /// Everything a sender may, plus manage keys, webhooks, consents and suppressions.
        Admin => "admin",
    }
}

impl Role {
    /// Whether a key with this role may call a route that requires `required`.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

#[cfg(test)]
mod tests {
    use super::Role::*;
    use super::*;

    #[test]
    fn nesting() {
        let cases = [
            (Reader, Reader, true),
            (Reader, Sender, false),
            (Reader, Admin, false),
            (Sender, Reader, true),
            (Sender, Sender, true),
            (Sender, Admin, false),
            (Admin, Reader, true),
            (Admin, Sender, true),
            (Admin, Admin, true),
        ];
        for (have, need, ok) in cases {
            assert_eq!(have.allows(need), ok, "{have} for {need}");
        }
    }

    #[test]
    fn names() {
        for (r, name) in [(Reader, "reader"), (Sender, "sender"), (Admin, "admin")] {
            assert_eq!(r.as_str(), name);
            assert_eq!(Role::parse(name), Ok(r));
            assert_eq!(
                serde_json::to_string(&r).expect("ser"),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<Role>(&format!("\"{name}\"")).expect("de"),
                r
            );
        }
        for bad in ["Admin", "owner", "", "root"] {
            assert_eq!(Role::parse(bad).expect_err(bad).code(), "invalid_role");
        }
    }
}
