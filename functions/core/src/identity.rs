//! Display names. A verified one comes from the authorizer's context; without an
//! authorizer a client may choose one with `?name=` on connect, shown as unverified.
//!
//! A name is a label people read, so it may not carry characters that change how
//! the text around it reads: control characters (newlines, ESC, …) and the
//! bidirectional overrides, isolates and marks that make one name read as
//! another on screen (U+202E shows what follows it right to left). A chosen name
//! with any is refused; a name from a token (chosen by its user at the identity
//! provider) has them removed.

use crate::model::Identity;
use crate::text::is_control_or_bidi;

/// Longest chosen name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a `name` query parameter was refused (answered 400 on `$connect`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Name must be 1-{MAX_NAME_CHARS} printable characters.")]
pub struct BadName;

/// A name from a token with every [control or bidi](is_control_or_bidi) character
/// removed and the ends trimmed; may come out empty.
///
/// ```
/// use chat_core::identity::cleaned_name;
/// assert_eq!(cleaned_name(" ali\u{202E}ce\u{7}\n"), "alice");
/// ```
pub fn cleaned_name(name: &str) -> String {
    name.chars().filter(|&c| !is_control_or_bidi(c)).collect::<String>().trim().to_owned()
}

/// The identity a client chose with `?name=`: trimmed, 1–32 printable
/// characters, never verified. `None` when it chose none.
///
/// ```
/// use chat_core::identity::chosen_identity;
/// assert_eq!(chosen_identity(Some("  Ada ")).unwrap().unwrap().user, "Ada");
/// assert!(chosen_identity(Some("   ")).is_err());
/// ```
pub fn chosen_identity(requested: Option<&str>) -> Result<Option<Identity>, BadName> {
    let Some(name) = requested else { return Ok(None) };
    let name = name.trim();
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME_CHARS || name.chars().any(is_control_or_bidi) {
        return Err(BadName);
    }
    Ok(Some(Identity::chosen(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character the module must keep out of names.
    const UNSAFE: &[char] = &[
        '\u{0}', '\u{7}', '\t', '\n', '\r', '\u{1B}', '\u{7F}', '\u{85}', '\u{9B}', '\u{2028}', '\u{2029}', '\u{202A}',
        '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{200E}',
        '\u{200F}', '\u{061C}',
    ];

    #[test]
    fn names_are_trimmed_printable_and_short() {
        let ok = |n: &str| chosen_identity(Some(n)).unwrap().unwrap();
        assert_eq!(ok("Grace Hopper"), Identity { user: "Grace Hopper".into(), verified: false, user_id: None });
        assert_eq!(ok(&"é".repeat(32)).user.chars().count(), 32, "characters, not bytes");
        assert_eq!(ok("<b>bold</b>").user, "<b>bold</b>", "kept as text; pages render it with textContent");
        assert_eq!(ok("👩\u{200D}💻 Ada").user, "👩\u{200D}💻 Ada", "a zero-width joiner is part of an emoji");
        assert_eq!(ok("עדה").user, "עדה", "right-to-left scripts are names too");
        for bad in ["", "  ", "a\nb", "tab\there", "\u{7}", &"x".repeat(33)] {
            assert_eq!(chosen_identity(Some(bad)), Err(BadName), "{bad:?}");
        }
        assert_eq!(chosen_identity(None), Ok(None));
    }

    #[test]
    fn a_chosen_name_with_a_control_or_bidi_character_is_refused() {
        for &c in UNSAFE {
            let name = format!("ali{c}ce");
            assert_eq!(chosen_identity(Some(&name)), Err(BadName), "{c:?}");
        }
    }

    #[test]
    fn a_token_s_name_loses_control_and_bidi_characters() {
        for &c in UNSAFE {
            assert_eq!(cleaned_name(&format!("{c}ali{c}ce{c}")), "alice", "{c:?}");
        }
        assert_eq!(cleaned_name("exe.\u{202E}txt"), "exe.txt", "no spoofed extension");
        assert_eq!(cleaned_name("\u{2066}\u{2069}"), "", "nothing left: the caller falls back");
        assert_eq!(cleaned_name("Ada Lovelace"), "Ada Lovelace");
    }
}
