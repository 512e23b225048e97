"""A mock OpenTelemetry collector: accepts OTLP/HTTP JSON on /v1/traces and keeps the spans.

Used in-process by the integration tests (start(), spans(), stop()); it can also
be told to fail (answer 503) or to hang, like a collector that is overloaded.
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Collector:
    def __init__(self):
        self.received = []
        self.requests = 0
        self.mode = "ok"  # ok | fail | hang
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with collector.lock:
                    collector.requests += 1
                    mode = collector.mode
                if mode == "hang":
                    time.sleep(5)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/json":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "fail":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                doc = json.loads(body)
                with collector.lock:
                    collector.received.append(doc)
                out = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        """Every span received, flattened, with attributes as a dict and the resource attached."""
        out = []
        with self.lock:
            docs = list(self.received)
        for doc in docs:
            for rs in doc["resourceSpans"]:
                resource = {a["key"]: list(a["value"].values())[0] for a in rs["resource"]["attributes"]}
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        s = dict(s)
                        s["attrs"] = {a["key"]: list(a["value"].values())[0] for a in s.get("attributes", [])}
                        s["resource"] = resource
                        out.append(s)
        return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
