//! SMS character encoding and segmenting (3GPP TS 23.038 / GSM 03.38, TS 23.040).
//!
//! A text that fits the GSM 7-bit default alphabet (basic table plus extension table) goes as
//! GSM-7, anything else as UCS-2 (UTF-16 code units). One SMS carries 160 septets or 70 UCS-2
//! units; a longer text is sent concatenated, and each part loses room to the concatenation
//! header: 153 septets or 67 units. Parts are cut so that an extension character's escape
//! pair and a UTF-16 surrogate pair never straddle two parts — handsets would otherwise show
//! garbage at the seam — which is why counting is done part by part, not by dividing.
//!
//! National language shift tables are not used: not every carrier supports them, and a
//! message that silently falls back would cost more segments than we quoted.

use crate::parse_error::string_enum;

string_enum! {
    /// How an SMS text is encoded on the wire.
    pub enum Encoding: "encoding", "invalid_encoding" {
        /// GSM 03.38 7-bit default alphabet.
        Gsm7 => "gsm7",
        /// UCS-2 (in practice UTF-16, so characters outside the BMP take two units).
        Ucs2 => "ucs2",
    }
}

/// What a text costs to send as SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SegmentInfo {
    /// The encoding the text needs.
    pub encoding: Encoding,
    /// How many SMS the text is sent as (1 for an empty text: it is still one message).
    pub segments: u32,
    /// Septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2.
    pub units: u32,
}

/// Capacity of a single, unconcatenated SMS, in septets.
pub const GSM7_SINGLE: u32 = 160;
/// Capacity of one part of a concatenated SMS, in septets.
pub const GSM7_MULTI: u32 = 153;
/// Capacity of a single, unconcatenated SMS, in UCS-2 units.
pub const UCS2_SINGLE: u32 = 70;
/// Capacity of one part of a concatenated SMS, in UCS-2 units.
pub const UCS2_MULTI: u32 = 67;

/// The septet that switches to the extension table for the next septet.
pub const GSM7_ESCAPE: u8 = 0x1B;

/// GSM 03.38 default alphabet, indexed by septet value. Index 0x1B is the escape code, not a
/// character; the placeholder there is never matched (see [`basic_code`]).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// GSM 03.38 extension table: character and the septet sent after [`GSM7_ESCAPE`].
const EXTENSION: [(char, u8); 10] = [
    ('\u{0C}', 0x0A), // form feed (page break)
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

fn basic_code(c: char) -> Option<u8> {
    BASIC
        .iter()
        .position(|&b| b == c)
        .filter(|&i| i != usize::from(GSM7_ESCAPE))
        .and_then(|i| u8::try_from(i).ok())
}

fn extension_code(c: char) -> Option<u8> {
    EXTENSION
        .iter()
        .find(|&&(e, _)| e == c)
        .map(|&(_, code)| code)
}

/// Septets `c` takes in GSM-7, or `None` when it is not in the alphabet.
fn gsm7_cost(c: char) -> Option<u32> {
    if basic_code(c).is_some() {
        Some(1)
    } else if extension_code(c).is_some() {
        Some(2)
    } else {
        None
    }
}

/// How a text is cut: its encoding, total units, and the byte range of each part.
struct Plan {
    encoding: Encoding,
    units: u32,
    parts: Vec<(usize, usize)>,
}

fn plan(text: &str) -> Plan {
    let gsm_costs: Option<Vec<u32>> = text.chars().map(gsm7_cost).collect();
    let (encoding, costs, single, multi) = match gsm_costs {
        Some(costs) => (Encoding::Gsm7, costs, GSM7_SINGLE, GSM7_MULTI),
        None => (
            Encoding::Ucs2,
            text.chars().map(|c| c.len_utf16() as u32).collect(),
            UCS2_SINGLE,
            UCS2_MULTI,
        ),
    };
    let units = costs.iter().fold(0u32, |acc, &c| acc.saturating_add(c));
    if units <= single {
        return Plan {
            encoding,
            units,
            parts: vec![(0, text.len())],
        };
    }
    let mut parts = Vec::new();
    let mut start = 0usize;
    let mut used = 0u32;
    for ((offset, _), cost) in text.char_indices().zip(costs) {
        // A character that does not fit whole opens the next part: escape pairs and
        // surrogate pairs are never split.
        if used + cost > multi {
            parts.push((start, offset));
            start = offset;
            used = 0;
        }
        used += cost;
    }
    parts.push((start, text.len()));
    Plan {
        encoding,
        units,
        parts,
    }
}

/// The encoding a text needs, its length in that encoding's units and its segment count.
pub fn segment_info(text: &str) -> SegmentInfo {
    let plan = plan(text);
    SegmentInfo {
        encoding: plan.encoding,
        segments: u32::try_from(plan.parts.len()).unwrap_or(u32::MAX),
        units: plan.units,
    }
}

/// The text cut into the parts [`segment_info`] counts, for providers (SMPP) that send
/// concatenated messages part by part. Always at least one part.
pub fn split_segments(text: &str) -> Vec<String> {
    plan(text)
        .parts
        .into_iter()
        .map(|(start, end)| text[start..end].to_owned())
        .collect()
}

/// Whether every character of `text` is in the GSM 7-bit default alphabet or its extension.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_cost(c).is_some())
}

/// Encodes `text` as unpacked septet values (one per byte, extension characters as
/// [`GSM7_ESCAPE`] then their code), or `None` when a character is not GSM-7.
pub fn gsm7_encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(code) = basic_code(c) {
            out.push(code);
        } else {
            out.push(GSM7_ESCAPE);
            out.push(extension_code(c)?);
        }
    }
    Some(out)
}

/// Decodes unpacked septet values. Follows TS 23.038's advice for the receiving side: an
/// escape before an unknown extension code yields the basic-table character, a doubled or
/// trailing escape yields a space, and a byte above 0x7F (not a septet) yields U+FFFD.
pub fn gsm7_decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut bytes = septets.iter().copied();
    while let Some(b) = bytes.next() {
        if b == GSM7_ESCAPE {
            match bytes.next() {
                Some(GSM7_ESCAPE) | None => out.push(' '),
                Some(code) => out.push(
                    EXTENSION
                        .iter()
                        .find(|&&(_, e)| e == code)
                        .map(|&(c, _)| c)
                        .unwrap_or_else(|| decode_basic(code)),
                ),
            }
        } else {
            out.push(decode_basic(b));
        }
    }
    out
}

fn decode_basic(b: u8) -> char {
    BASIC.get(usize::from(b)).copied().unwrap_or('\u{FFFD}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(encoding: Encoding, segments: u32, units: u32) -> SegmentInfo {
        SegmentInfo {
            encoding,
            segments,
            units,
        }
    }

    #[test]
    fn tables_are_exact() {
        let basic: String = BASIC.iter().collect();
        assert_eq!(BASIC.len(), 128);
        assert_eq!(
            basic.replace('\u{1B}', ""),
            "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
             ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
        );
        // No character may appear twice, or encoding would be ambiguous.
        for (i, c) in BASIC.iter().enumerate() {
            assert_eq!(BASIC.iter().position(|x| x == c), Some(i), "{c:?}");
            assert!(extension_code(*c).is_none(), "{c:?} in both tables");
        }
        assert_eq!(basic_code('\u{1B}'), None);
        let ext: String = EXTENSION.iter().map(|&(c, _)| c).collect();
        assert_eq!(ext, "\u{0C}^{}\\[~]|€");
    }

    #[test]
    fn segment_table() {
        let a = |n: usize| "a".repeat(n);
        let zh = |n: usize| "ж".repeat(n);
        let euro = |n: usize| "€".repeat(n);
        let emoji = |n: usize| "😀".repeat(n);
        let cases: Vec<(String, SegmentInfo)> = vec![
            (String::new(), info(Encoding::Gsm7, 1, 0)),
            ("Your code is 481516".into(), info(Encoding::Gsm7, 1, 19)),
            (a(160), info(Encoding::Gsm7, 1, 160)),
            (a(161), info(Encoding::Gsm7, 2, 161)),
            (a(306), info(Encoding::Gsm7, 2, 306)),
            (a(307), info(Encoding::Gsm7, 3, 307)),
            (a(459), info(Encoding::Gsm7, 3, 459)),
            (a(460), info(Encoding::Gsm7, 4, 460)),
            (euro(80), info(Encoding::Gsm7, 1, 160)),
            (euro(81), info(Encoding::Gsm7, 2, 162)),
            (format!("{}€", a(158)), info(Encoding::Gsm7, 1, 160)),
            (format!("{}€", a(159)), info(Encoding::Gsm7, 2, 161)),
            // 306 septets, but the escape pair at 153/154 pushes a third part.
            (
                format!("{}€{}", a(152), a(152)),
                info(Encoding::Gsm7, 3, 306),
            ),
            (
                format!("{}€{}", a(151), a(153)),
                info(Encoding::Gsm7, 2, 306),
            ),
            ("{}[]~|^\\\u{0C}".into(), info(Encoding::Gsm7, 1, 18)),
            ("Ça coûte 5€".into(), info(Encoding::Ucs2, 1, 11)),
            ("Ça été très bien".into(), info(Encoding::Gsm7, 1, 16)),
            ("Ça a été réglé à 5€".into(), info(Encoding::Gsm7, 1, 20)),
            ("ΔΦΓΛΩΠΨΣΘΞ".into(), info(Encoding::Gsm7, 1, 10)),
            ("tab\there".into(), info(Encoding::Ucs2, 1, 8)),
            ("ç".into(), info(Encoding::Ucs2, 1, 1)),
            (zh(70), info(Encoding::Ucs2, 1, 70)),
            (zh(71), info(Encoding::Ucs2, 2, 71)),
            (zh(134), info(Encoding::Ucs2, 2, 134)),
            (zh(135), info(Encoding::Ucs2, 3, 135)),
            (emoji(35), info(Encoding::Ucs2, 1, 70)),
            (emoji(36), info(Encoding::Ucs2, 2, 72)),
            // 134 units, but the surrogate pair at 67/68 pushes a third part.
            (
                format!("{}😀{}", zh(66), zh(66)),
                info(Encoding::Ucs2, 3, 134),
            ),
            (
                format!("{}😀{}", zh(65), zh(67)),
                info(Encoding::Ucs2, 2, 134),
            ),
            (format!("{}😀", a(69)), info(Encoding::Ucs2, 2, 71)),
        ];
        for (text, expected) in &cases {
            assert_eq!(segment_info(text), *expected, "{text:?}");
            let parts = split_segments(text);
            assert_eq!(parts.len() as u32, expected.segments, "{text:?}");
            assert_eq!(parts.concat(), *text);
        }
    }

    #[test]
    fn parts_respect_capacity_and_pairs() {
        let texts = [
            format!("{}€{}", "a".repeat(152), "b".repeat(200)),
            format!("{}😀{}", "ж".repeat(66), "ы".repeat(100)),
            "€a".repeat(200),
            "😀ж".repeat(100),
        ];
        for text in &texts {
            let whole = segment_info(text);
            let parts = split_segments(text);
            assert!(parts.len() > 1);
            let mut total = 0;
            for part in &parts {
                let units = match whole.encoding {
                    Encoding::Gsm7 => part.chars().map(|c| gsm7_cost(c).unwrap_or(99)).sum(),
                    Encoding::Ucs2 => part.encode_utf16().count() as u32,
                };
                let cap = match whole.encoding {
                    Encoding::Gsm7 => GSM7_MULTI,
                    Encoding::Ucs2 => UCS2_MULTI,
                };
                assert!(units <= cap, "part of {units} units");
                total += units;
            }
            assert_eq!(total, whole.units);
        }
        let parts = split_segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152)));
        assert_eq!(parts[0], "a".repeat(152));
        assert!(parts[1].starts_with('€'));
    }

    #[test]
    fn gsm7_round_trip() {
        let text = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà{}[]~|^\\€\u{0C}";
        let septets = gsm7_encode(text).expect("all GSM");
        assert!(septets.iter().all(|&b| b < 0x80));
        assert_eq!(gsm7_decode(&septets), text);
        assert!(is_gsm7(text));
    }

    #[test]
    fn gsm7_encode_values() {
        assert_eq!(gsm7_encode("@A€"), Some(vec![0x00, 0x41, 0x1B, 0x65]));
        assert_eq!(gsm7_encode("é\n"), Some(vec![0x05, 0x0A]));
        assert_eq!(gsm7_encode(""), Some(vec![]));
        assert_eq!(gsm7_encode("ж"), None);
        assert_eq!(gsm7_encode("a\u{1B}"), None);
        assert_eq!(gsm7_encode("\t"), None);
        assert!(!is_gsm7("😀"));
    }

    #[test]
    fn gsm7_decode_oddities() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x1B, 0x65], "€"),
            (&[0x1B, 0x41], "A"),
            (&[0x41, 0x1B], "A "),
            (&[0x1B, 0x1B, 0x41], " A"),
            (&[0x80, 0x41], "\u{FFFD}A"),
            (&[], ""),
        ];
        for (septets, text) in cases {
            assert_eq!(gsm7_decode(septets), *text, "{septets:?}");
        }
    }

    #[test]
    fn encoding_serde_and_parse() {
        assert_eq!(
            serde_json::to_string(&Encoding::Gsm7).expect("ser"),
            r#""gsm7""#
        );
        assert_eq!(
            serde_json::from_str::<Encoding>(r#""ucs2""#).expect("de"),
            Encoding::Ucs2
        );
        assert!(Encoding::parse("GSM7").is_err());
        assert_eq!(Encoding::parse("gsm7"), Ok(Encoding::Gsm7));
        let json = serde_json::to_value(info(Encoding::Ucs2, 2, 71)).expect("ser");
        assert_eq!(
            json,
            serde_json::json!({"encoding": "ucs2", "segments": 2, "units": 71})
        );
    }
}
