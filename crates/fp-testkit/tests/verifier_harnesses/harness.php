<?php
require $argv[1];

$cases = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
foreach ($cases as $case) {
    $body = base64_decode($case['body_base64'], true);
    if ($case['check'] === 'webhook-signature') {
        $valid = $case['now'] === null
            ? feedbackpulse_verify_webhook_signature($case['secret'], $case['webhook_id'],
                $case['webhook_timestamp'], $case['webhook_signature'], $body)
            : feedbackpulse_verify_webhook_signature($case['secret'], $case['webhook_id'],
                $case['webhook_timestamp'], $case['webhook_signature'], $body, $case['now']);
    } elseif ($case['check'] === 'x-feedbackpulse-signature') {
        $valid = feedbackpulse_verify_signature($case['secret'], $body,
            $case['feedbackpulse_signature']);
    } else {
        fwrite(STDERR, "unknown check {$case['check']}\n");
        exit(2);
    }
    echo $valid ? "valid\n" : "invalid\n";
}
