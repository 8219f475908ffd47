//! Rooms: every connection belongs to one, and every log event is said in one.
//! A seed client names none and lands in [`DEFAULT_ROOM`].

/// The room of a connection that asked for none (the seed page, wscat).
pub const DEFAULT_ROOM: &str = "lobby";

/// Longest room name; DynamoDB would take more, but a name is shown to people.
pub const MAX_ROOM_LEN: usize = 64;

/// Why a `room` query parameter was refused (answered 400 on `$connect`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Room must be 1-{MAX_ROOM_LEN} characters of A-Z, a-z, 0-9, '_' and '-'.")]
pub struct BadRoom;

/// Checks a requested room name: 1–64 characters of `[A-Za-z0-9_-]`.
/// `None` (no parameter) is the default room.
///
/// ```
/// use chat_core::room::{room_or_default, BadRoom};
/// assert_eq!(room_or_default(None), Ok("lobby"));
/// assert_eq!(room_or_default(Some("rust-users_2")), Ok("rust-users_2"));
/// assert_eq!(room_or_default(Some("no spaces")), Err(BadRoom));
/// ```
pub fn room_or_default(requested: Option<&str>) -> Result<&str, BadRoom> {
    let Some(room) = requested else { return Ok(DEFAULT_ROOM) };
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if room.is_empty() || room.len() > MAX_ROOM_LEN || !room.chars().all(allowed) {
        return Err(BadRoom);
    }
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet_up_to_64() {
        for room in ["a", "lobby", "Team_42-x", &"z".repeat(64)] {
            assert_eq!(room_or_default(Some(room)), Ok(room));
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "z".repeat(65);
        for room in ["", " ", "a b", "a/b", "é", "a.b", "lobby\n", "%41", "<script>", &long] {
            assert_eq!(room_or_default(Some(room)), Err(BadRoom), "{room:?}");
        }
    }
}
