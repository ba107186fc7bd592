//! Webhook URLs as they may be written outside the tenant's own view: logs, span attributes,
//! metric labels, error messages.
//!
//! Slack and Discord put the webhook's secret token in the path, and any URL may carry credentials
//! in its userinfo or query, so only scheme, host and port are kept. For Slack and Discord webhooks
//! the path's public part stays too, with the token replaced by [`REDACTED`], so an operator can
//! still tell which service and which webhook a line is about.

use url::Url;

use crate::format::{self, EndpointFormat};

/// What stands in for a token in a redacted path.
pub const REDACTED: &str = "[redacted]";

/// What a URL that cannot be parsed (or names no host) is written as: never the input itself.
pub const UNREADABLE_URL: &str = "[unreadable URL]";

/// `raw` redacted for logs; see the module documentation.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(url) => redacted(&url),
        Err(_) => UNREADABLE_URL.to_owned(),
    }
}

/// A parsed URL redacted for logs; see the module documentation.
pub fn redacted(url: &Url) -> String {
    let Some(host) = url.host_str() else {
        return UNREADABLE_URL.to_owned();
    };
    let mut written = format!("{}://{host}", url.scheme());
    if let Some(port) = url.port() {
        written.push_str(&format!(":{port}"));
    }
    match format::detect(url) {
        EndpointFormat::Custom => {}
        EndpointFormat::Slack => written.push_str(&slack_path(url.path())),
        EndpointFormat::Discord => written.push_str(&discord_path(url.path())),
    }
    written
}

/// `/services/{team}/{bot}/{token}` keeps the team and bot ids; any other shape under `/services/`
/// keeps nothing, since there is no telling which part is the token.
fn slack_path(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["services", team, bot, token]
            if is_slack_id(team) && is_slack_id(bot) && !token.is_empty() =>
        {
            format!("/services/{team}/{bot}/{REDACTED}")
        }
        _ => format!("/services/{REDACTED}"),
    }
}

fn is_slack_id(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Detection guarantees `/api[/v{N}]/webhooks/{numeric id}/{token}` with nothing after the token,
/// so the last segment is the token and everything before it is public.
fn discord_path(path: &str) -> String {
    let public = path.rsplit_once('/').map_or("", |(public, _)| public);
    format!("{public}/{REDACTED}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_redacted_as(cases: &[(&str, &str)]) {
        for (raw, expected) in cases {
            assert_eq!(redact_url(raw), *expected, "{raw}");
        }
    }

    #[test]
    fn slack_keeps_team_and_bot_and_hides_the_token() {
        assert_redacted_as(&[
            (
                "https://hooks.slack.com/services/T0123/B0456/s3cr3tT0ken",
                "https://hooks.slack.com/services/T0123/B0456/[redacted]",
            ),
            (
                "https://HOOKS.Slack.COM:8443/services/T0/B0/s3cr3tT0ken?x=s3cr3tT0ken#s3cr3tT0ken",
                "https://hooks.slack.com:8443/services/T0/B0/[redacted]",
            ),
            // Default port: nothing to say.
            (
                "https://hooks.slack.com:443/services/T0/B0/s3cr3tT0ken",
                "https://hooks.slack.com/services/T0/B0/[redacted]",
            ),
            // Shapes with no telling where the token is keep nothing of the path.
            (
                "https://hooks.slack.com/services/s3cr3tT0ken",
                "https://hooks.slack.com/services/[redacted]",
            ),
            (
                "https://hooks.slack.com/services/T0/B0/s3cr3tT0ken/more",
                "https://hooks.slack.com/services/[redacted]",
            ),
            (
                "https://hooks.slack.com/services/T0/s3cr3t%2FT0ken/x",
                "https://hooks.slack.com/services/[redacted]",
            ),
            // Workflow webhooks carry their token too, and are not Block Kit endpoints.
            (
                "https://hooks.slack.com/triggers/T0/1/s3cr3tT0ken",
                "https://hooks.slack.com",
            ),
        ]);
    }

    #[test]
    fn discord_keeps_the_webhook_id_and_hides_the_token() {
        assert_redacted_as(&[
            (
                "https://discord.com/api/webhooks/123/s3cr3tT0ken",
                "https://discord.com/api/webhooks/123/[redacted]",
            ),
            (
                "https://discord.com/api/v10/webhooks/123/s3cr3tT0ken?wait=true&thread_id=9",
                "https://discord.com/api/v10/webhooks/123/[redacted]",
            ),
            (
                "https://canary.discord.com/api/webhooks/1/s3cr3tT0ken",
                "https://canary.discord.com/api/webhooks/1/[redacted]",
            ),
            (
                "https://ptb.discordapp.com/api/webhooks/1/s3cr3tT0ken",
                "https://ptb.discordapp.com/api/webhooks/1/[redacted]",
            ),
            (
                "https://discordapp.com/api/webhooks/1/s3cr3tT0ken",
                "https://discordapp.com/api/webhooks/1/[redacted]",
            ),
            // The Slack-compatible endpoint is no Discord format, so its whole path goes.
            (
                "https://discord.com/api/webhooks/1/s3cr3tT0ken/slack",
                "https://discord.com",
            ),
        ]);
    }

    #[test]
    fn other_urls_keep_scheme_host_and_port_only() {
        assert_redacted_as(&[
            (
                "https://user:s3cr3tT0ken@example.com/hook",
                "https://example.com",
            ),
            (
                "https://example.com:8443/hooks/s3cr3tT0ken?token=s3cr3tT0ken&sig=s3cr3tT0ken",
                "https://example.com:8443",
            ),
            ("https://[::1]:9000/s3cr3tT0ken", "https://[::1]:9000"),
            ("https://127.0.0.1/s3cr3tT0ken", "https://127.0.0.1"),
            (
                "  https://Example.COM/#s3cr3tT0ken  ",
                "https://example.com",
            ),
            // A look-alike of Slack is no Slack: nothing of its path is kept.
            (
                "https://hooks.slack.com.evil.example/services/T0/B0/s3cr3tT0ken",
                "https://hooks.slack.com.evil.example",
            ),
            (
                "https://hooks.slack.com@evil.example/services/T0/B0/s3cr3tT0ken",
                "https://evil.example",
            ),
        ]);
    }

    #[test]
    fn unreadable_input_becomes_the_marker_never_itself() {
        for raw in [
            "",
            "s3cr3tT0ken",
            "hooks.slack.com/services/T0/B0/s3cr3tT0ken",
            "https://",
            "https://exa mple.com/s3cr3tT0ken",
            "https://[::1/s3cr3tT0ken",
            "mailto:s3cr3tT0ken@example.com",
            "data:text/plain,s3cr3tT0ken",
        ] {
            assert_eq!(redact_url(raw), UNREADABLE_URL, "{raw}");
        }
    }
}
