import base64
import importlib.util
import json
import sys

spec = importlib.util.spec_from_file_location("verify", sys.argv[1])
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)

for case in json.load(sys.stdin):
    body = base64.b64decode(case["body_base64"])
    if case["check"] == "webhook-signature":
        now = {} if case["now"] is None else {"now": case["now"]}
        valid = verify.verify_webhook_signature(
            case["secret"], case["webhook_id"], case["webhook_timestamp"],
            case["webhook_signature"], body, **now)
    elif case["check"] == "x-feedbackpulse-signature":
        valid = verify.verify_feedbackpulse_signature(
            case["secret"], body, case["feedbackpulse_signature"])
    else:
        sys.exit(f"unknown check {case['check']}")
    print("valid" if valid else "invalid")
