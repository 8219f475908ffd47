//! Rights by Cognito group: a user pool puts the user's groups in every token
//! (`"cognito:groups":["staff","moderators"]`), and `GROUP_RIGHTS` says what
//! each group may do, so a deployment grants rights by adding people to groups
//! instead of minting a `chat.rights` claim (a pre-token-generation trigger).
//!
//! `GROUP_RIGHTS` lists `group:rights` entries separated by spaces; the rights
//! are [`Rights::parse`]'s compact form, and the entry is split at its last
//! `:` (a group name may hold `:`, a rights string never does; Cognito group
//! names hold no spaces):
//!
//! ```text
//! GROUP_RIGHTS="moderators:*=rwm staff:team-*=rw;announcements=rw"
//! ```
//!
//! A token with `chat.rights` keeps exactly those; one without gets the union
//! ([`Rights::union`]) of the default rights and the rights of each of its
//! groups that is mapped. Groups only add rights: a union never shuts a room
//! that one of its parts opens.

use crate::rights::Rights;

use super::SettingsError;

/// What each mapped group may do, in the order configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRights {
    groups: Vec<(String, Rights)>,
}

impl GroupRights {
    /// Reads `GROUP_RIGHTS` (blank: no group grants anything), checking that
    /// the default and every group's rights together still fit one context
    /// value ([`crate::rights::MAX_GRANTS`] grants): so no user, whatever groups
    /// they are in, can be refused for having too many.
    ///
    /// ```
    /// use chat_core::auth::GroupRights;
    /// use chat_core::rights::{Right, Rights};
    /// let groups = GroupRights::parse("moderators:*=rwm team:a:team-a=rw", &Rights::parse("lobby=rw").unwrap()).unwrap();
    /// let rights = groups.rights_of(&Rights::parse("lobby=rw").unwrap(), ["team:a"]);
    /// assert!(rights.allows("team-a", Right::Write) && !rights.allows("lobby", Right::Moderate));
    /// ```
    pub fn parse(setting: &str, default: &Rights) -> Result<Self, SettingsError> {
        let refuse = |message: String| Err(SettingsError(format!("GROUP_RIGHTS: {message}")));
        let mut groups: Vec<(String, Rights)> = Vec::new();
        for entry in setting.split_whitespace() {
            let Some((group, compact)) = entry.rsplit_once(':') else {
                return refuse(format!("\"{entry}\" is not group:rights (e.g. staff:team-*=rw;announcements=r)"));
            };
            if group.is_empty() || compact.is_empty() {
                return refuse(format!("\"{entry}\" needs a group name before the last ':' and rights after it"));
            }
            if groups.iter().any(|(g, _)| g == group) {
                return refuse(format!("group \"{group}\" is listed twice"));
            }
            match Rights::parse(compact) {
                Ok(rights) => groups.push((group.to_owned(), rights)),
                Err(e) => return refuse(format!("group \"{group}\": {}", e.0)),
            }
        }
        let all = std::iter::once(default).chain(groups.iter().map(|(_, rights)| rights));
        if let Err(e) = Rights::union(all) {
            return refuse(format!("DEFAULT_RIGHTS and every group's rights together must fit one context: {}", e.0));
        }
        Ok(Self { groups })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// `default` with the rights of each of `groups` that is mapped; groups
    /// not mapped add nothing.
    pub fn rights_of<'a>(&self, default: &Rights, groups: impl IntoIterator<Item = &'a str>) -> Rights {
        let mut sets = vec![default];
        for group in groups {
            if let Some((_, rights)) = self.groups.iter().find(|(g, _)| g == group) {
                sets.push(rights);
            }
        }
        if sets.len() == 1 {
            return default.clone();
        }
        // Fits: `parse` checked the union of the default and every group.
        Rights::union(sets.iter().copied()).unwrap_or_else(|_| default.clone())
    }
}

/// The token's `cognito:groups`: a list of group names. The claim is the
/// issuer's; an entry that is not a string (or a claim that is not a list)
/// is left out and logged, which can only take rights away.
pub(super) fn token_groups(claim: Option<&serde_json::Value>) -> Vec<&str> {
    let Some(claim) = claim else { return Vec::new() };
    let Some(listed) = claim.as_array() else {
        tracing::warn!("the token's cognito:groups is not a list; ignored");
        return Vec::new();
    };
    listed
        .iter()
        .filter_map(|group| {
            let name = group.as_str();
            if name.is_none() {
                tracing::warn!(%group, "an entry of the token's cognito:groups is not a string; left out");
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rights::{MAX_GRANTS, Right};

    fn rights(compact: &str) -> Rights {
        Rights::parse(compact).unwrap()
    }

    #[test]
    fn entries_split_at_the_last_colon_and_blank_is_none() {
        let default = rights("lobby=rw");
        let groups =
            GroupRights::parse(" moderators:*=rwm   org:team:a:team-a=rw;announcements=r\n", &default).unwrap();
        assert_eq!(groups.groups.len(), 2);
        assert_eq!(groups.groups[1].0, "org:team:a", "a group name may hold ':'");
        assert_eq!(groups.groups[1].1.to_string(), "announcements=r;team-a=rw");
        assert!(GroupRights::parse("", &default).unwrap().is_empty());
        assert!(GroupRights::parse("  ", &default).unwrap().is_empty());
    }

    #[test]
    fn malformed_entries_are_refused_naming_the_entry() {
        let default = Rights::default();
        for (bad, says) in [
            ("moderators", "\"moderators\" is not group:rights"),
            (":*=rwm", "needs a group name"),
            ("staff:", "needs a group name before the last ':' and rights after it"),
            ("staff:lobby", "group \"staff\": "),
            ("staff:lobby=rx", "group \"staff\""),
            ("staff:lobby=r staff:ops=r", "listed twice"),
        ] {
            let error = GroupRights::parse(bad, &default).unwrap_err().0;
            assert!(error.starts_with("GROUP_RIGHTS: ") && error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_default_and_all_groups_together_must_fit_the_context() {
        let default = rights(&(0..20).map(|i| format!("room{i}=r")).collect::<Vec<_>>().join(";"));
        let fits = (20..MAX_GRANTS).map(|i| format!("g{i}:room{i}=rw")).collect::<Vec<_>>().join(" ");
        assert!(GroupRights::parse(&fits, &default).is_ok(), "32 grants in all");
        let over = format!("{fits} one-more:extra=r");
        let error = GroupRights::parse(&over, &default).unwrap_err().0;
        assert!(error.contains("must fit one context") && error.contains("33 grants; at most 32"), "{error}");
    }

    #[test]
    fn a_user_gets_the_default_and_each_mapped_groups_rights() {
        let default = rights("lobby=rw;announcements=r");
        let groups =
            GroupRights::parse("moderators:*=rwm staff:team-*=rw;announcements=rw readers:*=r", &default).unwrap();
        assert_eq!(groups.rights_of(&default, []), default, "no group: the default");
        assert_eq!(groups.rights_of(&default, ["strangers"]), default, "an unmapped group adds nothing");
        let staff = groups.rights_of(&default, ["staff", "strangers"]);
        assert!(staff.allows("team-a", Right::Write) && staff.allows("announcements", Right::Write));
        assert!(staff.allows("lobby", Right::Write) && !staff.allows("random", Right::Read));
        let both = groups.rights_of(&default, ["readers", "staff"]);
        assert!(both.allows("random", Right::Read) && !both.allows("random", Right::Write));
        assert!(both.allows("team-a", Right::Write), "the staff's team-* keeps its w beside the readers' *");
        let mods = groups.rights_of(&default, ["moderators"]);
        assert!(mods.allows("anything", Right::Moderate) && mods.allows("lobby", Right::Moderate));
    }

    #[test]
    fn only_string_entries_of_a_list_are_groups() {
        let claim = serde_json::json!(["staff", 7, {"x": 1}, "moderators"]);
        assert_eq!(token_groups(Some(&claim)), ["staff", "moderators"]);
        assert!(token_groups(Some(&serde_json::json!("staff"))).is_empty(), "not a list");
        assert!(token_groups(None).is_empty());
    }
}
