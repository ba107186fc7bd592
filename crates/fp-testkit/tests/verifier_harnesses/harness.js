'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { verifyWebhookSignature, verifyFeedbackPulseSignature } = require(path.resolve(process.argv[2]));

for (const testCase of JSON.parse(fs.readFileSync(0, 'utf8'))) {
  const body = Buffer.from(testCase.body_base64, 'base64');
  let valid;
  if (testCase.check === 'webhook-signature') {
    // undefined, not null, lets the verifier read its own clock.
    valid = verifyWebhookSignature(testCase.secret, testCase.webhook_id, testCase.webhook_timestamp,
      testCase.webhook_signature, body, testCase.now ?? undefined);
  } else if (testCase.check === 'x-feedbackpulse-signature') {
    valid = verifyFeedbackPulseSignature(testCase.secret, body, testCase.feedbackpulse_signature);
  } else {
    throw new Error(`unknown check ${testCase.check}`);
  }
  console.log(valid ? 'valid' : 'invalid');
}
