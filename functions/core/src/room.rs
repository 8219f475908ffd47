//! Rooms: every log event is said in one, and a connection hears the rooms it
//! is subscribed to — its home room (`?room=`; a seed client names none and
//! lands in [`DEFAULT_ROOM`]) and any it subscribes to later.

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

/// Checks a room name a frame or a token gives (the rule of [`room_or_default`]).
pub fn valid_room(room: &str) -> Result<&str, BadRoom> {
    room_or_default(Some(room))
}

/// Rooms one connection may be subscribed to at once, unless configured.
/// Ably allows 200 channels per connection, Supabase 100: a person in a
/// hundred rooms is rare, and each room costs a membership row and a share of
/// every `rooms` answer.
pub const DEFAULT_MAX_ROOMS: usize = 100;

/// How many rooms a connection may hold; read once per cold start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLimits {
    pub max_rooms: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self { max_rooms: DEFAULT_MAX_ROOMS }
    }
}

impl RoomLimits {
    /// Reads `MAX_ROOMS_PER_CONNECTION` (1–1000; unset or blank: [`DEFAULT_MAX_ROOMS`]) through `var`.
    ///
    /// ```
    /// use chat_core::room::RoomLimits;
    /// let limits = RoomLimits::from_settings(|_| Some("5".into())).unwrap();
    /// assert_eq!(limits.max_rooms, 5);
    /// assert!(RoomLimits::from_settings(|_| Some("0".into())).is_err());
    /// ```
    pub fn from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, crate::auth::SettingsError> {
        match var("MAX_ROOMS_PER_CONNECTION").filter(|v| !v.trim().is_empty()) {
            None => Ok(Self::default()),
            Some(value) => match value.trim().parse::<usize>() {
                Ok(max_rooms) if (1..=1000).contains(&max_rooms) => Ok(Self { max_rooms }),
                _ => Err(crate::auth::SettingsError(format!(
                    "MAX_ROOMS_PER_CONNECTION must be a whole number from 1 to 1000, not {value:?}"
                ))),
            },
        }
    }
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
