//! [`Secret<T>`]: a value that must never reach a log, a panic message or a serializer.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Holds a secret value: `Debug` and `Display` print `Secret([REDACTED])`, and the value is
/// zeroized when dropped.
///
/// There is deliberately no `Serialize`, `PartialEq` or `Deref`: reading the value is always an
/// explicit, greppable [`Secret::expose`] call, a secret cannot end up in a JSON response because
/// a struct derived `Serialize`, and comparisons have to go through a constant-time function.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Borrows the secret value. Every call site is a place where the secret leaves protection;
    /// keep them few and obvious.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> ZeroizeOnDrop for Secret<T> {}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(format!("{s}"), "Secret([REDACTED])");
        assert_eq!(format!("{s:#?}"), "Secret([REDACTED])");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn expose_and_clone() {
        let s = Secret::new(vec![1u8, 2, 3]);
        let t = s.clone();
        assert_eq!(s.expose(), &[1, 2, 3]);
        assert_eq!(t.expose(), s.expose());
    }
}
