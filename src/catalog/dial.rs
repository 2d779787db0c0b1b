//! Where a call can be sent: validated dial targets and prompt names.
//!
//! Values here end up inside ESL `sendmsg` arguments and AGI command lines,
//! where a newline, a space or a `,` `|` `{` would change the command. So a
//! [`DialTarget`] or [`PromptName`] can only be built through a validating
//! constructor, each field is restricted to the characters its grammar needs,
//! and the PBX adapters render them; nothing from a catalog row or a bid
//! response is ever spliced into a command as free text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::phone::E164;

/// A buyer's (or a backup line's) phone as the switch dials it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DialTarget {
    /// An E.164 number sent out through a named carrier gateway/trunk.
    Gateway { gateway: Token, number: E164 },
    /// A SIP URI dialled directly.
    Sip(SipUri),
    /// An extension in the operator's own dialplan (FreeSWITCH
    /// `loopback/EXT/CONTEXT`, Asterisk `Local/EXT@CONTEXT`): queues, backup
    /// lines, anything the switch already knows how to reach.
    Extension { extension: Token, context: Token },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialTargetError {
    #[error(
        "give exactly one of `number` (with `gateway`), `sip`, or `extension` (with `context`)"
    )]
    Shape,
    #[error("`number` needs a `gateway` naming the carrier trunk it goes out on")]
    MissingGateway,
    #[error("`extension` needs a `context`")]
    MissingContext,
    #[error(transparent)]
    Number(#[from] crate::phone::NotE164),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Sip(#[from] SipUriError),
}

/// A name that is safe inside any PBX command: ASCII letters, digits and
/// `_ - . + * #`, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` may only hold letters, digits and _ - . + * # (1 to 64 characters)")]
pub struct TokenError(pub String);

impl Token {
    pub fn new(text: &str) -> Result<Token, TokenError> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'*' | b'#')
            });
        if ok {
            Ok(Token(text.to_string()))
        } else {
            Err(TokenError(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sip:` / `sips:` URI with a user part and a host, e.g.
/// `sip:buyer-7@203.0.113.5:5060;transport=tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri {
    text: String,
    user: String,
    host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipUriError {
    #[error("`{0}` is not a SIP URI: it must start with sip: or sips:")]
    Scheme(String),
    #[error("`{0}` is not a SIP URI: expected user@host")]
    Shape(String),
    #[error(
        "`{0}` holds a character a dial string cannot carry (allowed: letters, digits and - _ . ! ~ * ' % + @ : ; = [ ])"
    )]
    Character(String),
    #[error("`{0}` is longer than 256 characters")]
    TooLong(String),
}

impl SipUri {
    pub fn parse(text: &str) -> Result<SipUri, SipUriError> {
        if text.len() > 256 {
            return Err(SipUriError::TooLong(text.to_string()));
        }
        let rest = text
            .strip_prefix("sip:")
            .or_else(|| text.strip_prefix("sips:"))
            .ok_or_else(|| SipUriError::Scheme(text.to_string()))?;
        // Deliberately narrower than RFC 3261: no `,` `|` `{` `}` `^` `&` space
        // or quote, each of which means something in a FreeSWITCH bridge
        // string or an Asterisk Dial argument.
        let allowed = |b: u8| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_'
                        | b'.'
                        | b'!'
                        | b'~'
                        | b'*'
                        | b'\''
                        | b'%'
                        | b'+'
                        | b'@'
                        | b':'
                        | b';'
                        | b'='
                        | b'['
                        | b']'
                )
        };
        if !rest.bytes().all(allowed) {
            return Err(SipUriError::Character(text.to_string()));
        }
        let (user, hostport) = rest
            .split_once('@')
            .ok_or_else(|| SipUriError::Shape(text.to_string()))?;
        let host = hostport.split([';', ':']).next().unwrap_or_default();
        let host = if hostport.starts_with('[') {
            // IPv6 literal: keep the bracketed address whole.
            hostport
                .split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            host.to_string()
        };
        if user.is_empty() || host.is_empty() || hostport.contains('@') {
            return Err(SipUriError::Shape(text.to_string()));
        }
        Ok(SipUri {
            text: text.to_string(),
            user: user.to_string(),
            host,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

impl DialTarget {
    /// Builds a target from the three optional field groups of the catalog
    /// file / database row, insisting on exactly one.
    pub fn from_parts(
        number: Option<&str>,
        gateway: Option<&str>,
        sip: Option<&str>,
        extension: Option<&str>,
        context: Option<&str>,
    ) -> Result<DialTarget, DialTargetError> {
        match (number, sip, extension) {
            (Some(number), None, None) => {
                let gateway = gateway.ok_or(DialTargetError::MissingGateway)?;
                if context.is_some() {
                    return Err(DialTargetError::Shape);
                }
                Ok(DialTarget::Gateway {
                    gateway: Token::new(gateway)?,
                    number: E164::parse_strict(number)?,
                })
            }
            (None, Some(uri), None) => {
                if gateway.is_some() || context.is_some() {
                    return Err(DialTargetError::Shape);
                }
                Ok(DialTarget::Sip(SipUri::parse(uri)?))
            }
            (None, None, Some(extension)) => {
                let context = context.ok_or(DialTargetError::MissingContext)?;
                if gateway.is_some() {
                    return Err(DialTargetError::Shape);
                }
                Ok(DialTarget::Extension {
                    extension: Token::new(extension)?,
                    context: Token::new(context)?,
                })
            }
            _ => Err(DialTargetError::Shape),
        }
    }

    /// The number this target reaches, when it is a phone number (for
    /// buyer-facing records and bid destination overrides).
    pub fn number(&self) -> Option<&E164> {
        match self {
            DialTarget::Gateway { number, .. } => Some(number),
            _ => None,
        }
    }
}

impl fmt::Display for DialTarget {
    /// Human form for logs, reports and the demo table (not a dial string).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialTarget::Gateway { gateway, number } => write!(f, "{number} via {gateway}"),
            DialTarget::Sip(uri) => f.write_str(uri.as_str()),
            DialTarget::Extension { extension, context } => write!(f, "ext {extension}@{context}"),
        }
    }
}

/// Serialized form, shared by the catalog file and the `destinations` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialTargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl DialTargetSpec {
    pub fn validate(&self) -> Result<DialTarget, DialTargetError> {
        DialTarget::from_parts(
            self.number.as_deref(),
            self.gateway.as_deref(),
            self.sip.as_deref(),
            self.extension.as_deref(),
            self.context.as_deref(),
        )
    }
}

impl From<&DialTarget> for DialTargetSpec {
    fn from(target: &DialTarget) -> Self {
        match target {
            DialTarget::Gateway { gateway, number } => DialTargetSpec {
                number: Some(number.to_string()),
                gateway: Some(gateway.to_string()),
                ..Default::default()
            },
            DialTarget::Sip(uri) => DialTargetSpec {
                sip: Some(uri.as_str().to_string()),
                ..Default::default()
            },
            DialTarget::Extension { extension, context } => DialTargetSpec {
                extension: Some(extension.to_string()),
                context: Some(context.to_string()),
                ..Default::default()
            },
        }
    }
}

impl Serialize for DialTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DialTargetSpec::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DialTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DialTargetSpec::deserialize(deserializer)?
            .validate()
            .map_err(serde::de::Error::custom)
    }
}

/// A prompt (sound file) name as the catalog gives it: `bidbridge/welcome`.
/// Each adapter maps it to its own form (FreeSWITCH: a path under the
/// configured sounds directory plus extension; Asterisk: the name as is,
/// resolved by Asterisk against its sounds directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "prompt `{0}` may only hold letters, digits and _ - / (no `..`, no leading /, 1 to 128 characters)"
)]
pub struct PromptNameError(pub String);

impl PromptName {
    pub fn new(text: &str) -> Result<PromptName, PromptNameError> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && !text.starts_with('/')
            && !text.ends_with('/')
            && !text.contains("//")
            && text.split('/').all(|part| part != "." && part != "..")
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/' | b'.'));
        if ok {
            Ok(PromptName(text.to_string()))
        } else {
            Err(PromptNameError(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromptName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PromptName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PromptName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PromptName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_each_kind() {
        let gw = DialTarget::from_parts(Some("+13125550100"), Some("carrier1"), None, None, None)
            .unwrap();
        assert_eq!(gw.to_string(), "+13125550100 via carrier1");
        let sip =
            DialTarget::from_parts(None, None, Some("sip:buyer-7@127.0.0.1:5090"), None, None)
                .unwrap();
        assert!(
            matches!(sip, DialTarget::Sip(ref u) if u.user() == "buyer-7" && u.host() == "127.0.0.1")
        );
        let ext = DialTarget::from_parts(None, None, None, Some("backup"), Some("buyers")).unwrap();
        assert_eq!(ext.to_string(), "ext backup@buyers");
    }

    #[test]
    fn refuses_command_injection() {
        for bad in [
            "sip:a@b\nexecute-app-name: hangup",
            "sip:a@b,sofia/gateway/x/1",
            "sip:a@b|other",
            "sip:a b@c",
            "sip:{x=1}a@b",
            "sip:a@b&Local/x@y",
            "sip:a@b\"",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Token::new("carrier\n1").is_err());
        assert!(Token::new("car rier").is_err());
        assert!(Token::new("a,b").is_err());
        assert!(Token::new("").is_err());
    }

    #[test]
    fn shape_errors_are_specific() {
        assert_eq!(
            DialTarget::from_parts(Some("+13125550100"), None, None, None, None),
            Err(DialTargetError::MissingGateway)
        );
        assert_eq!(
            DialTarget::from_parts(None, None, None, None, None),
            Err(DialTargetError::Shape)
        );
        assert_eq!(
            DialTarget::from_parts(
                Some("+13125550100"),
                Some("gw"),
                Some("sip:a@b"),
                None,
                None
            ),
            Err(DialTargetError::Shape)
        );
    }

    #[test]
    fn prompt_names() {
        assert!(PromptName::new("bidbridge/welcome").is_ok());
        assert!(PromptName::new("ivr-press1").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a b", "a\nb", "x/"] {
            assert!(PromptName::new(bad).is_err(), "{bad:?}");
        }
    }
}
