"""AWS for the tests: moto's server (an implementation of the EC2 and ELBv2 APIs nobody here
wrote) on a free loopback port, a proxy in front of it that plays EC2's throttling and can hold
an answer, and boto3 clients of it.

moto in server mode keeps its state per process until reset (POST /moto-api/reset); every test
starts from a reset server. AMI validation is switched on (moto accepts any image id
otherwise), so an unknown or malformed image is refused as EC2 refuses it. No traffic leaves
loopback: moto answers every call itself.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import boto3
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

from tests.support.ports import free_port
from tke.platform.v1 import cluster_pb2

REGION = "us-east-1"
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    b"<Message>Request limit exceeded.</Message></Error></Errors>"
    b"<RequestID>5b7c4b6e-0000-4000-8000-000000000000</RequestID></Response>"
)


@dataclass
class Moto:
    url: str

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=30).read()

    def client(self, service: str, url: str = "") -> Any:
        return boto3.client(
            service,
            endpoint_url=url or self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    moto_settings.ENABLE_AMI_VALIDATION = True
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass
class ProxyState:
    """What the proxy does: throttle the next `throttle[action]` calls of an action with EC2's
    RequestLimitExceeded; hold the answer of `hold` actions (forwarded to moto, answered only
    once `release` is set); counts of what it saw."""

    throttle: dict[str, int] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class AWSProxy:
    """An HTTP proxy in front of moto (the providers' endpoint_url)."""

    def __init__(self, moto_url: str) -> None:
        self.state = ProxyState()
        target = moto_url.removeprefix("http://")
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
                with state.lock:
                    state.seen[action] = state.seen.get(action, 0) + 1
                    throttle = state.throttle.get(action, 0) > 0
                    if throttle:
                        state.throttle[action] -= 1
                        state.throttled[action] = state.throttled.get(action, 0) + 1
                if throttle:
                    self._answer(400, THROTTLED, "text/xml")
                    return
                conn = http.client.HTTPConnection(target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if action in state.hold:
                    state.held.set()
                    state.release.wait(120)
                self._answer(resp.status, data, resp.getheader("Content-Type") or "text/xml")

            def _answer(self, status: int, data: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller is gone (a killed controller)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="aws-proxy", daemon=True)

    def __enter__(self) -> AWSProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


def instances(ec2: Any, **tag_filters: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filters.items()]
    found = ec2.describe_instances(Filters=filters)
    return [i for r in found["Reservations"] for i in r["Instances"]]


def an_image(ec2: Any) -> str:
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def aws_cluster(image: str) -> cluster_pb2.Cluster:
    """An aws cluster "prod": 3 masters of m5.large behind a load balancer, in two new subnets."""
    c = cluster_pb2.Cluster()
    c.metadata.name = "prod"
    c.spec.type, c.spec.version = "aws", "1.30.2"
    c.spec.network.pod_cidr, c.spec.network.service_cidr = "10.244.0.0/16", "10.96.0.0/12"
    c.spec.network.mode = cluster_pb2.NETWORK_MODE_FIXED_IP  # the add-on with tke-ipamd
    aws = c.spec.aws
    aws.vpc_cidr = "10.50.0.0/16"
    aws.subnets.add(zone="us-east-1a", cidr="10.50.1.0/24")
    aws.subnets.add(zone="us-east-1b", cidr="10.50.2.0/24")
    aws.internet_gateway = True
    aws.load_balancer = True
    aws.control_plane.count = 3
    aws.control_plane.machine.instance_type = "m5.large"
    aws.control_plane.machine.image_id = image
    return c


class NoDialer:
    """The aws providers never log in to a machine."""

    def connect(self, target: Any) -> Any:
        raise AssertionError(f"an aws provider tried to log in to {target}")
