#!/usr/bin/env python3
"""Minimal HTTP binding around IdentityPython's idpyoidc ``Server`` (RFC 8693 interop).

The binding only moves bytes: it parses the HTTP request, hands it to the
idpyoidc endpoint (``parse_request`` -> ``process_request`` -> ``do_response``)
and writes back the status, headers and body the library produced.  Every
OAuth decision (client authentication, token-exchange policy, scopes,
audiences, token minting, token lifetimes) is made by idpyoidc itself. Two
small adaptations let it serve as leg 1 of identity chaining (a jwt
requested_token_type, and ``aud`` on exchanged JWTs); see their classes.

See README.md in this directory for usage and for the observed behaviour.
"""

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization import NoEncryption
from cryptography.hazmat.primitives.serialization import PrivateFormat
from cryptojwt.jwk.ec import new_ec_key

from idpyoidc.message.oauth2 import ResponseMessage
from idpyoidc.server import Server
from idpyoidc.server.authz import AuthzHandling
from idpyoidc.server.client_authn import verify_client
from idpyoidc.server.configure import ASConfiguration
from idpyoidc.server.cookie_handler import CookieHandler
from idpyoidc.server.exception import ClientAuthenticationError
from idpyoidc.server.oauth2.token_helper import validate_token_exchange_policy
from idpyoidc.server.oauth2.token_helper.token_exchange import TokenExchangeHelper
from idpyoidc.server.session.grant import ExchangeGrant
from idpyoidc.server.session.token import TOKEN_TYPES_MAPPING
from idpyoidc.server.token.jwt_token import JWTToken
from idpyoidc.server.user_authn.authn_context import INTERNETPROTOCOLPASSWORD
from idpyoidc.server.user_info import UserInfo

LOG = logging.getLogger("idpy_server")

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
# Identity chaining (draft-ietf-oauth-identity-chaining) leg 1 asks for this
# type: a JWT assertion the other AS can verify with this server's JWKS.
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


# The two adaptations below (and plain_sub) are the only places the binding
# changes what the library mints; everything else stays the library's decision.

class ChainingTokenExchangeHelper(TokenExchangeHelper):
    """Token exchange that also accepts ``requested_token_type=…:jwt``.

    idpyoidc 5.0.0 knows no jwt type: its helper's ``token_types_mapping`` and
    the module-level ``TOKEN_TYPES_MAPPING`` that ``get_handler_key`` reads
    only map access/refresh/id tokens, so merely allowing the type in
    ``requested_token_types_supported`` ends in a KeyError (400
    invalid_request "'urn:ietf:params:oauth:token-type:jwt'").
    The library's access tokens already are signed JWTs (JWTToken), which is
    what identity chaining needs, so a jwt request is minted by the
    access_token handler; the response then says ``issued_token_type=…:jwt``
    because the library echoes the requested type.
    """

    token_types_mapping = dict(TokenExchangeHelper.token_types_mapping,
                               **{JWT_TOKEN_TYPE: "access_token"})

    def get_handler_key(self, request, endpoint_context):
        # The library's own lookup, but through the mapping above: the token
        # endpoint calls this after minting to find the new token's session.
        client_info = endpoint_context.cdb.get(request["client_id"], {})
        default = client_info.get("token_exchange", {}).get(
            "default_requested_token_type") or self.config.get(
            "default_requested_token_type", ACCESS_TOKEN_TYPE)
        requested = request.get("requested_token_type", default)
        return dict(TOKEN_TYPES_MAPPING, **self.token_types_mapping)[requested]


class AudienceJWTToken(JWTToken):
    """The library's JWT access token, plus ``aud`` on exchanged tokens.

    ``ExchangeGrant.payload_arguments`` computes ``aud`` from the requested
    audience/resource and then overwrites its payload with the exchange
    grant's own (empty) resources, so exchanged JWTs carry no ``aud`` even
    though introspection reports one. A chained assertion without ``aud`` is
    useless to the other AS, so put back what the exchange request asked for
    (audience first, then resource), which the library's policy has already
    checked against ``--exchange-audiences``. Tokens from other grants (the
    subject tokens) are left as the library makes them.
    """

    def load_custom_claims(self, payload=None):
        try:
            grant = self.upstream_get("context").session_manager.get_grant(payload["sid"])
        except Exception:  # noqa: BLE001 - no session: mint as the library would
            return payload
        request = getattr(grant, "exchange_request", None)
        if not isinstance(grant, ExchangeGrant) or not request:
            return payload
        aud = []
        for param in ("audience", "resource"):
            value = request.get(param) or []
            aud += value if isinstance(value, list) else [value]
        if aud:
            payload["aud"] = list(dict.fromkeys(aud))
        return payload


def plain_sub(uid, salt="", **kwargs):
    """``sub`` = the local user id (``alice``) instead of the library's default
    salted hash, so that the AS at the end of a chain, which only sees this
    server's assertion, can be set up in advance to know the user."""
    return uid


# The client the binding itself uses to obtain subject tokens (auth-code flow).
SUBJECT_CLIENT_ID = "tokex-subject"
SUBJECT_REDIRECT_URI = "https://subject-client.invalid/cb"
SUBJECT_USER = "alice"

# Scopes. The subject client may ask for all of them; the exchange clients are
# only allowed the first two, so asking for "admin" in an exchange is refused
# by the library (invalid_scope).
EXCHANGE_CLIENT_SCOPES = ["read", "write"]
SUBJECT_CLIENT_SCOPES = ["read", "write", "admin"]
DEFAULT_SUBJECT_SCOPE = "read write"

KEYDEFS = [
    {"type": "RSA", "key": "", "use": ["sig"]},
    {"type": "EC", "crv": "P-256", "use": ["sig"]},
]
COOKIE_KEYDEFS = [
    {"type": "oct", "kid": "sig", "use": ["sig"]},
    {"type": "oct", "kid": "enc", "use": ["enc"]},
]
CODE_CRYPT_CONFIG = {
    "kwargs": {
        "keys": {
            "key_defs": [
                {"type": "OCT", "use": ["enc"], "kid": "password"},
                {"type": "OCT", "use": ["enc"], "kid": "salt"},
            ]
        },
        "iterations": 1,
    }
}

PATHS = {
    "/.well-known/oauth-authorization-server": "server_metadata",
    "/authorization": "authorization",
    "/token": "token",
    "/introspection": "introspection",
}
JWKS_PATH = "/jwks.json"


def build_server(issuer, workdir, audiences, token_lifetime, clients, assertion_audience):
    """Build the idpyoidc Server (OAuth 2.0 AS flavour)."""
    exchange_policy = {
        "requested_token_types_supported": [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE],
        "default_requested_token_type": ACCESS_TOKEN_TYPE,
        "subject_token_types_supported": [ACCESS_TOKEN_TYPE],
        "policy": {
            "": {
                "function": validate_token_exchange_policy,
                # Both audience= and resource= values are checked by the
                # library's default policy against these lists.
                "kwargs": {"audience": list(audiences), "resource": list(audiences)},
            }
        },
    }
    conf = {
        "issuer": issuer,
        "httpc_params": {"verify": False, "timeout": 1},
        "keys": {"key_defs": KEYDEFS, "uri_path": JWKS_PATH.lstrip("/")},
        "cookie_handler": {
            "class": CookieHandler,
            "kwargs": {"keys": {"key_defs": COOKIE_KEYDEFS}},
        },
        "endpoint": {
            "provider_info": {
                "path": ".well-known/oauth-authorization-server",
                "class": "idpyoidc.server.oauth2.server_metadata.ServerMetadata",
                "kwargs": {"client_authn_method": None},
            },
            "authorization": {
                "path": "authorization",
                "class": "idpyoidc.server.oauth2.authorization.Authorization",
                "kwargs": {
                    "client_authn_method": None,
                    "response_types_supported": ["code"],
                    "response_modes_supported": ["query"],
                },
            },
            "token": {
                "path": "token",
                "class": "idpyoidc.server.oauth2.token.Token",
                "kwargs": {
                    "client_authn_method": [
                        "client_secret_basic", "client_secret_post", "private_key_jwt"],
                    "grant_types_helpers": {
                        "authorization_code": {
                            "class": "idpyoidc.server.oauth2.token_helper.access_token.AccessTokenHelper",
                        },
                        TOKEN_EXCHANGE_GRANT: {
                            "class": ChainingTokenExchangeHelper,
                            "kwargs": exchange_policy,
                        },
                    },
                },
            },
            "introspection": {
                "path": "introspection",
                "class": "idpyoidc.server.oauth2.introspection.Introspection",
                "kwargs": {
                    "client_authn_method": ["client_secret_basic", "client_secret_post"],
                    # Default True: a client may only introspect tokens whose
                    # audience contains its own client_id. Exchanged tokens
                    # carry the requested audience, so let the test clients
                    # introspect anything.
                    "enforce_audience_restriction": False,
                },
            },
        },
        "authentication": {
            "anon": {
                "acr": INTERNETPROTOCOLPASSWORD,
                "class": "idpyoidc.server.user_authn.user.NoAuthn",
                "kwargs": {"user": SUBJECT_USER},
            }
        },
        "userinfo": {"class": UserInfo, "kwargs": {"db": {SUBJECT_USER: {"sub": SUBJECT_USER}}}},
        "session_params": {"sub_func": {"public": {"function": plain_sub}}},
        "client_authn": verify_client,
        "template_dir": os.path.join(workdir, "templates"),
        "authz": {
            "class": AuthzHandling,
            "kwargs": {
                "grant_config": {
                    "usage_rules": {
                        "authorization_code": {
                            "supports_minting": ["access_token"],
                            "max_usage": 1,
                            "expires_in": 120,
                        },
                        # Access tokens may be used as subject tokens for
                        # minting further access tokens (token exchange).
                        # idpyoidc copies the subject token's expiry into the
                        # exchanged token's expires_in, so this lifetime is the
                        # expires_in an exchange reports (see README).
                        "access_token": {
                            "supports_minting": ["access_token"],
                            "expires_in": token_lifetime,
                        },
                    },
                    "expires_in": 43200,
                }
            },
        },
        "token_handler_args": {
            "code": {"lifetime": 600, "kwargs": {"crypt_conf": CODE_CRYPT_CONFIG}},
            "token": {
                # A dotted path, not the class: init_token_handler hands this
                # value to cryptojwt's importer unconditionally, which raises
                # TypeError on a class object. So this file must run as the
                # main script (as interop.rs starts it).
                "class": "__main__.AudienceJWTToken",
                "kwargs": {"lifetime": token_lifetime},
            },
        },
    }
    server = Server(ASConfiguration(conf=conf, base_path=workdir), cwd=workdir)
    context = server.context
    context.map_supported_to_preferred()

    for client_id, info in clients.items():
        context.cdb[client_id] = {
            "client_id": client_id,
            "client_secret": info["secret"],
            "client_salt": secrets.token_hex(4),
            "token_endpoint_auth_method": info["auth"],
            "client_authn_method": [info["auth"]],
            "redirect_uris": [(SUBJECT_REDIRECT_URI, {})],
            "response_types_supported": ["code"],
            "grant_types_supported": info["grant_types"],
            "allowed_scopes": info["scopes"],
        }
        if "jwk" in info:
            context.keyjar.import_jwks({"keys": [info["jwk"]]}, client_id)

    # Which private_key_jwt assertion audiences the token endpoint accepts: the
    # library's default is its own URL; "" is the library's name for the issuer
    # (as its userinfo endpoint uses it).
    server.get_endpoint("token").allowed_targets = {
        "endpoint": ["token"],
        "issuer": [""],
    }[assertion_audience]
    return server


def form_to_dict(text):
    """application/x-www-form-urlencoded -> dict; a repeated parameter becomes a
    list so the library (not the binding) decides whether that is allowed."""
    return {k: v[0] if len(v) == 1 else v
            for k, v in parse_qs(text or "", keep_blank_values=True).items()}


def error_json(status, error, err, extra_headers=()):
    """Response for an exception the library *raised* (see README)."""
    msg = ResponseMessage(error=error, error_description=str(err) or type(err).__name__)
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
               ("Pragma", "no-cache")] + list(extra_headers)
    return status, headers, msg.to_json().encode()


class Binding:
    def __init__(self, server, issuer, clients):
        self.server = server
        self.issuer = issuer
        self.clients = clients
        # idpyoidc keeps all state in memory without locking; serialize calls.
        self.lock = threading.Lock()
        self.token_requests = 0
        self.count_lock = threading.Lock()

    # -- generic endpoint driver ------------------------------------------
    def call_endpoint(self, name, method, query, body, headers, url, cookies=None):
        """Drive one idpyoidc endpoint the way idpyoidc's own flask_op example
        does (parse_request -> process_request -> do_response).
        Returns (status, [(header, value)], body_bytes)."""
        endpoint = self.server.get_endpoint(name)
        http_info = {
            "headers": {k.lower(): v for k, v in headers.items()},
            "method": method,
            "url": url,
            "cookie": cookies or [],
        }
        if method == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "application/json":
                req_args = body.decode("utf-8")  # let the library deserialize
            else:
                req_args = form_to_dict(body.decode("utf-8"))
        else:
            req_args = form_to_dict(query)

        with self.lock:
            try:
                parsed = endpoint.parse_request(req_args, http_info=http_info)
            except ClientAuthenticationError as err:
                # idpyoidc raises (rather than returns an error message) when
                # client authentication fails. Binding's mapping: RFC 6749 5.2.
                LOG.info("client authentication failed at %s: %r", name, err)
                extra = []
                if http_info["headers"].get("authorization", "").lower().startswith("basic "):
                    extra = [("WWW-Authenticate", 'Basic realm="idpy-interop"')]
                return error_json(401, "invalid_client", err, extra)
            except Exception as err:  # noqa: BLE001 - as flask_op: 400 invalid_request
                LOG.warning("parse_request raised at %s: %r", name, err)
                return error_json(400, "invalid_request", err)

            if isinstance(parsed, ResponseMessage) and "error" in parsed:
                return self._render_error(endpoint, parsed)

            try:
                args = endpoint.process_request(parsed, http_info=http_info)
            except Exception as err:  # noqa: BLE001 - as flask_op: 400 invalid_request
                LOG.warning("process_request raised at %s: %r", name, err)
                return error_json(400, "invalid_request", err)

            if isinstance(args, ResponseMessage) and "error" in args:
                return self._render_error(endpoint, args)
            if "http_response" in args:
                return 200, [("Content-Type", "text/html")], str(args["http_response"]).encode()
            if "redirect_location" in args:
                return 302, [("Location", args["redirect_location"])], b""
            return self._render(endpoint, args, request=parsed)

    def _render_error(self, endpoint, msg):
        """An error the library returned as a message (not raised)."""
        if endpoint.response_placement != "body":
            # e.g. authorization endpoint errors without a usable redirect_uri
            # (flask_op answers these with a 400 JSON body too).
            return 400, [("Content-Type", "application/json")], msg.to_json().encode()
        kwargs = {k: msg[k] for k in ("error_description", "error_uri", "state") if k in msg}
        info = endpoint.do_response(error=msg["error"], **kwargs)
        return self._to_http(endpoint, info, 400)

    def _render(self, endpoint, args, request=None):
        info = endpoint.do_response(request=request, **args)
        return self._to_http(endpoint, info, 200)

    @staticmethod
    def _to_http(endpoint, info, default_status):
        placement = info.get("response_placement") or endpoint.response_placement
        headers = list(info.get("http_headers", []))
        cookies = info.get("cookie") or []
        if isinstance(cookies, dict):
            cookies = [cookies]
        for cookie in cookies:
            if isinstance(cookie, dict) and "name" in cookie:
                attrs = [f"{cookie['name']}={cookie.get('value', '')}", "Path=/"]
                for k, v in cookie.items():
                    if k in ("name", "value", "path"):
                        continue
                    attrs.append(k if v is True else f"{k}={v}")
                headers.append(("Set-Cookie", "; ".join(attrs)))
        if placement == "url":
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers.append(("Location", info["response"]))
            return info.get("response_code", 302), headers, b""
        body = info["response"]
        if not isinstance(body, (bytes, bytearray)):
            body = str(body).encode("utf-8")
        return info.get("response_code", default_status), headers, bytes(body)

    # -- binding's own helper: obtain a subject token ---------------------
    def subject_token(self, scope):
        """Authorization-code flow driven in-process through the library's
        authorization and token endpoints, as client ``tokex-subject``."""
        state = secrets.token_urlsafe(8)
        query = urlencode({
            "response_type": "code",
            "client_id": SUBJECT_CLIENT_ID,
            "redirect_uri": SUBJECT_REDIRECT_URI,
            "scope": scope,
            "state": state,
        })
        status, headers, body = self.call_endpoint(
            "authorization", "GET", query, b"", {}, self.issuer + "/authorization?" + query)
        location = dict((k.lower(), v) for k, v in headers).get("location", "")
        if status != 302 or not location:
            return status, {"error": "authorization_failed", "status": status,
                            "body": body.decode("utf-8", "replace")}
        params = parse_qs(urlsplit(location).query)
        if "code" not in params:
            return 400, {"error": "authorization_failed", "location": location}
        secret = self.clients[SUBJECT_CLIENT_ID]["secret"]
        basic = base64.b64encode(f"{SUBJECT_CLIENT_ID}:{secret}".encode()).decode()
        form = urlencode({
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "redirect_uri": SUBJECT_REDIRECT_URI,
            "state": state,
        }).encode()
        status, headers, body = self.call_endpoint(
            "token", "POST", "", form,
            {"content-type": "application/x-www-form-urlencoded", "authorization": f"Basic {basic}"},
            self.issuer + "/token")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"error": "token_failed", "body": body.decode("utf-8", "replace")}
        return status, payload

    def jwks(self):
        with self.lock:
            # Same call as idpyoidc's own flask_op example (/jwks view).
            return self.server.context.keyjar.export_jwks()


def parse_cookies(header):
    """Cookie header -> idpyoidc's http_info["cookie"] shape ([{"name","value"}])."""
    out = []
    for part in (header or "").split(";"):
        if "=" in part:
            name, value = part.split("=", 1)
            out.append({"name": name.strip(), "value": value.strip()})
    return out


def make_handler(binding):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "idpy-interop/1"

        def log_message(self, fmt, *args):  # access log -> stderr via logging
            LOG.info("%s - %s", self.address_string(), fmt % args)

        def _send(self, status, headers, body):
            self.send_response(status)
            for k, v in headers:
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, [("Content-Type", "application/json"),
                                ("Cache-Control", "no-store")], json.dumps(obj).encode())

        def _read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def _dispatch(self, method):
            split = urlsplit(self.path)
            path, query = split.path, split.query
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            url = binding.issuer + self.path

            if path == "/test/stats" and method == "GET":
                with binding.count_lock:
                    n = binding.token_requests
                return self._json(200, {"token_requests": n})
            if path == "/test/subject-token":
                args = parse_qs(query)
                if method == "POST" and body:
                    args.update(parse_qs(body.decode("utf-8")))
                scope = args.get("scope", [DEFAULT_SUBJECT_SCOPE])[0]
                status, payload = binding.subject_token(scope)
                return self._json(status, payload)
            if path == JWKS_PATH and method == "GET":
                return self._json(200, binding.jwks())
            name = PATHS.get(path)
            if name is None:
                return self._json(404, {"error": "not_found"})
            if name == "token":
                # Only requests arriving over HTTP are counted; the binding's own
                # subject-token flow calls the endpoint objects in-process.
                with binding.count_lock:
                    binding.token_requests += 1
            status, hdrs, out = binding.call_endpoint(
                name, method, query, body, headers, url, parse_cookies(headers.get("cookie")))
            self._send(status, hdrs, out)

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

    return Handler


def exchange_jwt_lifetime():
    """The lifetime idpyoidc 5.0.0 hard-codes for access tokens minted in an
    exchange grant (ExchangeGrant.__init__ overwrites any configured rule)."""
    try:
        return ExchangeGrant().usage_rules["access_token"]["expires_in"]
    except Exception:  # noqa: BLE001
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exchange-audiences", default="https://api.example.com",
                   help="comma-separated audiences/resources the token-exchange policy allows; "
                        "for identity chaining, include the other AS's issuer URL")
    p.add_argument("--token-lifetime", type=int, default=300,
                   help="access-token lifetime in seconds (default 300). Subject tokens from "
                        "/test/subject-token get it, and idpyoidc reports the subject token's "
                        "remaining lifetime as the expires_in of an exchange. The exchanged "
                        "JWT's exp is fixed by idpyoidc at iat+60 (ExchangeGrant), so with "
                        "the default exp is shorter than expires_in.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0,
                   help="port to bind (default 0: ephemeral). A restart on the same port "
                        "lets a test take the server away and bring it back.")
    p.add_argument("--basic-secret", default=None, help="fixed secret for tokex-basic (default random)")
    p.add_argument("--post-secret", default=None, help="fixed secret for tokex-post (default random)")
    p.add_argument("--assertion-audience", choices=["endpoint", "issuer"], default="endpoint",
                   help="the private_key_jwt assertion aud the token endpoint accepts: its own "
                        "URL (the library's default) or the issuer identifier")
    p.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(), 30),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # SIGTERM/SIGINT: before serving, unwind at once; while serving, stop the
    # serve_forever loop (shutdown() blocks, so call it from another thread).
    state = {"httpd": None}

    def stop(signum, frame):
        LOG.info("signal %s: shutting down", signum)
        httpd = state["httpd"]
        if httpd is None:
            raise SystemExit(0)
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    audiences = [a.strip() for a in args.exchange_audiences.split(",") if a.strip()]
    clients = {
        "tokex-basic": {"secret": args.basic_secret or secrets.token_urlsafe(24), "auth": "client_secret_basic"},
        "tokex-post": {"secret": args.post_secret or secrets.token_urlsafe(24), "auth": "client_secret_post"},
    }
    # tokex-jwt authenticates with private_key_jwt: the server trusts the public
    # half of a key made here and hands the private half to the test (PKCS#8 PEM).
    jwt_key = new_ec_key("P-256")
    clients["tokex-jwt"] = {
        "secret": secrets.token_urlsafe(24), "auth": "private_key_jwt",
        "jwk": jwt_key.serialize(private=False),
        "private_key_pem": jwt_key.priv_key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
    }
    for info in clients.values():
        info.update(grant_types=[TOKEN_EXCHANGE_GRANT], scopes=EXCHANGE_CLIENT_SCOPES)
    all_clients = dict(clients)
    all_clients[SUBJECT_CLIENT_ID] = {
        "secret": secrets.token_urlsafe(24), "auth": "client_secret_basic",
        "grant_types": ["authorization_code"], "scopes": SUBJECT_CLIENT_SCOPES,
    }

    workdir = tempfile.mkdtemp(prefix="idpy-interop-")
    httpd = None
    try:
        # Bind first: the issuer URL needs the ephemeral port.
        httpd = ThreadingHTTPServer((args.host, args.port), BaseHTTPRequestHandler)
        httpd.daemon_threads = True
        port = httpd.server_address[1]
        issuer = f"http://{args.host}:{port}"

        server = build_server(issuer, workdir, audiences, args.token_lifetime, all_clients,
                              args.assertion_audience)
        binding = Binding(server, issuer, all_clients)
        httpd.RequestHandlerClass = make_handler(binding)

        startup = {
            "port": port,
            "issuer": issuer,
            "token_endpoint": issuer + "/token",
            "introspection_endpoint": issuer + "/introspection",
            "authorization_endpoint": issuer + "/authorization",
            "jwks_uri": issuer + JWKS_PATH,
            "metadata_endpoint": issuer + "/.well-known/oauth-authorization-server",
            "subject_token_endpoint": issuer + "/test/subject-token",
            "stats_endpoint": issuer + "/test/stats",
            "exchange_audiences": audiences,
            "token_lifetime": args.token_lifetime,
            "exchange_jwt_lifetime": exchange_jwt_lifetime(),
            "scopes": {"exchange_clients": EXCHANGE_CLIENT_SCOPES,
                       "subject_client": SUBJECT_CLIENT_SCOPES,
                       "subject_token_default": DEFAULT_SUBJECT_SCOPE},
            "assertion_audience": args.assertion_audience,
            "clients": {cid: {k: c[k] for k in ("secret", "auth", "private_key_pem") if k in c}
                        for cid, c in clients.items()},
        }
        state["httpd"] = httpd
        sys.stdout.write(json.dumps(startup) + "\n")
        sys.stdout.flush()
        httpd.serve_forever(poll_interval=0.2)
    finally:
        if httpd is not None:
            httpd.server_close()
        shutil.rmtree(workdir, ignore_errors=True)
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
