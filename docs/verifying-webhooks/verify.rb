# Verifying a FeedbackPulse delivery in Ruby 3.0 or later, with the standard library only.
# Pass the raw request body, before any JSON parsing (in Rack: request.body.read), and the
# headers request.get_header("HTTP_WEBHOOK_ID"), "HTTP_WEBHOOK_TIMESTAMP",
# "HTTP_WEBHOOK_SIGNATURE".
require "openssl"

module FeedbackPulseWebhook
  TOLERANCE_SECONDS = 5 * 60

  # A whsec_ secret is the base64 of the key; any other secret is its UTF-8 bytes.
  def self.signing_key(secret)
    if secret.start_with?("whsec_")
      begin
        return secret.delete_prefix("whsec_").unpack1("m0") # strict base64
      rescue ArgumentError
        # not base64: used as it is, like any other secret
      end
    end
    secret
  end

  # Checks the Standard Webhooks headers of a delivery.
  def self.verify_webhook_signature(secret, webhook_id, webhook_timestamp, webhook_signature, body,
                                    now: Time.now.to_i)
    return false unless webhook_id && webhook_signature && webhook_timestamp&.match?(/\A\d+\z/)
    # too old (a replay) or from the future
    return false if (now - webhook_timestamp.to_i).abs > TOLERANCE_SECONDS

    signed = "#{webhook_id}.#{webhook_timestamp}.".b + body.b
    expected = [OpenSSL::HMAC.digest("SHA256", signing_key(secret), signed)].pack("m0")
    # Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
    webhook_signature.split(" ").any? do |entry|
      entry.start_with?("v1,") && OpenSSL.secure_compare(entry.delete_prefix("v1,"), expected)
    end
  end

  # Checks X-FeedbackPulse-Signature (the body alone, no timestamp: prefer the above).
  def self.verify_feedbackpulse_signature(secret, body, signature)
    return false unless signature

    OpenSSL.secure_compare(signature, "sha256=#{OpenSSL::HMAC.hexdigest('SHA256', secret, body)}")
  end
end
