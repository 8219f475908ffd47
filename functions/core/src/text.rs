//! Characters that change how text reads rather than what it says. Display
//! names drop them ([`crate::identity`]) and `replay` escapes them before they
//! reach an operator's terminal ([`crate::replay`]).

/// Whether `c` acts on a terminal or reorders how text is shown: C0 controls
/// (ESC starts colour, cursor and title sequences, CR overwrites the line), DEL,
/// C1 controls (0x9B is a one-character CSI), the line and paragraph separators
/// U+2028/U+2029, and the bidirectional marks, embeddings, overrides and
/// isolates (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069). Joiners (U+200D)
/// are not: they build emoji.
///
/// ```
/// use chat_core::text::is_control_or_bidi;
/// assert!(is_control_or_bidi('\u{202E}') && is_control_or_bidi('\n') && is_control_or_bidi('\u{9b}'));
/// assert!(!is_control_or_bidi('é') && !is_control_or_bidi('\u{200D}'));
/// ```
pub fn is_control_or_bidi(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}')
}
