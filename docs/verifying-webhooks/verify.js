// Verifying a FeedbackPulse delivery in Node.js 16 or later, with the built-in crypto only.
// Pass the raw request body as a Buffer, before any JSON parsing (in Express:
// express.raw({ type: 'application/json' })), and the headers req.headers['webhook-id'],
// req.headers['webhook-timestamp'], req.headers['webhook-signature'].
'use strict';

const crypto = require('node:crypto');

const TOLERANCE_SECONDS = 5 * 60;

// A whsec_ secret is the base64 of the key; any other secret is its UTF-8 bytes.
function signingKey(secret) {
  const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : '';
  // Buffer.from skips characters that are not base64, so check the form first.
  if (encoded.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) {
    return Buffer.from(encoded, 'base64');
  }
  return Buffer.from(secret, 'utf8');
}

function sameText(given, expected) {
  const left = Buffer.from(given, 'utf8');
  const right = Buffer.from(expected, 'utf8');
  // timingSafeEqual needs equal lengths; the length of a signature is no secret.
  return left.length === right.length && crypto.timingSafeEqual(left, right);
}

// Checks the Standard Webhooks headers of a delivery.
function verifyWebhookSignature(secret, webhookId, webhookTimestamp, webhookSignature, body,
  now = Date.now() / 1000) {
  if (typeof webhookId !== 'string' || typeof webhookSignature !== 'string'
    || !/^\d+$/.test(webhookTimestamp ?? '')) {
    return false;
  }
  if (Math.abs(now - Number(webhookTimestamp)) > TOLERANCE_SECONDS) {
    return false; // too old (a replay) or from the future
  }
  const expected = crypto.createHmac('sha256', signingKey(secret))
    .update(`${webhookId}.${webhookTimestamp}.`)
    .update(body)
    .digest('base64');
  // Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
  return webhookSignature.split(' ')
    .some((entry) => entry.startsWith('v1,') && sameText(entry.slice('v1,'.length), expected));
}

// Checks X-FeedbackPulse-Signature (the body alone, no timestamp: prefer the above).
function verifyFeedbackPulseSignature(secret, body, signature) {
  if (typeof signature !== 'string') {
    return false;
  }
  const expected = 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
  return sameText(signature, expected);
}

module.exports = { verifyWebhookSignature, verifyFeedbackPulseSignature };
