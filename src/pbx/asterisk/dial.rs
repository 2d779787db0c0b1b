//! Asterisk dial strings: rendering a validated [`DialTarget`] through the
//! operator's templates (`asterisk.*_template`) and building the `Dial()`
//! argument the adapter sends with `EXEC Dial`.
//!
//! What it owns: the template template fields (`{number}` `{gateway}` `{uri}`
//! `{user}` `{host}` `{extension}` `{context}`) and the final safety check on
//! everything that goes into a `Dial()` argument.
//!
//! What it must never do: let a rendered value carry a character that
//! `Dial()` or the AGI line parser reads specially. `Dial()` splits its
//! argument on `,` (options, timeout), `&` (parallel legs) and `|` (old
//! separator), reads `(`/`)` as option arguments, and AGI's `parse_args`
//! treats `"` `\` and whitespace specially. [`DialTarget`] already excludes
//! most of these, but templates come from the config file and a future
//! target kind could be wider, so the rendered string is checked again here
//! rather than trusted.

use std::time::Duration;

use crate::catalog::dial::DialTarget;
use crate::config::AsteriskConfig;

/// Why a dial string or `Dial()` argument was refused. Nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialStringError {
    #[error("{what} {value:?} holds {ch:?}, which Dial() or the AGI parser would read specially")]
    Unsafe {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("{what} is empty")]
    Empty { what: &'static str },
}

/// Characters never allowed in anything we put inside `Dial(...)`.
fn forbidden(c: char) -> bool {
    matches!(c, ',' | '(' | ')' | '"' | '\\' | '&' | '|' | '^')
        || c.is_whitespace()
        || c.is_control()
}

/// Checks one piece of a `Dial()` argument (`what` names it in the error).
///
/// `^` is refused too: inside `U(context^arg)` it separates the gosub's
/// arguments, so a channel name holding one would shift them.
pub fn check_dial_piece(what: &'static str, value: &str) -> Result<(), DialStringError> {
    if value.is_empty() {
        return Err(DialStringError::Empty { what });
    }
    match value.chars().find(|&c| forbidden(c)) {
        Some(ch) => Err(DialStringError::Unsafe {
            what,
            value: value.chars().take(80).collect(),
            ch,
        }),
        None => Ok(()),
    }
}

/// The dial string for `target` (`PJSIP/+13125550123@carrier1`), checked.
pub fn dial_string(
    target: &DialTarget,
    settings: &AsteriskConfig,
) -> Result<String, DialStringError> {
    let rendered = match target {
        DialTarget::Gateway { gateway, number } => settings
            .gateway_template
            .replace("{number}", number.as_str())
            .replace("{gateway}", gateway.as_str()),
        DialTarget::Sip(uri) => settings
            .sip_template
            .replace("{uri}", uri.as_str())
            .replace("{user}", uri.user())
            .replace("{host}", uri.host()),
        DialTarget::Extension { extension, context } => settings
            .extension_template
            .replace("{extension}", extension.as_str())
            .replace("{context}", context.as_str()),
    };
    check_dial_piece("dial string", &rendered)?;
    Ok(rendered)
}

/// The `Dial()` argument: `<dialstring>,<ring_secs>,U(<context>^<channel>)`.
///
/// `U()` runs `[answered_context]` on the buyer's channel the moment it
/// answers; the shipped context stamps `SHARED(BIDBRIDGE_ANSWERED_AT)` on
/// the caller's channel (named by `caller_channel`, i.e. `agi_channel`).
/// That stamp is the only switch-side time of the buyer's answer we can get
/// over AGI (ANSWEREDTIME measures the caller channel; README finding 4).
pub fn dial_arg(
    dial_string: &str,
    ring_timeout: Duration,
    answered_context: &str,
    caller_channel: &str,
) -> Result<String, DialStringError> {
    check_dial_piece("dial string", dial_string)?;
    check_dial_piece("answered context", answered_context)?;
    check_dial_piece("caller channel", caller_channel)?;
    // Dial counts whole seconds; 0 would mean "no timeout".
    let secs = ring_timeout.as_secs().max(1);
    Ok(format!(
        "{dial_string},{secs},U({answered_context}^{caller_channel})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dial::{SipUri, Token};
    use crate::phone::E164;

    fn settings() -> AsteriskConfig {
        AsteriskConfig::default()
    }

    fn gateway(gw: &str, number: &str) -> DialTarget {
        DialTarget::Gateway {
            gateway: Token::new(gw).expect("token"),
            number: E164::parse_strict(number).expect("number"),
        }
    }

    #[test]
    fn renders_every_target_kind() {
        let s = settings();
        assert_eq!(
            dial_string(&gateway("carrier1", "+13125550123"), &s),
            Ok("PJSIP/+13125550123@carrier1".into())
        );
        let sip = DialTarget::Sip(SipUri::parse("sip:buyer-7@203.0.113.5:5060").expect("uri"));
        assert_eq!(
            dial_string(&sip, &s),
            Ok("PJSIP/bidbridge-out/sip:buyer-7@203.0.113.5:5060".into())
        );
        let ext = DialTarget::Extension {
            extension: Token::new("backup").expect("t"),
            context: Token::new("buyers").expect("t"),
        };
        assert_eq!(dial_string(&ext, &s), Ok("Local/backup@buyers".into()));
        let custom = AsteriskConfig {
            sip_template: "PJSIP/{user}@{host}".into(),
            gateway_template: "IAX2/{gateway}/{number}".into(),
            ..settings()
        };
        assert_eq!(
            dial_string(&sip, &custom),
            Ok("PJSIP/buyer-7@203.0.113.5".into())
        );
        assert_eq!(
            dial_string(&gateway("t1", "+13125550123"), &custom),
            Ok("IAX2/t1/+13125550123".into())
        );
    }

    #[test]
    fn dial_arg_has_the_recorded_shape() {
        // Fixture 07: EXEC Dial Local/shortcall@buyers,10,U(bidbridge-answered^Local/8005550100@bidbridge-in-0000000b;2)
        assert_eq!(
            dial_arg(
                "Local/shortcall@buyers",
                Duration::from_secs(10),
                "bidbridge-answered",
                "Local/8005550100@bidbridge-in-0000000b;2"
            ),
            Ok("Local/shortcall@buyers,10,U(bidbridge-answered^Local/8005550100@bidbridge-in-0000000b;2)".into())
        );
        // Sub-second timeouts never become "no timeout".
        assert!(
            dial_arg("Local/a@b", Duration::from_millis(10), "c", "PJSIP/x-1")
                .expect("ok")
                .starts_with("Local/a@b,1,")
        );
    }

    #[test]
    fn refuses_injection_from_templates_and_channels() {
        let target = gateway("carrier1", "+13125550123");
        for bad in [
            "PJSIP/{number}@{gateway},,D(1)",
            "PJSIP/{number}@{gateway}&Local/x@y",
            "PJSIP/{number}@{gateway}|x",
            "PJSIP/{number}@{gateway}(x)",
            "PJSIP/{number} @{gateway}",
            "PJSIP/{number}@{gateway}\"",
            "PJSIP/{number}@{gateway}\\",
            "PJSIP/{number}@{gateway}\n",
            "PJSIP/{number}@{gateway}\t",
            "PJSIP/{number}@{gateway}\u{7f}",
            "PJSIP/{number}^{gateway}",
        ] {
            let s = AsteriskConfig {
                gateway_template: bad.into(),
                ..settings()
            };
            assert!(
                matches!(
                    dial_string(&target, &s),
                    Err(DialStringError::Unsafe { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        for channel in [
            "PJSIP/x,g",
            "PJSIP/x)",
            "PJSIP/x(",
            "PJSIP/x y",
            "PJSIP/x^y",
            "PJSIP/x\"",
            "PJSIP/x&Local/y@z",
            "",
        ] {
            assert!(
                dial_arg("Local/a@b", Duration::from_secs(5), "ctx", channel).is_err(),
                "{channel:?} was accepted"
            );
        }
        assert!(dial_arg("Local/a@b", Duration::from_secs(5), "ctx,x", "PJSIP/a-1").is_err());
        // What real channel names hold is fine.
        assert!(
            dial_arg(
                "Local/a@b",
                Duration::from_secs(5),
                "ctx",
                "Local/8005550100@bidbridge-in-00000000;2"
            )
            .is_ok()
        );
    }
}
