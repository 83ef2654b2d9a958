//! Why a message is sent. Policy hangs off it: essential purposes reach suppressed recipients
//! and ignore quiet hours, `marketing` needs consent and is off for new apps.

use std::fmt;

use crate::parse_error::string_enum;

string_enum! {
    /// The declared purpose of an outbound message.
    pub enum Purpose: "purpose", "invalid_purpose" {
        /// One-time passcodes. Essential.
        Otp => "otp",
        /// Receipts, confirmations, account changes. Essential.
        Transactional => "transactional",
        /// Security and service alerts. Essential.
        Alert => "alert",
        /// Reminders and updates the recipient asked for.
        Notification => "notification",
        /// Conversations with the app's support staff.
        Support => "support",
        /// Promotions. Needs consent; off for new apps.
        Marketing => "marketing",
    }
}

impl Purpose {
    /// Essential messages (otp, transactional, alert) still reach recipients who opted out
    /// and are exempt from quiet hours.
    pub const fn is_essential(self) -> bool {
        matches!(self, Purpose::Otp | Purpose::Transactional | Purpose::Alert)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of purposes, e.g. those an app may send. Serializes as a JSON array of purpose names
/// in canonical order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PurposeSet(u8);

impl PurposeSet {
    /// No purposes.
    pub const fn empty() -> Self {
        PurposeSet(0)
    }

    /// Every purpose, marketing included.
    pub fn all() -> Self {
        Purpose::ALL.iter().copied().collect()
    }

    /// What a new app may send: everything but marketing, which must be switched on
    /// deliberately.
    pub fn default_for_new_app() -> Self {
        let mut set = Self::all();
        set.remove(Purpose::Marketing);
        set
    }

    /// Whether `purpose` is in the set.
    pub const fn contains(self, purpose: Purpose) -> bool {
        self.0 & purpose.bit() != 0
    }

    /// Adds `purpose`; returns whether it was new.
    pub fn insert(&mut self, purpose: Purpose) -> bool {
        let new = !self.contains(purpose);
        self.0 |= purpose.bit();
        new
    }

    /// Removes `purpose`; returns whether it was present.
    pub fn remove(&mut self, purpose: Purpose) -> bool {
        let present = self.contains(purpose);
        self.0 &= !purpose.bit();
        present
    }

    /// The members, in canonical order.
    pub fn iter(self) -> PurposeIter {
        PurposeIter { set: self, next: 0 }
    }

    /// Number of members.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set has no members.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Purpose> for PurposeSet {
    fn from_iter<I: IntoIterator<Item = Purpose>>(iter: I) -> Self {
        let mut set = PurposeSet::empty();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl Extend<Purpose> for PurposeSet {
    fn extend<I: IntoIterator<Item = Purpose>>(&mut self, iter: I) {
        for p in iter {
            self.insert(p);
        }
    }
}

impl IntoIterator for PurposeSet {
    type Item = Purpose;
    type IntoIter = PurposeIter;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a [`PurposeSet`], in canonical order.
#[derive(Debug, Clone)]
pub struct PurposeIter {
    set: PurposeSet,
    next: usize,
}

impl Iterator for PurposeIter {
    type Item = Purpose;

    fn next(&mut self) -> Option<Purpose> {
        while let Some(&p) = Purpose::ALL.get(self.next) {
            self.next += 1;
            if self.set.contains(p) {
                return Some(p);
            }
        }
        None
    }
}

impl fmt::Debug for PurposeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl serde::Serialize for PurposeSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Duplicates are accepted (a set is a set); unknown names are refused, not ignored, so a
/// typo cannot silently narrow or widen what an app may send.
impl<'de> serde::Deserialize<'de> for PurposeSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let purposes = <Vec<Purpose> as serde::Deserialize>::deserialize(deserializer)?;
        Ok(purposes.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_essentials() {
        let cases = [
            (Purpose::Otp, "otp", true),
            (Purpose::Transactional, "transactional", true),
            (Purpose::Alert, "alert", true),
            (Purpose::Notification, "notification", false),
            (Purpose::Support, "support", false),
            (Purpose::Marketing, "marketing", false),
        ];
        assert_eq!(Purpose::ALL.len(), cases.len());
        for (p, name, essential) in cases {
            assert_eq!(p.as_str(), name);
            assert_eq!(p.to_string(), name);
            assert_eq!(Purpose::parse(name), Ok(p));
            assert_eq!(name.parse::<Purpose>(), Ok(p));
            assert_eq!(p.is_essential(), essential, "{name}");
            assert_eq!(
                serde_json::to_string(&p).expect("ser"),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<Purpose>(&format!("\"{name}\"")).expect("de"),
                p
            );
        }
    }

    #[test]
    fn unknown_purposes() {
        for bad in ["", "OTP", "promo", " otp", "marketing "] {
            let err = Purpose::parse(bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_purpose");
        }
        assert!(serde_json::from_str::<Purpose>(r#""spam""#).is_err());
    }

    #[test]
    fn default_set_excludes_marketing() {
        let set = PurposeSet::default_for_new_app();
        for p in Purpose::ALL {
            assert_eq!(set.contains(*p), *p != Purpose::Marketing, "{p}");
        }
        assert_eq!(set.len(), 5);
        assert!(PurposeSet::all().contains(Purpose::Marketing));
    }

    #[test]
    fn set_operations() {
        let mut set = PurposeSet::empty();
        assert!(set.is_empty());
        assert!(set.insert(Purpose::Marketing));
        assert!(!set.insert(Purpose::Marketing));
        assert!(set.insert(Purpose::Otp));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Purpose::Otp, Purpose::Marketing]
        );
        assert!(set.remove(Purpose::Otp));
        assert!(!set.remove(Purpose::Otp));
        assert_eq!(set.len(), 1);
        assert_eq!(format!("{set:?}"), "{Marketing}");
        set.extend([Purpose::Alert]);
        assert_eq!(set.into_iter().count(), 2);
    }

    #[test]
    fn set_serde() {
        let set = PurposeSet::default_for_new_app();
        assert_eq!(
            serde_json::to_string(&set).expect("ser"),
            r#"["otp","transactional","alert","notification","support"]"#
        );
        let back: PurposeSet = serde_json::from_str(r#"["support","otp","otp"]"#).expect("de");
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [Purpose::Otp, Purpose::Support]
        );
        assert_eq!(
            serde_json::from_str::<PurposeSet>("[]").expect("de"),
            PurposeSet::empty()
        );
        assert!(serde_json::from_str::<PurposeSet>(r#"["otp","promo"]"#).is_err());
        assert!(serde_json::from_str::<PurposeSet>(r#""otp""#).is_err());
    }
}
