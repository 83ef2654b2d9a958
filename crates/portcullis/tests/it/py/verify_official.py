"""Verifies captured Portcullis deliveries with the official `standardwebhooks` library,
unchanged. Exits non-zero (with the reason) on any unexpected result."""
import json
import sys
from datetime import datetime, timedelta

import standardwebhooks.webhooks as sw

case = json.load(open(sys.argv[1]))
body, headers = case["body"], case["headers"]

for secret in case["secrets"]:
    payload = sw.Webhook(secret).verify(body, headers)
    assert payload["type"] == case["type"], payload

try:
    sw.Webhook(case["stranger"]).verify(body, headers)
    sys.exit("a stranger's secret verified the delivery")
except sw.WebhookVerificationError:
    pass

tampered = body.replace('"data"', '"data" ', 1)
try:
    sw.Webhook(case["secrets"][0]).verify(tampered, headers)
    sys.exit("a tampered body verified")
except sw.WebhookVerificationError:
    pass


class FiveMinutesLater(datetime):
    """The library's clock, moved past its 5-minute tolerance (the library is unchanged)."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(minutes=5, seconds=1)


sw.datetime = FiveMinutesLater
try:
    sw.Webhook(case["secrets"][0]).verify(body, headers)
    sys.exit("a delivery replayed after 5 minutes verified")
except sw.WebhookVerificationError as e:
    assert "too old" in str(e), e

print("ok")
