package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"verifierharness/feedbackpulse"
)

type testCase struct {
	Check                  string `json:"check"`
	Secret                 string `json:"secret"`
	BodyBase64             string `json:"body_base64"`
	WebhookID              string `json:"webhook_id"`
	WebhookTimestamp       string `json:"webhook_timestamp"`
	WebhookSignature       string `json:"webhook_signature"`
	FeedbackPulseSignature string `json:"feedbackpulse_signature"`
	Now                    *int64 `json:"now"`
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "cases:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, c := range cases {
		body, err := base64.StdEncoding.DecodeString(c.BodyBase64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "body:", err)
			os.Exit(2)
		}
		var valid bool
		switch c.Check {
		case "webhook-signature":
			now := time.Now()
			if c.Now != nil {
				now = time.Unix(*c.Now, 0)
			}
			valid = feedbackpulse.VerifyWebhookSignature(c.Secret, c.WebhookID, c.WebhookTimestamp, c.WebhookSignature, body, now)
		case "x-feedbackpulse-signature":
			valid = feedbackpulse.VerifyFeedbackPulseSignature(c.Secret, body, c.FeedbackPulseSignature)
		default:
			fmt.Fprintln(os.Stderr, "unknown check", c.Check)
			os.Exit(2)
		}
		if valid {
			fmt.Fprintln(out, "valid")
		} else {
			fmt.Fprintln(out, "invalid")
		}
	}
}
