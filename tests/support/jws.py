"""The detached JWS of a bootstrap token over cluster-info's kubeconfig, as Kubernetes'
bootstrapsigner (kube-controller-manager) writes it into the ConfigMap as
`jws-kubeconfig-<token id>` and as `kubeadm join`'s token discovery checks it: HS256 keyed
with the token's secret, header {"alg":"HS256","kid":"<token id>"}, the payload left out
("HEADER..SIGNATURE")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached(content: str, token_id: str, token_secret: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    payload = _b64(content.encode())
    signature = hmac.new(token_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}..{_b64(signature)}"
