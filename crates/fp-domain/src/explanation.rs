//! Why an attempt failed and what the tenant can do about it, from what its record holds: the
//! error kind and the response code. The api sends [`Explanation::english`] beside the error; the
//! dashboard shows its own language's text, looked up by [`Explanation::id`].

use crate::retry::{FailureKind, TlsFailure};

/// One explanation of a failed attempt. The id is stable: clients and the dashboard's texts
/// key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Explanation {
    ConnectionRefused,
    ConnectionFailed,
    DnsNotResolved,
    TlsUnknownAuthority,
    TlsSelfSigned,
    TlsExpired,
    TlsWrongHost,
    TlsFailed,
    Timeout,
    RequestFailed,
    Blocked,
    Redirect,
    Unauthorized,
    NotFound,
    Gone,
    PayloadTooLarge,
    TooManyRequests,
    ClientError,
    ServerError,
}

impl Explanation {
    /// Every explanation, each once.
    pub const ALL: [Explanation; 19] = [
        Explanation::ConnectionRefused,
        Explanation::ConnectionFailed,
        Explanation::DnsNotResolved,
        Explanation::TlsUnknownAuthority,
        Explanation::TlsSelfSigned,
        Explanation::TlsExpired,
        Explanation::TlsWrongHost,
        Explanation::TlsFailed,
        Explanation::Timeout,
        Explanation::RequestFailed,
        Explanation::Blocked,
        Explanation::Redirect,
        Explanation::Unauthorized,
        Explanation::NotFound,
        Explanation::Gone,
        Explanation::PayloadTooLarge,
        Explanation::TooManyRequests,
        Explanation::ClientError,
        Explanation::ServerError,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Explanation::ConnectionRefused => "connection_refused",
            Explanation::ConnectionFailed => "connection_failed",
            Explanation::DnsNotResolved => "dns_not_resolved",
            Explanation::TlsUnknownAuthority => "tls_unknown_authority",
            Explanation::TlsSelfSigned => "tls_self_signed",
            Explanation::TlsExpired => "tls_expired",
            Explanation::TlsWrongHost => "tls_wrong_host",
            Explanation::TlsFailed => "tls_failed",
            Explanation::Timeout => "timeout",
            Explanation::RequestFailed => "request_failed",
            Explanation::Blocked => "blocked",
            Explanation::Redirect => "redirect",
            Explanation::Unauthorized => "unauthorized",
            Explanation::NotFound => "not_found",
            Explanation::Gone => "gone",
            Explanation::PayloadTooLarge => "payload_too_large",
            Explanation::TooManyRequests => "too_many_requests",
            Explanation::ClientError => "client_error",
            Explanation::ServerError => "server_error",
        }
    }

    /// What went wrong and the fix, in English (the api's language).
    pub fn english(self) -> &'static str {
        match self {
            Explanation::ConnectionRefused => {
                "The connection was refused: nothing listens on that port. Check the port in the \
                 URL and that your server is running."
            }
            Explanation::ConnectionFailed => {
                "We could not connect: the host is unreachable or dropped the connection. Check \
                 that your server is up and reachable from the internet on that port."
            }
            Explanation::DnsNotResolved => {
                "The host name does not resolve. Check its spelling and that its public DNS \
                 records (A or AAAA) exist."
            }
            Explanation::TlsUnknownAuthority => {
                "The certificate is not issued by a publicly trusted authority. Use a certificate \
                 from a public CA (such as Let's Encrypt) and serve the full chain with its \
                 intermediates."
            }
            Explanation::TlsSelfSigned => {
                "The certificate is self-signed, which we do not trust. Use a certificate from a \
                 public CA (such as Let's Encrypt)."
            }
            Explanation::TlsExpired => {
                "The certificate has expired. Renew it, and automate the renewal."
            }
            Explanation::TlsWrongHost => {
                "The certificate is not valid for the URL's host name. Serve a certificate that \
                 names this host, or use the host name the certificate is for."
            }
            Explanation::TlsFailed => {
                "The TLS handshake failed. Check that the server speaks HTTPS (TLS 1.2 or later) \
                 on that port with a valid certificate."
            }
            Explanation::Timeout => {
                "No answer within 15 s. Answer with a 2xx at once and do the work afterwards, \
                 for example in a queue."
            }
            Explanation::RequestFailed => {
                "The connection ended before a complete HTTP answer arrived. Check your server's \
                 logs for crashes, and any proxy in front of it."
            }
            Explanation::Blocked => {
                "The URL points to a private or reserved address, which is never called. Use a \
                 public address."
            }
            Explanation::Redirect => {
                "The endpoint answered with a redirect, and we do not follow redirects. Put the \
                 final URL (the answer's Location) into your webhook settings."
            }
            Explanation::Unauthorized => {
                "The endpoint refused us as unauthorised. Check its signature verification and \
                 that it uses the current secret (after a rotation both secrets sign for a \
                 while), and any authentication in front of it."
            }
            Explanation::NotFound => {
                "Nothing answers at that path. Check the path in the URL and that the route \
                 accepts POST."
            }
            Explanation::Gone => {
                "The endpoint answered 410 Gone, so we stopped retrying this delivery. Update the \
                 URL, or redeliver once the endpoint accepts events again."
            }
            Explanation::PayloadTooLarge => {
                "The endpoint refused the body as too large. Raise the request body limit of \
                 your server or proxy."
            }
            Explanation::TooManyRequests => {
                "The endpoint asked us to slow down. We honour its Retry-After header for the \
                 next attempt; raise its rate limit for our requests."
            }
            Explanation::ClientError => {
                "The endpoint rejected the request. Check its logs for why; it should accept our \
                 JSON body as sent."
            }
            Explanation::ServerError => {
                "Your server failed while handling the request. Check its error logs. We retry \
                 until the schedule ends; after that, recover the delivery from Webhook Logs."
            }
        }
    }
}

/// The explanation of an attempt with this record's `error_kind` and response code; `None` for
/// a success, and for an attempt whose outcome is not known (`interrupted`).
pub fn explain(error_kind: Option<&str>, response_status: Option<u16>) -> Option<Explanation> {
    match response_status {
        Some(status) => explain_status(status),
        None => error_kind
            .and_then(FailureKind::from_record_kind)
            .map(explain_failure),
    }
}

fn explain_status(status: u16) -> Option<Explanation> {
    match status {
        300..=399 => Some(Explanation::Redirect),
        401 | 403 => Some(Explanation::Unauthorized),
        404 => Some(Explanation::NotFound),
        410 => Some(Explanation::Gone),
        413 => Some(Explanation::PayloadTooLarge),
        429 => Some(Explanation::TooManyRequests),
        400..=499 => Some(Explanation::ClientError),
        500..=599 => Some(Explanation::ServerError),
        _ => None,
    }
}

fn explain_failure(kind: FailureKind) -> Explanation {
    match kind {
        FailureKind::Blocked => Explanation::Blocked,
        FailureKind::Dns => Explanation::DnsNotResolved,
        FailureKind::ConnectionRefused => Explanation::ConnectionRefused,
        FailureKind::Connect => Explanation::ConnectionFailed,
        FailureKind::Tls(TlsFailure::UnknownAuthority) => Explanation::TlsUnknownAuthority,
        FailureKind::Tls(TlsFailure::SelfSigned) => Explanation::TlsSelfSigned,
        FailureKind::Tls(TlsFailure::Expired) => Explanation::TlsExpired,
        FailureKind::Tls(TlsFailure::WrongHost) => Explanation::TlsWrongHost,
        FailureKind::Tls(TlsFailure::Other) => Explanation::TlsFailed,
        FailureKind::Timeout => Explanation::Timeout,
        FailureKind::Other => Explanation::RequestFailed,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_failure_kind_has_its_explanation() {
        let expected = [
            ("blocked", Explanation::Blocked),
            ("dns", Explanation::DnsNotResolved),
            ("connection_refused", Explanation::ConnectionRefused),
            ("connect", Explanation::ConnectionFailed),
            ("tls_unknown_authority", Explanation::TlsUnknownAuthority),
            ("tls_self_signed", Explanation::TlsSelfSigned),
            ("tls_expired", Explanation::TlsExpired),
            ("tls_wrong_host", Explanation::TlsWrongHost),
            ("tls", Explanation::TlsFailed),
            ("timeout", Explanation::Timeout),
            ("other", Explanation::RequestFailed),
        ];
        assert_eq!(expected.len(), FailureKind::ALL.len());
        for (kind, explanation) in expected {
            assert_eq!(explain(Some(kind), None), Some(explanation), "{kind}");
        }
        for kind in FailureKind::ALL {
            assert!(
                explain(Some(kind.as_str()), None).is_some(),
                "{kind:?} unexplained"
            );
        }
    }

    #[test]
    fn common_statuses_have_their_explanation() {
        let expected = [
            (301, Explanation::Redirect),
            (302, Explanation::Redirect),
            (307, Explanation::Redirect),
            (308, Explanation::Redirect),
            (400, Explanation::ClientError),
            (401, Explanation::Unauthorized),
            (403, Explanation::Unauthorized),
            (404, Explanation::NotFound),
            (410, Explanation::Gone),
            (413, Explanation::PayloadTooLarge),
            (422, Explanation::ClientError),
            (429, Explanation::TooManyRequests),
            (500, Explanation::ServerError),
            (502, Explanation::ServerError),
            (503, Explanation::ServerError),
            (504, Explanation::ServerError),
        ];
        for (status, explanation) in expected {
            // The dispatcher records `redirect` or `http_status` with the code: the code decides.
            for kind in [None, Some("http_status"), Some("redirect")] {
                assert_eq!(
                    explain(kind, Some(status)),
                    Some(explanation),
                    "{status} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn successes_and_unknown_outcomes_need_no_explanation() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(explain(None, Some(status)), None, "{status}");
        }
        assert_eq!(explain(None, None), None);
        assert_eq!(explain(Some("interrupted"), None), None);
        assert_eq!(explain(Some("something new"), None), None);
    }

    #[test]
    fn ids_are_distinct_and_every_explanation_has_english_text() {
        let ids: HashSet<&str> = Explanation::ALL.iter().map(|e| e.id()).collect();
        assert_eq!(ids.len(), Explanation::ALL.len());
        for explanation in Explanation::ALL {
            let text = explanation.english();
            assert!(
                text.len() > 40 && text.ends_with('.'),
                "{explanation:?}: {text}"
            );
        }
    }

    #[test]
    fn every_explanation_is_reachable() {
        let statuses = (100..=599).map(|status| explain(None, Some(status)));
        let kinds = FailureKind::ALL
            .into_iter()
            .map(|kind| explain(Some(kind.as_str()), None));
        let reached: HashSet<Explanation> = statuses.chain(kinds).flatten().collect();
        assert_eq!(reached.len(), Explanation::ALL.len());
    }

    #[test]
    fn the_texts_name_the_fixes_the_product_promises() {
        for (explanation, words) in [
            (
                Explanation::ConnectionRefused,
                "nothing listens on that port",
            ),
            (Explanation::DnsNotResolved, "does not resolve"),
            (Explanation::Timeout, "2xx at once"),
            (Explanation::Redirect, "we do not follow redirects"),
            (Explanation::Unauthorized, "current secret"),
            (Explanation::Gone, "we stopped"),
            (Explanation::TooManyRequests, "Retry-After"),
            (Explanation::Blocked, "never called"),
        ] {
            assert!(
                explanation.english().contains(words),
                "{explanation:?}: {words}"
            );
        }
    }
}
