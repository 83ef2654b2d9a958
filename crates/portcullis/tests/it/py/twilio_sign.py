"""Signs Twilio callbacks with the official `twilio` package's RequestValidator, unchanged:
reads a JSON list of {"token", "url", "params"} on stdin and prints a JSON list of
X-Twilio-Signature values. Each signature is also checked with the library's own
`validate`, so a signature this prints is one Twilio's SDK accepts."""
import json
import sys

from twilio.request_validator import RequestValidator

signatures = []
for case in json.load(sys.stdin):
    validator = RequestValidator(case["token"])
    signature = validator.compute_signature(case["url"], case["params"])
    assert validator.validate(case["url"], case["params"], signature), case["url"]
    signatures.append(signature)
print(json.dumps(signatures))
