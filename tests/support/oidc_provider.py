"""A real OpenID Connect provider for the tests, built on Authlib's authorization server (Flask).

It speaks discovery, the authorization code flow with PKCE (S256 required of every client), the token
endpoint (client_secret_basic or _post), userinfo and JWKS (RS256), and has a login page a person (or
Playwright) fills in. Run as its own process:

    python -m tests.support.oidc_provider --port 5123 --config provider.json

`provider.json`: {"clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
                  "users": {"dana": {"password", "sub", "email", "email_verified", "groups", ...}}}

Test-only control endpoints under /_control/ add users and clients, and make the provider misbehave on
purpose (issue the next ID token with another nonce) so the relying party's checks can be seen to work.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo, UserInfoEndpoint
from flask import Flask, Response, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from markupsafe import escape

KID = "test-signing-key"
USER_CLAIMS = ("email", "email_verified", "name", "given_name", "family_name", "preferred_username", "groups")


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    client_metadata: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile", "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class User:
    username: str
    password: str
    claims: dict[str, Any]

    @property
    def sub(self) -> str:
        return str(self.claims["sub"])


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None

    def is_expired(self) -> bool:
        return time.time() > self.auth_time + 300


@dataclass
class Token:
    access_token: str
    client: Client
    user: User
    scope: str
    issued_at: float = field(default_factory=time.time)
    expires_in: int = 3600

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() > self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> User:
        return self.user

    def get_client(self) -> Client:
        return self.client


class Store:
    """The provider's whole state, in memory, behind one lock (Flask serves requests on threads)."""

    def __init__(self, issuer: str, config: dict[str, Any]) -> None:
        self.issuer = issuer
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.users: dict[str, User] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: dict[str, Token] = {}
        self.next_nonce: str | None = None
        self.key = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig", "alg": "RS256"})
        for client in config.get("clients", []):
            self.add_client(client)
        self.add_users(config.get("users", {}))

    def add_client(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.clients[data["client_id"]] = Client(
                data["client_id"], data["client_secret"], list(data["redirect_uris"])
            )

    def add_users(self, users: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            for username, data in users.items():
                claims = {k: v for k, v in data.items() if k != "password"}
                claims.setdefault("sub", f"sub-{username}")
                claims.setdefault("preferred_username", username)
                self.users[username] = User(username, data["password"], claims)

    def take_next_nonce(self) -> str | None:
        with self.lock:
            nonce, self.next_nonce = self.next_nonce, None
            return nonce


def user_info(store: Store, user: User, scope: str) -> UserInfo:
    scopes = scope.split()
    info = {"sub": user.sub}
    for claim in USER_CLAIMS:
        if claim not in user.claims:
            continue
        if claim.startswith("email") and "email" not in scopes:
            continue
        if claim in ("name", "given_name", "family_name", "preferred_username") and "profile" not in scopes:
            continue
        info[claim] = user.claims[claim]
    return UserInfo(info)


def create_app(issuer: str, config: dict[str, Any]) -> Flask:
    store = Store(issuer, config)
    app = Flask(__name__)
    app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = True

    def query_client(client_id: str) -> Client | None:
        return store.clients.get(client_id)

    def save_token(token: dict[str, Any], req: Any) -> None:
        with store.lock:
            store.tokens[token["access_token"]] = Token(
                token["access_token"], req.client, req.user, token.get("scope", "")
            )

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            data = req.payload.data
            with store.lock:
                store.codes[code] = AuthorizationCode(
                    code=code,
                    client_id=req.client.client_id,
                    redirect_uri=req.payload.redirect_uri,
                    scope=req.payload.scope,
                    user=req.user,
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

        def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
            item = store.codes.get(code)
            if item and item.client_id == client.client_id and not item.is_expired():
                return item
            return None

        def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
            with store.lock:
                store.codes.pop(authorization_code.code, None)  # single use

        def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
            return authorization_code.user

    class RequiredS256(CodeChallenge):
        """PKCE for every client, confidential ones included, and only S256."""

        SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

        def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
            data = grant.request.payload.data
            if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("This provider requires PKCE with code_challenge_method=S256.")
            super().validate_code_challenge(grant, redirect_uri)

    class OpenID(OpenIDCode):
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return any(c.nonce == nonce for c in store.codes.values())

        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return store.key

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": KID}

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            return {"iss": store.issuer, "aud": [client.client_id]}

        def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict[str, Any]:
            claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
            if (forced := store.take_next_nonce()) is not None:
                claims["nonce"] = forced  # misbehaving on purpose, when a test asked for it
            return claims

        def generate_user_info(self, user: User, scope: str) -> UserInfo:
            return user_info(store, user, scope)

    class AccessTokens(BearerTokenValidator):
        def authenticate_token(self, token_string: str) -> Token | None:
            return store.tokens.get(token_string)

    class UserInfoView(UserInfoEndpoint):
        def get_issuer(self) -> str:
            return store.issuer

        def generate_user_info(self, user: User, scope: str) -> UserInfo:
            return user_info(store, user, scope)

        def resolve_private_key(self) -> RSAKey:
            return store.key

    protector = ResourceProtector()
    protector.register_token_validator(AccessTokens())
    server.register_grant(CodeGrant, [RequiredS256(required=True), OpenID(require_nonce=True)])
    server.register_endpoint(UserInfoView(resource_protector=protector))

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return jsonify(
            {
                "issuer": store.issuer,
                "authorization_endpoint": f"{store.issuer}/authorize",
                "token_endpoint": f"{store.issuer}/token",
                "userinfo_endpoint": f"{store.issuer}/userinfo",
                "jwks_uri": f"{store.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "groups"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", *USER_CLAIMS],
            }
        )

    @app.get("/jwks")
    def jwks() -> Response:
        return jsonify(KeySet([store.key]).as_dict(private=False))

    def login_page(error: str = "", status: int = 200) -> Response:
        problem = f'<p role="alert" class="error">{escape(error)}</p>' if error else ""
        html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Test Identity Provider</title></head><body>
<h1>Test Identity Provider</h1>{problem}
<form method="post" action="{escape(request.full_path)}">
<label for="username">Username</label> <input id="username" name="username" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password">
<button type="submit">Sign in</button>
</form></body></html>"""
        return Response(html, status=status, mimetype="text/html")

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Response:
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return Response(f"invalid authorization request: {escape(error.description)}", status=400)
        if request.method == "GET":
            return login_page()
        user = store.users.get(request.form.get("username", ""))
        if user is None or not secrets.compare_digest(user.password, request.form.get("password", "")):
            return login_page("Wrong username or password.", status=401)
        return server.create_authorization_response(grant_user=user, grant=grant)

    @app.post("/token")
    def token() -> Response:
        return server.create_token_response()

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo() -> Response:
        return server.create_endpoint_response("userinfo")

    @app.post("/_control/users")
    def control_users() -> Response:
        store.add_users(request.get_json())
        return jsonify({"ok": True})

    @app.post("/_control/clients")
    def control_clients() -> Response:
        store.add_client(request.get_json())
        return jsonify({"ok": True})

    @app.post("/_control/next-nonce")
    def control_next_nonce() -> Response:
        with store.lock:
            store.next_nonce = request.get_json()["nonce"]
        return jsonify({"ok": True})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON file with clients and users")
    args = parser.parse_args()
    with open(args.config) as f:
        config = json.load(f)
    issuer = f"http://127.0.0.1:{args.port}"
    create_app(issuer, config).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
