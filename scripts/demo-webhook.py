#!/usr/bin/env python3
"""A loopback Alertmanager webhook receiver for the demo: prints each notification on one line
(receiver, status, alert names with their node/rack/bridge/domain) and appends the raw JSON to a
file, with the receipt time added as "receivedUnix" (seconds since the epoch; the end-to-end
test measures injection-to-notification times from it). Usage: demo-webhook.py PORT LOGFILE"""
import http.server
import json
import sys
import time

PORT = int(sys.argv[1])
LOG = sys.argv[2]
SHOWN = ("node", "rack", "bridge", "check", "domain", "rule", "namespace", "process")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server naming)
        received = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.end_headers()
        try:
            msg = json.loads(body)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        msg["receivedUnix"] = received
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(msg) + "\n")
        alerts = []
        for a in msg.get("alerts", []):
            labels = a.get("labels", {})
            where = ",".join(f"{k}={labels[k]}" for k in SHOWN if k in labels)
            alerts.append(f"{labels.get('alertname')}{{{where}}}")
        print(
            f"{time.strftime('%H:%M:%S')} notification to {msg.get('receiver')}: "
            f"{msg.get('status')} {' '.join(alerts)}",
            flush=True,
        )

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
