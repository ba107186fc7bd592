#!/bin/sh
# The demo tenant of `docker-compose --profile demo up`, as `make run` makes it: a tenant with its
# admin user, a platform superadmin, and a webhook config pointing at the demo receiver. Runs in the
# FeedbackPulse image (fpctl, curl); the tenant's key is kept in the demo-state volume and reused
# while it still works, so running it again changes nothing.
set -eu

state=/var/lib/feedbackpulse/demo.json
demo_email=demo@feedbackpulse.test
demo_password=demo-password
admin_email=admin@feedbackpulse.test
admin_password=admin-password

# `fpctl tenant create` prints one line of compact JSON: {"api_key":"...","tenant_id":"..."}.
json_field() { # field file
  sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$2"
}

api_key=""
if [ -s "$state" ]; then
  api_key=$(json_field api_key "$state")
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" "$FP_API_URL/api/v2/webhooks/config")
  if [ "$status" = 401 ]; then api_key=""; fi
fi
if [ -z "$api_key" ]; then
  fpctl tenant create "Demo GmbH" >"$state"
  api_key=$(json_field api_key "$state")
  FP_USER_PASSWORD=$demo_password fpctl user create --email "$demo_email" \
    --tenant "$(json_field tenant_id "$state")" >/dev/null 2>&1 \
    || echo "note: user $demo_email exists already (from an earlier demo tenant); its password is unchanged"
fi
# Created once; later runs find it there.
FP_USER_PASSWORD=$admin_password fpctl user create --email "$admin_email" --superadmin >/dev/null 2>&1 || true
curl -fsS -o /dev/null -X PUT "$FP_API_URL/api/v2/webhooks/config" \
  -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
  -d "{\"url\": \"$FP_DEMO_RECEIVER_URL\", \"events\": [\"submission.created\", \"submission.status_changed\"], \"secret\": \"demo_shared_secret\"}"

cat <<INFO
The demo tenant is ready.
  Dashboard:  http://127.0.0.1:$FP_PUBLISHED_DASHBOARD_PORT/   (log in as $demo_email / $demo_password)
  Admin:      /admin/webhook-logs on the dashboard   (log in as $admin_email / $admin_password)
  API key:    $api_key
  Deliveries: docker-compose logs -f demo-receiver
Create a submission:
  curl -X POST http://127.0.0.1:$FP_PUBLISHED_API_PORT/api/v2/submissions \\
    -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json' \\
    -d '{"campaign_id": 1, "star_rating": 5, "text_feedback": "Love this product!", "customer_name": "Jane Doe"}'
INFO
