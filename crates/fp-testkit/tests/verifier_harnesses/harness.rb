require "json"

require File.expand_path(ARGV.fetch(0))

JSON.parse($stdin.read).each do |test_case|
  body = test_case.fetch("body_base64").unpack1("m0")
  valid =
    case test_case.fetch("check")
    when "webhook-signature"
      now = test_case["now"] ? { now: test_case["now"] } : {}
      FeedbackPulseWebhook.verify_webhook_signature(
        test_case.fetch("secret"), test_case.fetch("webhook_id"), test_case.fetch("webhook_timestamp"),
        test_case.fetch("webhook_signature"), body, **now
      )
    when "x-feedbackpulse-signature"
      FeedbackPulseWebhook.verify_feedbackpulse_signature(
        test_case.fetch("secret"), body, test_case.fetch("feedbackpulse_signature")
      )
    else
      abort "unknown check #{test_case['check']}"
    end
  puts valid ? "valid" : "invalid"
end
