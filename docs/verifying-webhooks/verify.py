# Verifying a FeedbackPulse delivery in Python 3.8 or later, with the standard library only.
# Pass the raw request body (bytes), before any JSON parsing: a parsed and re-encoded body
# is not the body that was signed. In Flask, for example: request.get_data() and
# request.headers["webhook-id"], request.headers["webhook-timestamp"],
# request.headers["webhook-signature"].
import base64
import hashlib
import hmac
import time
from typing import Optional

TOLERANCE_SECONDS = 5 * 60


def signing_key(secret: str) -> bytes:
    # A whsec_ secret is the base64 of the key; any other secret is its UTF-8 bytes.
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except ValueError:
            pass
    return secret.encode()


def verify_webhook_signature(secret: str, webhook_id: str, webhook_timestamp: str,
                             webhook_signature: str, body: bytes,
                             now: Optional[float] = None) -> bool:
    """Checks the Standard Webhooks headers of a delivery."""
    try:
        timestamp = int(webhook_timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False  # too old (a replay) or from the future
    signed = f"{webhook_id}.{webhook_timestamp}.".encode() + body
    expected = base64.b64encode(
        hmac.new(signing_key(secret), signed, hashlib.sha256).digest())
    # Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
    return any(
        hmac.compare_digest(entry[len("v1,"):].encode(), expected)
        for entry in webhook_signature.split()
        if entry.startswith("v1,"))


def verify_feedbackpulse_signature(secret: str, body: bytes, signature: str) -> bool:
    """Checks X-FeedbackPulse-Signature (the body alone, no timestamp: prefer the above)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())
