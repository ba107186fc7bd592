//! Which format an endpoint gets, decided from the parsed URL.

use url::Url;

use super::EndpointFormat;

const SLACK_HOST: &str = "hooks.slack.com";
/// Only `/services/…` takes Block Kit; workflow URLs (`/triggers/…`, `/workflows/…`) take flat JSON.
const SLACK_BLOCK_KIT_PATH: &str = "/services/";
const DISCORD_HOSTS: [&str; 6] = [
    "discord.com",
    "ptb.discord.com",
    "canary.discord.com",
    "discordapp.com",
    "ptb.discordapp.com",
    "canary.discordapp.com",
];

/// The format for an endpoint URL: Slack and Discord only on their exact webhook hosts and paths.
pub fn detect(url: &Url) -> EndpointFormat {
    // `domain()` is `None` for IP addresses, which are never Slack or Discord.
    let Some(domain) = url.domain() else {
        return EndpointFormat::Custom;
    };
    let host = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if host == SLACK_HOST && url.path().starts_with(SLACK_BLOCK_KIT_PATH) {
        EndpointFormat::Slack
    } else if DISCORD_HOSTS.contains(&host.as_str()) && is_discord_webhook_path(url) {
        EndpointFormat::Discord
    } else {
        EndpointFormat::Custom
    }
}

/// The format of the endpoint at `url` as the config stores it (and attempts record it); `None`
/// for text that is not a URL.
pub fn detect_text(url: &str) -> Option<EndpointFormat> {
    Url::parse(url.trim()).ok().map(|url| detect(&url))
}

/// Whether the body once sent to the endpoint at `sent_to` may be sent as it is to the endpoint at
/// `now`: a redelivery sends the stored bytes, and they were made for the format of the URL they
/// went to (a Slack message means nothing to a custom endpoint, nor the product page's JSON to
/// Discord). The URLs themselves may differ; both must parse. The api (before it queues a
/// redelivery) and the dispatcher (before it sends one) decide with this one rule.
pub fn takes_body_made_for(now: &str, sent_to: &str) -> bool {
    match (detect_text(now), detect_text(sent_to)) {
        (Some(now), Some(then)) => now == then,
        _ => false,
    }
}

/// `/api/webhooks/{id}/{token}` or `/api/v{N}/webhooks/{id}/{token}`, nothing after the token
/// (`…/slack` and `…/github` take other bodies).
fn is_discord_webhook_path(url: &Url) -> bool {
    let Some(segments) = url.path_segments() else {
        return false;
    };
    let segments: Vec<&str> = segments.collect();
    let id_and_token = match segments.as_slice() {
        ["api", "webhooks", rest @ ..] => rest,
        ["api", version, "webhooks", rest @ ..] if is_api_version(version) => rest,
        _ => return false,
    };
    matches!(id_and_token, [id, token] if is_digits(id) && !token.is_empty())
}

fn is_api_version(segment: &str) -> bool {
    segment.strip_prefix('v').is_some_and(is_digits)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The URL a delivery posts to. Discord gets `wait=true`, so it answers with the created message or
/// an error instead of a silent 204 that hides a rejected body.
pub fn delivery_url(format: EndpointFormat, url: &Url) -> Url {
    let mut delivered = url.clone();
    if format == EndpointFormat::Discord {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| name != "wait")
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        delivered
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("wait", "true");
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL parses")
    }

    #[test]
    fn detection_table() {
        use EndpointFormat::{Custom, Discord, Slack};
        let cases = [
            ("https://hooks.slack.com/services/T0/B0/secret", Slack),
            ("https://HOOKS.Slack.COM/services/T0/B0/secret", Slack),
            ("https://hooks.slack.com./services/T0/B0/secret", Slack),
            ("https://hooks.slack.com:443/services/T0/B0/secret", Slack),
            ("https://hooks.slack.com:8443/services/T0/B0/secret", Slack),
            ("https://hooks.slack.com/triggers/T0/1/abc", Custom),
            ("https://hooks.slack.com/workflows/T0/A0/1/abc", Custom),
            ("https://hooks.slack.com/", Custom),
            ("https://hooks.slack.com/servicesx/T0", Custom),
            ("https://evil.example/hooks.slack.com/services/x", Custom),
            ("https://hooks.slack.com.evil.example/services/x", Custom),
            ("https://evil.hooks.slack.com/services/x", Custom),
            ("https://hooks.slack.com@evil.example/services/x", Custom),
            ("https://evil.example/?u=hooks.slack.com/services/x", Custom),
            ("https://discord.com/api/webhooks/123/abc", Discord),
            ("https://discord.com/api/v10/webhooks/123/abc", Discord),
            ("https://discordapp.com/api/v10/webhooks/1/abc", Discord),
            ("https://canary.discord.com/api/webhooks/1/abc", Discord),
            ("https://ptb.discordapp.com/api/webhooks/1/abc", Discord),
            (
                "https://DISCORD.com./api/webhooks/1/abc?thread_id=9",
                Discord,
            ),
            ("https://discord.com:443/api/webhooks/1/abc", Discord),
            ("https://discord.com/api/webhooks", Custom),
            ("https://discord.com/api/webhooks/123", Custom),
            ("https://discord.com/api/webhooks/123/", Custom),
            ("https://discord.com/api/webhooks/abc/token", Custom),
            ("https://discord.com/api/webhooks/1/abc/slack", Custom),
            ("https://discord.com/api/vx/webhooks/1/abc", Custom),
            ("https://discord.com/webhooks/1/abc", Custom),
            ("https://evil.discord.com/api/webhooks/1/abc", Custom),
            (
                "https://discord.com.evil.example/api/webhooks/1/abc",
                Custom,
            ),
            (
                "https://evil.example/discord.com/api/webhooks/1/abc",
                Custom,
            ),
            ("https://162.159.128.233/api/webhooks/1/abc", Custom),
            ("https://your-app.com/webhooks/feedbackpulse", Custom),
        ];
        for (text, expected) in cases {
            assert_eq!(detect(&url(text)), expected, "{text}");
        }
    }

    #[test]
    fn a_stored_body_suits_any_url_of_the_same_format() {
        let custom = "https://your-app.com/webhooks/feedbackpulse";
        let moved = " https://elsewhere.example:8443/hook?x=1 ";
        let slack = "https://hooks.slack.com/services/T0/B0/secret";
        let other_slack = "https://hooks.slack.com/services/T1/B1/other";
        let discord = "https://discord.com/api/webhooks/1/abc";
        assert!(takes_body_made_for(moved, custom));
        assert!(takes_body_made_for(other_slack, slack));
        assert!(takes_body_made_for(
            discord,
            "https://ptb.discord.com/api/v10/webhooks/2/x"
        ));
        for (now, then) in [
            (slack, custom),
            (custom, slack),
            (discord, slack),
            (custom, discord),
            ("https://hooks.slack.com/triggers/T0/1/abc", slack),
        ] {
            assert!(!takes_body_made_for(now, then), "{then} -> {now}");
        }
        assert!(!takes_body_made_for("not a url", custom));
        assert!(!takes_body_made_for(custom, ""));
        assert_eq!(detect_text(slack), Some(EndpointFormat::Slack));
        assert_eq!(detect_text("::"), None);
    }

    #[test]
    fn discord_delivery_url_waits_for_the_result() {
        let discord = url("https://discord.com/api/webhooks/1/abc");
        assert_eq!(
            delivery_url(EndpointFormat::Discord, &discord).as_str(),
            "https://discord.com/api/webhooks/1/abc?wait=true"
        );
    }

    #[test]
    fn discord_delivery_url_overrides_wait_and_keeps_other_params() {
        let discord = url("https://discord.com/api/webhooks/1/abc?wait=false&thread_id=9&WAIT=x");
        assert_eq!(
            delivery_url(EndpointFormat::Discord, &discord).as_str(),
            "https://discord.com/api/webhooks/1/abc?thread_id=9&WAIT=x&wait=true"
        );
    }

    #[test]
    fn other_delivery_urls_are_unchanged() {
        for (format, text) in [
            (
                EndpointFormat::Slack,
                "https://hooks.slack.com/services/T0/B0/x",
            ),
            (
                EndpointFormat::Custom,
                "https://your-app.com/hook?wait=false",
            ),
        ] {
            assert_eq!(delivery_url(format, &url(text)), url(text));
        }
    }
}
