//! Norwegian organisation numbers: the mod-11 check, the `0192:<orgnr>` /
//! bare 9-digit entry form, and access-list files (pure: text in, entries out).

use thiserror::Error;

/// The ISO 6523 ICD prefix naming a Norwegian organisation number.
pub const ISO6523_NO_PREFIX: &str = "0192:";

/// Weights of the first eight digits for the mod-11 check digit.
const WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// Why an access-list entry is not an organisation number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrgNoError {
    #[error("`{0}` is not an organisation number (expected `0192:<9 digits>` or 9 digits)")]
    Shape(String),
    #[error("`{0}` is not an organisation number (mod-11 check digit fails)")]
    CheckDigit(String),
}

/// True when `digits` is exactly nine ASCII digits whose last is the mod-11
/// check digit of the first eight (weights 3 2 7 6 5 4 3 2; a remainder
/// giving check digit 10 makes the number invalid).
pub fn is_valid_orgnr(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..8]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(bytes[8] - b'0') == check
}

/// Parses one entry (`0192:<orgnr>` or a bare 9-digit orgnr, surrounding
/// whitespace ignored) and returns it normalised as `0192:<orgnr>`.
pub fn normalize_org_entry(entry: &str) -> Result<String, OrgNoError> {
    let trimmed = entry.trim();
    let digits = trimmed.strip_prefix(ISO6523_NO_PREFIX).unwrap_or(trimmed);
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OrgNoError::Shape(trimmed.to_string()));
    }
    if !is_valid_orgnr(digits) {
        return Err(OrgNoError::CheckDigit(trimmed.to_string()));
    }
    Ok(format!("{ISO6523_NO_PREFIX}{digits}"))
}

/// A bad line of an access-list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessListLineError {
    /// 1-based line number in the file.
    pub line: usize,
    pub error: OrgNoError,
}

/// Parses an access-list file: one entry a line, blank lines and `#`
/// comments (whole-line or trailing) allowed. Returns the normalised entries
/// in file order, or every bad line.
pub fn parse_access_list(text: &str) -> Result<Vec<String>, Vec<AccessListLineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    // A byte-order mark (some Windows editors write one) is not an entry.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let content = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if content.is_empty() {
            continue;
        }
        match normalize_org_entry(content) {
            Ok(entry) => entries.push(entry),
            Err(error) => errors.push(AccessListLineError {
                line: index + 1,
                error,
            }),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_synthetic_numbers_pass() {
        for n in ["310497460", "302685991", "303137211", "991825827"] {
            assert!(is_valid_orgnr(n), "{n}");
        }
    }

    #[test]
    fn a_changed_digit_fails_the_check() {
        assert!(!is_valid_orgnr("310497461"));
        assert!(!is_valid_orgnr("991825828"));
    }

    #[test]
    fn check_digit_ten_is_invalid() {
        // 10000001x: 3*1 + 2*1 = 5; 11 - 5 = 6 -> valid only with 6.
        assert!(is_valid_orgnr("100000016"));
        // 11100000x: 3 + 2 + 7 = 12; 12 % 11 = 1 -> check digit 10: never valid.
        for last in 0..=9 {
            assert!(!is_valid_orgnr(&format!("11100000{last}")));
        }
    }

    #[test]
    fn shape_is_checked() {
        assert!(!is_valid_orgnr("31049746"));
        assert!(!is_valid_orgnr("3104974600"));
        assert!(!is_valid_orgnr("31049746a"));
        assert!(!is_valid_orgnr(""));
        assert!(!is_valid_orgnr("３10497460"));
    }

    #[test]
    fn entries_normalise_to_iso6523() {
        assert_eq!(
            normalize_org_entry("310497460").as_deref(),
            Ok("0192:310497460")
        );
        assert_eq!(
            normalize_org_entry(" 0192:310497460 ").as_deref(),
            Ok("0192:310497460")
        );
    }

    #[test]
    fn bad_entries_say_why() {
        assert!(matches!(
            normalize_org_entry("0193:310497460"),
            Err(OrgNoError::Shape(_))
        ));
        assert!(matches!(
            normalize_org_entry("0192:31049746"),
            Err(OrgNoError::Shape(_))
        ));
        assert!(matches!(
            normalize_org_entry("0192:310497461"),
            Err(OrgNoError::CheckDigit(_))
        ));
        assert!(matches!(normalize_org_entry(""), Err(OrgNoError::Shape(_))));
    }

    #[test]
    fn access_list_allows_comments_and_blank_lines() {
        let text = "# consumers\n\n310497460\n0192:991825827   # a bank\n   \n#303137211\n";
        assert_eq!(
            parse_access_list(text),
            Ok(vec![
                "0192:310497460".to_string(),
                "0192:991825827".to_string()
            ])
        );
    }

    #[test]
    fn access_list_reports_every_bad_line() {
        let text = "310497460\n12345\n# ok\n310497461 # typo\n";
        let errors = parse_access_list(text).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert!(matches!(errors[1].error, OrgNoError::CheckDigit(_)));
    }

    #[test]
    fn access_list_tolerates_crlf_and_a_byte_order_mark() {
        assert_eq!(
            parse_access_list("\u{feff}310497460\r\n991825827\r\n"),
            Ok(vec![
                "0192:310497460".to_string(),
                "0192:991825827".to_string()
            ])
        );
    }

    #[test]
    fn empty_access_list_is_empty() {
        assert_eq!(parse_access_list("# nobody yet\n"), Ok(vec![]));
    }
}
