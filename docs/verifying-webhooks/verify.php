<?php
// Verifying a FeedbackPulse delivery in PHP 7.4 or later, with no extension beyond the defaults.
// Pass the raw request body, before any JSON parsing: file_get_contents('php://input').
// The headers are in $_SERVER: HTTP_WEBHOOK_ID, HTTP_WEBHOOK_TIMESTAMP, HTTP_WEBHOOK_SIGNATURE
// and HTTP_X_FEEDBACKPULSE_SIGNATURE.

const FEEDBACKPULSE_TOLERANCE_SECONDS = 5 * 60;

function feedbackpulse_signing_key(string $secret): string
{
    // A whsec_ secret is the base64 of the key; any other secret is its UTF-8 bytes.
    if (strncmp($secret, 'whsec_', 6) === 0) {
        $key = base64_decode(substr($secret, 6), true);
        if ($key !== false) {
            return $key;
        }
    }
    return $secret;
}

/** Checks the Standard Webhooks headers of a delivery. */
function feedbackpulse_verify_webhook_signature(
    string $secret,
    string $webhookId,
    string $webhookTimestamp,
    string $webhookSignature,
    string $body,
    ?int $now = null
): bool {
    if (preg_match('/\A\d+\z/', $webhookTimestamp) !== 1) {
        return false;
    }
    $now = $now ?? time();
    if (abs($now - (int) $webhookTimestamp) > FEEDBACKPULSE_TOLERANCE_SECONDS) {
        return false; // too old (a replay) or from the future
    }
    $signed = $webhookId . '.' . $webhookTimestamp . '.' . $body;
    $expected = base64_encode(hash_hmac('sha256', $signed, feedbackpulse_signing_key($secret), true));
    // Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
    foreach (explode(' ', $webhookSignature) as $entry) {
        if (strncmp($entry, 'v1,', 3) === 0 && hash_equals($expected, substr($entry, 3))) {
            return true;
        }
    }
    return false;
}

/** Checks X-FeedbackPulse-Signature (the body alone, no timestamp: prefer the above). */
function feedbackpulse_verify_signature(string $secret, string $body, string $signature): bool
{
    return hash_equals('sha256=' . hash_hmac('sha256', $body, $secret), $signature);
}
