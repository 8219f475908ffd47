//! Display names. A verified one comes from the authorizer's context; without an
//! authorizer a client may choose one with `?name=` on connect, shown as unverified.

use crate::model::Identity;

/// Longest chosen name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a `name` query parameter was refused (answered 400 on `$connect`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Name must be 1-{MAX_NAME_CHARS} printable characters.")]
pub struct BadName;

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
    if length == 0 || length > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(BadName);
    }
    Ok(Some(Identity { user: name.to_owned(), verified: false }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_printable_and_short() {
        let ok = |n: &str| chosen_identity(Some(n)).unwrap().unwrap();
        assert_eq!(ok("Grace Hopper"), Identity { user: "Grace Hopper".into(), verified: false });
        assert_eq!(ok(&"é".repeat(32)).user.chars().count(), 32, "characters, not bytes");
        assert_eq!(ok("<b>bold</b>").user, "<b>bold</b>", "kept as text; pages render it with textContent");
        for bad in ["", "  ", "a\nb", "tab\there", "\u{7}", &"x".repeat(33)] {
            assert_eq!(chosen_identity(Some(bad)), Err(BadName), "{bad:?}");
        }
        assert_eq!(chosen_identity(None), Ok(None));
    }
}
