// Package feedbackpulse verifies FeedbackPulse deliveries (Go 1.19 or later, standard library
// only). Pass the raw request body, before any JSON parsing (io.ReadAll(r.Body)), and the
// headers r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"),
// r.Header.Get("webhook-signature").
package feedbackpulse

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Tolerance is how far webhook-timestamp may be from the receiver's clock.
const Tolerance = 5 * time.Minute

// signingKey: a whsec_ secret is the base64 of the key; any other secret is its UTF-8 bytes.
func signingKey(secret string) []byte {
	if strings.HasPrefix(secret, "whsec_") {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err == nil {
			return key
		}
	}
	return []byte(secret)
}

// VerifyWebhookSignature checks the Standard Webhooks headers of a delivery received at now.
func VerifyWebhookSignature(secret, webhookID, webhookTimestamp, webhookSignature string, body []byte, now time.Time) bool {
	seconds, err := strconv.ParseInt(webhookTimestamp, 10, 64)
	if err != nil {
		return false
	}
	if offset := now.Sub(time.Unix(seconds, 0)); offset > Tolerance || offset < -Tolerance {
		return false // too old (a replay) or from the future
	}
	mac := hmac.New(sha256.New, signingKey(secret))
	mac.Write([]byte(webhookID + "." + webhookTimestamp + "."))
	mac.Write(body)
	expected := mac.Sum(nil)
	// Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
	for _, entry := range strings.Split(webhookSignature, " ") {
		if !strings.HasPrefix(entry, "v1,") {
			continue
		}
		signature, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(entry, "v1,"))
		if err == nil && hmac.Equal(signature, expected) {
			return true
		}
	}
	return false
}

// VerifyFeedbackPulseSignature checks X-FeedbackPulse-Signature (the body alone, no timestamp:
// prefer VerifyWebhookSignature).
func VerifyFeedbackPulseSignature(secret string, body []byte, signature string) bool {
	if !strings.HasPrefix(signature, "sha256=") {
		return false
	}
	given, err := hex.DecodeString(strings.TrimPrefix(signature, "sha256="))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(given, mac.Sum(nil))
}
