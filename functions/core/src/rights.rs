//! What a connection may do in each room: read (subscribe, `history`, `who`),
//! write (send; react and edit its own lines) and moderate (delete anyone's
//! line, kick, ban). Rights come from the token's `chat.rights` claim,
//! `{"lobby":"rw","team-*":"rw","announcements":"r"}`, or the deployment's
//! default; the authorizer turns them into one compact context value at
//! `$connect` (`lobby=rw;team-*=rw;announcements=r`), which API Gateway repeats
//! on every later event of the connection. Handlers read them from there, never
//! from a frame.
//!
//! A pattern is a room name or a prefix ending in `*` (`*` alone is every
//! room). The most specific match wins: an exact name over any prefix, a longer
//! prefix over a shorter one; a room no pattern matches gets no rights. So
//! `{"*":"rw","secret-*":""}` opens everything but the `secret-` rooms.

use std::fmt;

use serde::Serialize;

use crate::room::MAX_ROOM_LEN;

/// One right, named by its letter in a grant and by its word in a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Read,
    Write,
    Moderate,
}

impl Right {
    pub const ALL: [Right; 3] = [Right::Read, Right::Write, Right::Moderate];

    fn letter(self) -> char {
        match self {
            Right::Read => 'r',
            Right::Write => 'w',
            Right::Moderate => 'm',
        }
    }

    /// The word a refusal names it by (`read`, `write`, `moderate`).
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Moderate => "moderate",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The rights one grant gives: any of `r`, `w`, `m` (none is a valid grant: it
/// shuts the rooms it matches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    /// Read and write: what every room allows when nothing is configured.
    pub const READ_WRITE: Access = Access(1 | 2);

    pub fn allows(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    fn parse(letters: &str) -> Result<Access, BadRights> {
        let mut access = Access::default();
        for letter in letters.chars() {
            let right = Right::ALL
                .into_iter()
                .find(|r| r.letter() == letter)
                .ok_or_else(|| BadRights(format!("\"{letters}\": rights are letters of r, w and m")))?;
            access.0 |= right.bit();
        }
        Ok(access)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Right::ALL.into_iter().filter(|r| self.allows(*r)).try_for_each(|r| write!(f, "{}", r.letter()))
    }
}

/// Why a rights claim or setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Bad rights: {0}")]
pub struct BadRights(pub String);

/// Most grants one connection may carry: they travel in the authorizer's
/// context (≤ 8 KB in all, with the rooms, name and user id) on every event.
pub const MAX_GRANTS: usize = 32;

/// Longest compact form, in bytes (32 grants of 40-byte patterns fit).
pub const MAX_RIGHTS_BYTES: usize = 1536;

/// The compact form of the open default: read and write everywhere, no moderation.
pub const OPEN: &str = "*=rw";

/// A connection's rights: grants of room patterns, most specific first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rights {
    grants: Vec<(String, Access)>,
}

impl Default for Rights {
    /// [`OPEN`]: what a deployment without configured rights allows everyone.
    fn default() -> Self {
        Self::parse(OPEN).expect("the open default parses")
    }
}

impl Rights {
    /// No rights anywhere: what a connection whose rights cannot be read gets.
    pub fn none() -> Self {
        Self { grants: Vec::new() }
    }

    /// The compact form, `pattern=letters` joined by `;` (room names hold
    /// neither): what the authorizer's context and `DEFAULT_RIGHTS` carry.
    ///
    /// ```
    /// use chat_core::rights::{Right, Rights};
    /// let rights = Rights::parse("lobby=rw;team-*=rw;announcements=r").unwrap();
    /// assert!(rights.allows("team-a", Right::Write));
    /// assert!(!rights.allows("announcements", Right::Write));
    /// assert!(!rights.allows("elsewhere", Right::Read));
    /// ```
    pub fn parse(compact: &str) -> Result<Self, BadRights> {
        let grants = compact.split(';').map(str::trim).filter(|g| !g.is_empty()).map(|grant| {
            let (pattern, letters) = grant
                .split_once('=')
                .ok_or_else(|| BadRights(format!("\"{grant}\" is not pattern=rights (e.g. team-*=rw)")))?;
            Ok((pattern.trim().to_owned(), letters.trim().to_owned()))
        });
        Self::from_grants(grants.collect::<Result<Vec<_>, BadRights>>()?)
    }

    /// The token's `chat.rights` claim: an object of pattern → letters.
    ///
    /// ```
    /// use chat_core::rights::{Right, Rights};
    /// let claim = serde_json::json!({"*": "r", "mods": "rwm"});
    /// let rights = Rights::from_claim(&claim).unwrap();
    /// assert!(rights.allows("mods", Right::Moderate) && !rights.allows("lobby", Right::Write));
    /// ```
    pub fn from_claim(claim: &serde_json::Value) -> Result<Self, BadRights> {
        let object = claim.as_object().ok_or_else(|| BadRights("chat.rights must be an object".into()))?;
        let grants = object.iter().map(|(pattern, letters)| match letters.as_str() {
            Some(letters) => Ok((pattern.clone(), letters.to_owned())),
            None => Err(BadRights(format!("chat.rights.{pattern} must be a string of r, w and m"))),
        });
        Self::from_grants(grants.collect::<Result<Vec<_>, BadRights>>()?)
    }

    /// Several sets of rights as one, room by room: wherever any of them
    /// grants a right, the union does (a user in two Cognito groups has both
    /// groups' rights). Each pattern of any set gets every right each set gives
    /// the rooms it matches, so the most specific match still decides.
    pub fn union<'a>(all: impl IntoIterator<Item = &'a Rights> + Clone) -> Result<Self, BadRights> {
        let mut grants: Vec<(String, Access)> = Vec::new();
        for (pattern, _) in all.clone().into_iter().flat_map(|r| r.grants.iter()) {
            if grants.iter().any(|(p, _)| p == pattern) {
                continue;
            }
            let access =
                all.clone().into_iter().fold(Access::default(), |a, set| Access(a.0 | set.covering(pattern).0));
            grants.push((pattern.clone(), access));
        }
        Self::checked(grants)
    }

    /// What the most specific grant covering every room `pattern` matches gives.
    fn covering(&self, pattern: &str) -> Access {
        let covers = |grant: &str| match grant.strip_suffix('*') {
            Some(prefix) => pattern.strip_suffix('*').unwrap_or(pattern).starts_with(prefix),
            None => grant == pattern,
        };
        self.grants.iter().find(|(grant, _)| covers(grant)).map(|(_, access)| *access).unwrap_or_default()
    }

    fn from_grants(grants: Vec<(String, String)>) -> Result<Self, BadRights> {
        let mut parsed: Vec<(String, Access)> = Vec::with_capacity(grants.len());
        for (pattern, letters) in grants {
            check_pattern(&pattern)?;
            if parsed.iter().any(|(p, _)| *p == pattern) {
                return Err(BadRights(format!("\"{pattern}\" is granted twice")));
            }
            parsed.push((pattern, Access::parse(&letters)?));
        }
        Self::checked(parsed)
    }

    fn checked(mut grants: Vec<(String, Access)>) -> Result<Self, BadRights> {
        if grants.len() > MAX_GRANTS {
            return Err(BadRights(format!("{} grants; at most {MAX_GRANTS}", grants.len())));
        }
        // Most specific first: exact names, then prefixes from the longest.
        grants.sort_by(|(a, _), (b, _)| specificity(b).cmp(&specificity(a)).then_with(|| a.cmp(b)));
        let rights = Self { grants };
        let bytes = rights.to_string().len();
        if bytes > MAX_RIGHTS_BYTES {
            return Err(BadRights(format!("{bytes} bytes as text; at most {MAX_RIGHTS_BYTES}")));
        }
        Ok(rights)
    }

    /// `DEFAULT_RIGHTS` read through `var`: the rights of a token without a
    /// `chat.rights` claim and of every connection when no authorizer runs.
    /// Unset or blank: [`OPEN`], today's behaviour (anyone reads and writes anywhere).
    ///
    /// ```
    /// use chat_core::rights::{Right, Rights};
    /// let read_only = Rights::default_from_settings(|_| Some("*=r".into())).unwrap();
    /// assert!(!read_only.allows("lobby", Right::Write));
    /// assert_eq!(Rights::default_from_settings(|_| None).unwrap(), Rights::default());
    /// ```
    pub fn default_from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, BadRights> {
        match var("DEFAULT_RIGHTS").filter(|v| !v.trim().is_empty()) {
            Some(compact) => Self::parse(&compact).map_err(|e| BadRights(format!("DEFAULT_RIGHTS: {}", e.0))),
            None => Ok(Self::default()),
        }
    }

    /// What the most specific grant matching `room` gives (none if no grant does).
    pub fn in_room(&self, room: &str) -> Access {
        let matches = |pattern: &str| match pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => pattern == room,
        };
        self.grants.iter().find(|(pattern, _)| matches(pattern)).map(|(_, access)| *access).unwrap_or_default()
    }

    pub fn allows(&self, room: &str, right: Right) -> bool {
        self.in_room(room).allows(right)
    }

    /// `Ok` when `right` is held in `room`, else the refusal naming both.
    pub fn check<'a>(&self, room: &'a str, right: Right) -> Result<(), Forbidden<'a>> {
        if self.allows(room, right) { Ok(()) } else { Err(Forbidden { room, right }) }
    }
}

impl fmt::Display for Rights {
    /// The compact form [`Rights::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pattern, access)) in self.grants.iter().enumerate() {
            write!(f, "{}{pattern}={access}", if i == 0 { "" } else { ";" })?;
        }
        Ok(())
    }
}

/// What a client is told of a room it hears: its rights there (`"rw"`), and
/// whether the room is private — closed to anyone the deployment's default
/// rights alone would let in (the page shows a lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomAccess {
    pub rights: Access,
    pub private: bool,
}

impl RoomAccess {
    /// `rights`' access to `room`, private unless `default` lets anyone read it.
    ///
    /// ```
    /// use chat_core::rights::{RoomAccess, Rights};
    /// let (mine, default) = (Rights::parse("*=rw;mods=rwm").unwrap(), Rights::parse("lobby=rw").unwrap());
    /// let mods = RoomAccess::of(&mine, &default, "mods");
    /// assert_eq!((mods.rights.to_string(), mods.private), ("rwm".to_owned(), true));
    /// assert!(!RoomAccess::of(&mine, &default, "lobby").private);
    /// ```
    pub fn of(rights: &Rights, default: &Rights, room: &str) -> Self {
        Self { rights: rights.in_room(room), private: !default.allows(room, Right::Read) }
    }
}

/// A right the connection lacks in a room: answered with [`crate::protocol::forbidden_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forbidden<'a> {
    pub room: &'a str,
    pub right: Right,
}

/// Exact names sort before every prefix; longer prefixes before shorter ones.
fn specificity(pattern: &str) -> (bool, usize) {
    (!pattern.ends_with('*'), pattern.len())
}

/// A room name, or a prefix of one followed by `*`.
fn check_pattern(pattern: &str) -> Result<(), BadRights> {
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let fine =
        prefix.len() <= MAX_ROOM_LEN && prefix.chars().all(allowed) && (pattern.ends_with('*') || !prefix.is_empty());
    if fine {
        Ok(())
    } else {
        Err(BadRights(format!("\"{pattern}\" is neither a room name nor a prefix of one ending in *")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(compact: &str) -> Rights {
        Rights::parse(compact).unwrap()
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let r = rights("*=r;team-*=rw;team-secret*=;team-secret-ops=rwm");
        assert_eq!(r.in_room("lobby").to_string(), "r", "only * matches");
        assert_eq!(r.in_room("team-a").to_string(), "rw", "a prefix beats *");
        assert_eq!(r.in_room("team-secret-x").to_string(), "", "a longer prefix beats a shorter one");
        assert_eq!(r.in_room("team-secret-ops").to_string(), "rwm", "an exact name beats every prefix");
        assert_eq!(r.in_room("team-").to_string(), "rw", "a prefix matches the bare prefix too");
        let order = rights("team-*=rw;team-secret-ops=rwm;*=r;team-secret*=");
        assert_eq!(order, r, "the order of the grants does not matter");
    }

    #[test]
    fn no_match_means_no_rights_and_none_is_none() {
        let r = rights("lobby=rw");
        assert_eq!(r.in_room("lobby2"), Access::default(), "an exact name is not a prefix");
        assert!(r.check("ops", Right::Read).is_err());
        assert_eq!(r.check("ops", Right::Write), Err(Forbidden { room: "ops", right: Right::Write }));
        assert!(!Rights::none().allows("lobby", Right::Read));
        assert!(Rights::default().allows("anything", Right::Write), "the default is open");
        assert!(!Rights::default().allows("anything", Right::Moderate), "but nobody moderates by default");
    }

    #[test]
    fn the_compact_form_round_trips_and_is_the_claims() {
        let claim = serde_json::json!({"lobby":"rw","team-*":"rw","announcements":"r","mods":"mwr"});
        let from_claim = Rights::from_claim(&claim).unwrap();
        assert_eq!(from_claim.to_string(), "announcements=r;lobby=rw;mods=rwm;team-*=rw");
        assert_eq!(rights(&from_claim.to_string()), from_claim);
        assert_eq!(rights(" lobby = rw ; ; *=r "), rights("*=r;lobby=rw"), "blanks are ignored");
        assert_eq!(rights(""), Rights::none(), "an empty setting grants nothing");
    }

    #[test]
    fn bad_rights_are_refused_with_the_reason() {
        for bad in
            ["lobby", "lobby=rx", "no spaces=r", "a*b=r", "=r", "lobby=r;lobby=w", &format!("{}=r", "x".repeat(65))]
        {
            assert!(Rights::parse(bad).is_err(), "{bad:?}");
        }
        let too_many = (0..=MAX_GRANTS).map(|i| format!("room{i}=r")).collect::<Vec<_>>().join(";");
        assert!(Rights::parse(&too_many).unwrap_err().0.contains("at most 32"));
        for bad in [serde_json::json!(["lobby"]), serde_json::json!({"lobby": 7}), serde_json::json!({"lobby": "rz"})] {
            assert!(Rights::from_claim(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_union_gives_each_pattern_every_right_granted_it() {
        let members = rights("*=r;team-*=rw");
        let mods = rights("*=rm");
        let both = Rights::union([&members, &mods]).unwrap();
        assert_eq!(both.to_string(), "team-*=rwm;*=rm");
        assert!(both.allows("lobby", Right::Moderate) && !both.allows("lobby", Right::Write));
        assert!(both.allows("team-a", Right::Moderate), "the moderators' * covers team-* too");
        let shut = Rights::union([&rights("*=rw;secret-*="), &rights("secret-ops=r")]).unwrap();
        assert_eq!(shut.in_room("secret-x").to_string(), "");
        assert_eq!(shut.in_room("secret-ops").to_string(), "r");
        assert_eq!(shut.in_room("lobby").to_string(), "rw");
    }

    #[test]
    fn the_longest_compact_form_fits_the_context() {
        let grants = (0..MAX_GRANTS).map(|i| format!("{:0>38}-*=rwm", i)).collect::<Vec<_>>().join(";");
        assert!(grants.len() <= MAX_RIGHTS_BYTES, "{}", grants.len());
        assert!(Rights::parse(&grants).is_ok());
    }
}
