//! E.164 phone numbers.
//!
//! Users paste numbers from everywhere — address books, spreadsheets, web pages, chat apps —
//! so harmless formatting (spaces, dashes, dots, parentheses, `tel:`, full-width digits,
//! invisible characters) is folded away first. What remains must be strict E.164 and a
//! number that exists in its region's numbering plan. The canonical form is then the one
//! key under which the number is stored, shown (masked) and matched against suppressions
//! and consents: two spellings of one number can never slip past a suppression.
//!
//! A number is personal data. [`E164`]'s `Debug`, `Display` and `Serialize` all produce the
//! masked form; only [`E164::as_str`] yields the full number, for sealing and provider
//! hand-off.

use std::fmt;
use std::sync::OnceLock;

use phonenumber::Mode;

/// Why a string is not an acceptable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// After folding formatting, the text is not `+` followed by 2 to 15 digits, the first
    /// not zero.
    #[error("phone number must be in E.164 format, e.g. +14155550100")]
    NotE164,
    /// The text is E.164-shaped but no such number exists in its region's numbering plan.
    #[error("phone number is not valid for its region")]
    InvalidForRegion,
}

impl PhoneError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        "invalid_phone_number"
    }
}

/// A phone number in canonical E.164 form (`+` and up to 15 digits).
///
/// Prints and serializes masked (`+1415555****`); see the module docs. Equality, ordering
/// and hashing are the canonical string's alone.
#[derive(Clone)]
pub struct E164 {
    number: String,
    /// The region (`None`: a non-geographic number), worked out by [`E164::parse`] or on
    /// the first [`E164::region`] of a number read back from storage. Finding it costs a
    /// parse of the number, and both the guard and routing ask on every message.
    region: OnceLock<Option<&'static str>>,
}

impl PartialEq for E164 {
    fn eq(&self, other: &Self) -> bool {
        self.number == other.number
    }
}

impl Eq for E164 {}

impl std::hash::Hash for E164 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.number.hash(state);
    }
}

impl PartialOrd for E164 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for E164 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.number.cmp(&other.number)
    }
}

impl E164 {
    /// Folds formatting from untrusted input, then requires a valid E.164 number.
    pub fn parse(input: &str) -> Result<E164, PhoneError> {
        let folded = fold(input);
        if !is_e164_shape(&folded) {
            return Err(PhoneError::NotE164);
        }
        let number = phonenumber::parse(None, &folded).map_err(|_| PhoneError::InvalidForRegion)?;
        let region = validate(&number).ok_or(PhoneError::InvalidForRegion)?;
        // The library's own E.164 rendering drops anything it read as a trunk prefix
        // (`+44 07…` is `+44 7…`), so every spelling of one number meets at one key.
        let canonical = number.format().mode(Mode::E164).to_string();
        if !is_e164_shape(&canonical) {
            return Err(PhoneError::NotE164);
        }
        Ok(E164 {
            number: canonical,
            region: OnceLock::from(region),
        })
    }

    /// Wraps a number read back from our own (decrypted) storage without re-validating it:
    /// numbering plans change, and a number we accepted yesterday must still load today.
    pub fn from_trusted(s: String) -> Self {
        E164 {
            number: s,
            region: OnceLock::new(),
        }
    }

    /// The full canonical number. Use only to seal it for storage or hand it to a provider;
    /// everything meant for people or logs takes [`E164::masked`].
    pub fn as_str(&self) -> &str {
        &self.number
    }

    /// The full canonical number as an owned string; same caveat as [`E164::as_str`].
    pub fn into_string(self) -> String {
        self.number
    }

    /// The number with its last four digits replaced by `*`.
    pub fn masked(&self) -> String {
        mask_phone(&self.number)
    }

    /// The ITU country calling code, e.g. `1` or `44`; `0` when the stored value does not
    /// start with a known code (only possible through [`E164::from_trusted`]).
    pub fn country_code(&self) -> u16 {
        let digits = self.number.strip_prefix('+').unwrap_or(&self.number);
        // Country codes are prefix-free, so the first known 1-, 2- or 3-digit prefix is it.
        (1..=3)
            .filter_map(|len| digits.get(..len)?.parse::<u16>().ok())
            .find(|code| phonenumber::metadata::DATABASE.region(code).is_some())
            .unwrap_or(0)
    }

    /// The ISO 3166 region the number belongs to, e.g. `"US"` or `"GB"`; `None` for
    /// non-geographic numbers and numbers the metadata cannot place.
    pub fn region(&self) -> Option<String> {
        self.region
            .get_or_init(|| {
                phonenumber::parse(None, &self.number)
                    .ok()
                    .and_then(|n| region_of(&n))
            })
            .map(str::to_owned)
    }
}

/// libphonenumber's region lookup (`getRegionCodeForNumber`). `PhoneNumber::country().id()`
/// in phonenumber 0.3.10 matches the national number without its leading zeros and so finds
/// no region for e.g. Italian landlines (`+39 06…`); this keeps them.
fn region_of(number: &phonenumber::PhoneNumber) -> Option<&'static str> {
    let db = &*phonenumber::metadata::DATABASE;
    let national = number.national().to_string();
    let regions = db.region(&number.code().value())?;
    if let [only] = regions.as_slice() {
        // "001" is the pseudo-region of non-geographic codes (+800, +882, …).
        return (*only != "001").then_some(*only);
    }
    regions.into_iter().find(|region| {
        let Some(meta) = db.by_id(*region) else {
            return false;
        };
        match meta.leading_digits() {
            Some(pattern) => pattern.find(&national).is_some_and(|m| m.start() == 0),
            None => has_known_type(meta, &national),
        }
    })
}

/// libphonenumber's `isValidNumber` and `getRegionCodeForNumber` in one pass: `None` when
/// the number is not valid, else its region (`Some(None)`: non-geographic).
///
/// `phonenumber::is_valid` finds the region by matching the number against each candidate
/// region's type patterns, then matches them again to decide validity, and [`region_of`]
/// would match them a third time: three passes of regular expressions (each lookup in the
/// crate's regex cache hashes the whole pattern) made parsing a number the largest single
/// cost of accepting a message. The found region's pattern match already answers
/// validity, except where the region was picked by its leading digits.
fn validate(number: &phonenumber::PhoneNumber) -> Option<Option<&'static str>> {
    let db = &*phonenumber::metadata::DATABASE;
    let national = number.national().to_string();
    let code = number.code().value();
    let regions = db.region(&code)?;
    if let [only] = regions.as_slice() {
        // "001" is the pseudo-region of non-geographic codes (+800, +882, …), whose plan
        // is kept under the code.
        let (meta, region) = if *only == "001" {
            (db.by_code(&code)?.into_iter().next()?, None)
        } else {
            (db.by_id(*only)?, Some(*only))
        };
        return has_known_type(meta, &national).then_some(region);
    }
    for region in regions {
        let meta = db.by_id(region)?;
        match meta.leading_digits() {
            Some(pattern) => {
                if pattern.find(&national).is_some_and(|m| m.start() == 0) {
                    return has_known_type(meta, &national).then_some(Some(region));
                }
            }
            None => {
                if has_known_type(meta, &national) {
                    return Some(Some(region));
                }
            }
        }
    }
    None
}

/// Whether the national number has a type (fixed line, mobile, …) in the region's plan:
/// `phonenumber::number_type(…) != Unknown`.
fn has_known_type(meta: &phonenumber::Metadata, national: &str) -> bool {
    let d = meta.descriptors();
    d.general().is_match(national)
        && number_types(d)
            .into_iter()
            .flatten()
            .any(|desc| desc.is_match(national))
}

/// The number types of a plan that `phonenumber::number_type` tells apart. Fixed line and
/// mobile come first because almost every number is one of them; whether a number has a
/// type does not depend on the order.
fn number_types(
    d: &phonenumber::metadata::Descriptors,
) -> [Option<&phonenumber::metadata::Descriptor>; 10] {
    [
        d.fixed_line(),
        d.mobile(),
        d.premium_rate(),
        d.toll_free(),
        d.shared_cost(),
        d.voip(),
        d.personal_number(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("E164").field(&self.masked()).finish()
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl std::str::FromStr for E164 {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serializes the masked form, so a number inside any serialized struct (API response,
/// event, log record) is masked unless the caller deliberately used [`E164::as_str`].
impl serde::Serialize for E164 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// Deserializes untrusted input through [`E164::parse`]. Because serialization masks, a
/// serialized `E164` does not deserialize back: it fails loudly rather than round-tripping
/// to a wrong number.
impl<'de> serde::Deserialize<'de> for E164 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        E164::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Masks a phone number (or anything that may hold one) for display: the last four digits
/// become `*`, or every digit when there are fewer than five. Other characters are kept, so
/// raw user input masks too (`tel:+1 (415) 555-0100` → `tel:+1 (415) 555-****`).
pub fn mask_phone(s: &str) -> String {
    // Any numeric character counts, not only ASCII digits: over-masking raw input that holds
    // full-width or other digits is harmless, under-masking is a leak.
    let digits = s.chars().filter(|c| c.is_numeric()).count();
    let keep = if digits < 5 { 0 } else { digits - 4 };
    let mut seen = 0usize;
    s.chars()
        .map(|c| {
            if c.is_numeric() {
                seen += 1;
                if seen > keep {
                    return '*';
                }
            }
            c
        })
        .collect()
}

/// Parses one number so the phone metadata is loaded at start-up rather than on the first
/// request.
pub fn warm_up() {
    let _ = E164::parse("+14155550100");
}

/// `^\+[1-9]\d{1,14}$`.
fn is_e164_shape(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Removes formatting users paste along with numbers; anything not listed is kept, so the
/// shape check refuses it instead of it being silently dropped.
fn fold(input: &str) -> String {
    let trimmed = input.trim_matches(is_foldable_space);
    let rest = match trimmed.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("tel:") => &trimmed[4..],
        _ => trimmed,
    };
    rest.chars()
        .filter_map(|c| match c {
            '\u{FF10}'..='\u{FF19}' => char::from_u32(u32::from(c) - 0xFF10 + u32::from('0')),
            '\u{FF0B}' => Some('+'),
            c if is_foldable_space(c) || is_separator(c) || is_invisible(c) => None,
            c => Some(c),
        })
        .collect()
}

/// Spaces of every width, but not tabs or line breaks: those are control characters, and a
/// number containing them is more likely garbage than formatting.
fn is_foldable_space(c: char) -> bool {
    c.is_whitespace() && !c.is_control()
}

/// Dashes, dots and parentheses, ASCII and their Unicode look-alikes.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '.' | '(' | ')' | '\u{2010}'
            ..='\u{2015}' // hyphen, non-breaking hyphen, figure/en/em dash, bar
            | '\u{2212}' // minus sign
            | '\u{FE58}' // small em dash
            | '\u{FE63}' // small hyphen-minus
            | '\u{FF0D}' // full-width hyphen-minus
            | '\u{FF0E}' // full-width full stop
            | '\u{FF08}' // full-width left parenthesis
            | '\u{FF09}' // full-width right parenthesis
    )
}

/// Zero-width and direction marks that ride along when numbers are copied from web pages
/// and right-to-left text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' // soft hyphen
            | '\u{200B}'..='\u{200F}' // zero-width space/non-joiner/joiner, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}' // word joiner
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // zero-width no-break space / BOM
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_numbers() {
        let cases = [
            ("+14155550100", "+14155550100", 1, Some("US")),
            ("+12125551234", "+12125551234", 1, Some("US")),
            ("+16135550123", "+16135550123", 1, Some("CA")),
            ("+447400123456", "+447400123456", 44, Some("GB")),
            ("+447911123456", "+447911123456", 44, Some("GG")),
            ("+442079460000", "+442079460000", 44, Some("GB")),
            ("+4915123456789", "+4915123456789", 49, Some("DE")),
            ("+493012345678", "+493012345678", 49, Some("DE")),
            ("+919876543210", "+919876543210", 91, Some("IN")),
            ("+33612345678", "+33612345678", 33, Some("FR")),
            ("+390612345678", "+390612345678", 39, Some("IT")),
            ("+61412345678", "+61412345678", 61, Some("AU")),
            ("+35312345678", "+35312345678", 353, Some("IE")),
            ("+390669812345", "+390669812345", 39, Some("VA")),
            ("+80012345678", "+80012345678", 800, None),
        ];
        for (input, canonical, cc, region) in cases {
            let n = E164::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.as_str(), canonical, "{input}");
            assert_eq!(n.country_code(), cc, "{input}");
            assert_eq!(n.region().as_deref(), region, "{input}");
        }
    }

    #[test]
    fn formatting_is_folded() {
        let cases = [
            "tel:+1 (415) 555-0100",
            "TEL:+14155550100",
            "Tel:+1-415-555-0100",
            "  +1 415 555 0100  ",
            "+1.415.555.0100",
            "+1\u{00A0}415\u{00A0}555\u{00A0}0100",
            "+1\u{202F}415\u{2009}555\u{3000}0100",
            "+1\u{2013}415\u{2014}555\u{2011}0100",
            "+1\u{2212}415\u{2010}555\u{FF0D}0100",
            "+\u{FF11}\u{FF14}\u{FF11}\u{FF15}\u{FF15}\u{FF15}\u{FF15}\u{FF10}\u{FF11}\u{FF10}\u{FF10}",
            "\u{FF0B}14155550100",
            "\u{FF0B}\u{FF11}\u{FF08}415\u{FF09}555\u{FF0E}0100",
            "+1415\u{200B}555\u{200C}01\u{200D}00",
            "\u{FEFF}+14155550100\u{2060}",
            "\u{202A}+1 (415) 555-0100\u{202C}",
            "\u{200E}+14155550100\u{200F}",
            "+1 41\u{00AD}5 555 0100",
        ];
        for input in cases {
            let n = E164::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(n.as_str(), "+14155550100", "{input:?}");
        }
    }

    #[test]
    fn trunk_prefix_after_country_code_is_canonicalized() {
        // Common in the wild: the national "0" kept after the country code. It must land on
        // the same key as the clean form, or it would slip past a suppression.
        let cases = [
            ("+44 07400 123456", "+447400123456"),
            ("+33 06 12 34 56 78", "+33612345678"),
            ("+49 030 12345678", "+493012345678"),
            ("+91 0 98765 43210", "+919876543210"),
            // Italian numbers keep their leading zero: it is part of the number.
            ("+39 06 1234 5678", "+390612345678"),
        ];
        for (input, canonical) in cases {
            let n = E164::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.as_str(), canonical, "{input}");
        }
    }

    #[test]
    fn invalid_numbers() {
        let cases = [
            ("", PhoneError::NotE164),
            ("   ", PhoneError::NotE164),
            ("tel:", PhoneError::NotE164),
            ("14155550100", PhoneError::NotE164),
            ("004414155550100", PhoneError::NotE164),
            ("+04155550100", PhoneError::NotE164),
            ("+1", PhoneError::NotE164),
            ("+1234567890123456", PhoneError::NotE164),
            ("+1415555010O", PhoneError::NotE164),
            ("+1 415 CALL NOW", PhoneError::NotE164),
            ("+1-800-FLOWERS", PhoneError::NotE164),
            ("++14155550100", PhoneError::NotE164),
            ("+1415555+0100", PhoneError::NotE164),
            ("+14155550100;ext=1", PhoneError::NotE164),
            ("+1 415 555 0100 x12", PhoneError::NotE164),
            ("+1\t4155550100", PhoneError::NotE164),
            ("+1\n4155550100", PhoneError::NotE164),
            ("+1/415/5550100", PhoneError::NotE164),
            ("+١٤١٥٥٥٥٠١٠٠", PhoneError::NotE164),
            ("mailto:+14155550100", PhoneError::NotE164),
            ("+1 415 000 0000", PhoneError::InvalidForRegion),
            ("+1 111 555 0100", PhoneError::InvalidForRegion),
            ("+1 555 555 0100", PhoneError::InvalidForRegion),
            ("+440", PhoneError::InvalidForRegion),
            ("+12", PhoneError::InvalidForRegion),
            ("+999123456789", PhoneError::InvalidForRegion),
            ("+44 1", PhoneError::InvalidForRegion),
            ("+4912", PhoneError::InvalidForRegion),
            ("+91 12345", PhoneError::InvalidForRegion),
        ];
        for (input, expected) in cases {
            assert_eq!(E164::parse(input), Err(expected.clone()), "{input:?}");
            assert_eq!(expected.code(), "invalid_phone_number");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            PhoneError::NotE164.to_string(),
            "phone number must be in E.164 format, e.g. +14155550100"
        );
        assert_eq!(
            PhoneError::InvalidForRegion.to_string(),
            "phone number is not valid for its region"
        );
    }

    #[test]
    fn masking() {
        let cases = [
            ("+14155550100", "+1415555****"),
            ("+447911123456", "+44791112****"),
            ("+12345", "+1****"),
            ("+1234", "+****"),
            ("+12", "+**"),
            ("", ""),
            ("tel:+1 (415) 555-0100", "tel:+1 (415) 555-****"),
            ("+\u{FF11}\u{FF14}\u{FF11}\u{FF15}\u{FF15}", "+\u{FF11}****"),
        ];
        for (input, masked) in cases {
            assert_eq!(mask_phone(input), masked, "{input:?}");
        }
    }

    #[test]
    fn only_as_str_shows_the_full_number() {
        let n = E164::parse("+14155550100").expect("valid");
        assert_eq!(n.masked(), "+1415555****");
        assert_eq!(n.to_string(), "+1415555****");
        assert_eq!(format!("{n:?}"), r#"E164("+1415555****")"#);
        assert_eq!(format!("{:?}", Some(&n)), r#"Some(E164("+1415555****"))"#);
        assert_eq!(serde_json::to_string(&n).expect("ser"), r#""+1415555****""#);
        assert_eq!(n.as_str(), "+14155550100");
    }

    #[test]
    fn deserialize_validates_and_masked_form_does_not_round_trip() {
        let n: E164 = serde_json::from_str(r#""+1 (415) 555-0100""#).expect("de");
        assert_eq!(n.as_str(), "+14155550100");
        assert!(serde_json::from_str::<E164>(r#""+1415555****""#).is_err());
        assert!(serde_json::from_str::<E164>(r#""4155550100""#).is_err());
    }

    #[test]
    fn from_trusted_keeps_value() {
        let n = E164::from_trusted("+14155550100".to_owned());
        assert_eq!(n.as_str(), "+14155550100");
        assert_eq!(n.country_code(), 1);
        let odd = E164::from_trusted("garbage".to_owned());
        assert_eq!(odd.country_code(), 0);
        assert_eq!(odd.region(), None);
    }

    #[test]
    fn canonical_forms_compare_equal() {
        let a = E164::parse("tel:+1 (415) 555-0100").expect("valid");
        let b = E164::parse("+14155550100").expect("valid");
        assert_eq!(a, b);
    }

    /// `validate` gives what `phonenumber::is_valid` and `region_of` give, for every
    /// example number in the metadata and for variants of each (a digit changed, added or
    /// dropped), valid and invalid alike.
    #[test]
    fn one_pass_validation_agrees_with_the_library() {
        let db = &*phonenumber::metadata::DATABASE;
        let (mut valid, mut checked) = (0, 0);
        for meta in db.iter() {
            let d = meta.descriptors();
            let examples = std::iter::once(d.general())
                .chain(number_types(d).into_iter().flatten())
                .filter_map(|desc| desc.example());
            for example in examples {
                let mut variants = vec![
                    example.to_owned(),
                    format!("{example}7"),
                    example[..example.len().saturating_sub(1)].to_owned(),
                ];
                for (i, c) in example.char_indices() {
                    let digit = c.to_digit(10).unwrap_or(0);
                    let mut v = example.to_owned();
                    v.replace_range(i..i + 1, &((digit + 3) % 10).to_string());
                    variants.push(v);
                }
                for v in variants {
                    let text = format!("+{}{v}", meta.country_code());
                    let Ok(n) = phonenumber::parse(None, &text) else {
                        continue;
                    };
                    let library = phonenumber::is_valid(&n).then(|| region_of(&n));
                    assert_eq!(validate(&n), library, "{text}");
                    checked += 1;
                    valid += usize::from(library.is_some());
                }
            }
        }
        // The set holds both kinds, in numbers.
        assert!(
            valid > 1_000 && checked - valid > 1_000,
            "{valid} of {checked}"
        );
    }

    #[test]
    fn warm_up_does_not_panic() {
        warm_up();
    }
}
