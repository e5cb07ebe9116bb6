//! The VideoSDK-style token claims, shared by the verifier and the `token`
//! command so that what we mint is exactly what we accept.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    AllowJoin,
    AllowMod,
    AskJoin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "allow_join" => Some(Permission::AllowJoin),
            "allow_mod" => Some(Permission::AllowMod),
            "ask_join" => Some(Permission::AskJoin),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Server-side API access (rooms, sessions).
    Crawler,
    /// Joining meetings only.
    Rtc,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "crawler" => Some(Role::Crawler),
            "rtc" => Some(Role::Rtc),
            _ => None,
        }
    }
}

/// The claims as minted. Verification reads them loosely typed first (see
/// `verifier.rs`) so that each malformed claim gets its own message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub apikey: String,
    pub permissions: Vec<Permission>,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    #[serde(rename = "roomId", default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// The participant a join token is for: a media server's report of a
    /// join with this token must name this participant id.
    #[serde(
        rename = "participantId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub participant_id: Option<String>,
    pub iat: i64,
    pub exp: i64,
}
