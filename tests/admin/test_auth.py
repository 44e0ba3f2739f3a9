"""Who may use the panel: sessions, CSRF, the login rate limit, cookie flags, headers."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from integrations.web.admin import auth
from tests.admin.conftest import PASSWORD, USERNAME, admin_settings, build_app, form_token, log_in

# Reachable without a session, on purpose: the login form and its post, and the panel's own
# CSS/JS (no data). Everything else under /admin must refuse.
PUBLIC = {("GET", "/admin/login"), ("POST", "/admin/login")}


def admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves under /admin, path parameters filled in.

    Read through FastAPI's ``iter_route_contexts``: included routers are lazy
    (``app.routes`` holds the routers, not their routes).
    """
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        if isinstance(route, Mount):
            if path.startswith("/admin"):
                assert path == "/admin/static", f"unexpected mount under /admin: {path}"
            continue
        if not path.startswith("/admin"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in sorted(context.methods or ()):
            if (method, path) not in PUBLIC:
                found.append((method, concrete))
    return found


def test_the_route_list_covers_the_panel(app: FastAPI) -> None:
    routes = admin_routes(app)
    paths = {path for _, path in routes}
    for page in ("/admin", "/admin/api/dashboard", "/admin/conversations",
                 "/admin/conversations/1", "/admin/moderation", "/admin/persona",
                 "/admin/users", "/admin/workers", "/admin/settings", "/admin/audit"):
        assert page in paths
    assert ("POST", "/admin/logout") in routes
    assert len([r for r in routes if r[0] == "POST"]) >= 10


def test_every_admin_route_refuses_without_a_session(app: FastAPI, http: TestClient) -> None:
    for method, path in admin_routes(app):
        response = http.request(method, path)
        if path.startswith("/admin/api/"):
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == 401
        else:
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/admin/login?next="), (method, path)


def test_a_forged_or_expired_session_cookie_is_refused(app: FastAPI, http: TestClient) -> None:
    signer = app.state.admin.signer
    for cookie in ("garbage", signer.sign("no-such-session").decode(),
                   "x" + signer.sign("no-such-session").decode()):
        http.cookies.set(auth.SESSION_COOKIE, cookie, path="/admin")
        assert http.get("/admin/api/dashboard").status_code == 401
        http.cookies.clear()


def test_html_pages_redirect_to_the_login_page_and_back(http: TestClient) -> None:
    response = http.get("/admin/users?query=ada")
    assert response.status_code == 303
    login_page = http.get(response.headers["location"])
    assert 'name="next" value="/admin/users?query=ada"' in login_page.text
    answer = log_in(http, next_path="/admin/users?query=ada")
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/users?query=ada"


def test_the_login_never_redirects_off_the_panel(http: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/admin", "/elsewhere",
                   "/admin\\@evil.example"):
        answer = log_in(http, next_path=target)
        assert answer.headers["location"] == "/admin", target
        http.cookies.clear()


def test_wrong_password_is_refused(http: TestClient) -> None:
    for username, password in ((USERNAME, "wrong"), (USERNAME, PASSWORD + " "),
                               ("someone", PASSWORD), ("", "")):
        response = log_in(http, username, password)
        assert response.status_code == 401
        assert "Wrong username or password." in response.text
        assert auth.SESSION_COOKIE not in response.cookies
    assert http.get("/admin/api/dashboard").status_code == 401


def test_login_and_logout(http: TestClient, store: object) -> None:
    response = log_in(http)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    assert http.get("/admin").status_code == 200
    token = form_token(http.get("/admin").text)
    out = http.post("/admin/logout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"].startswith("/admin/login")
    assert http.get("/admin/api/dashboard").status_code == 401
    assert http.get("/admin").status_code == 303
    from assistant.store.audit import AuditLog

    actions = [entry.action for entry in AuditLog(store).recent(10)]  # type: ignore[arg-type]
    assert actions[:2] == ["logout", "login"]


def test_logging_out_ends_the_session_on_the_server(http: TestClient) -> None:
    log_in(http)
    kept = http.cookies.get(auth.SESSION_COOKIE)
    http.post("/admin/logout", data={"csrf_token": form_token(http.get("/admin").text)})
    http.cookies.set(auth.SESSION_COOKIE, kept or "", path="/admin")  # a copied cookie, replayed
    assert http.get("/admin/api/dashboard").status_code == 401


def test_login_failures_are_limited_per_username_but_not_for_known_addresses(
        app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False, client=("10.0.1.1", 1000)) as known:
        assert log_in(known).status_code == 303  # the admin's usual address
    # Guessing spread over many addresses, each under the per-address limit.
    for number in range(auth.LOGIN_FAILURES_PER_USERNAME.capacity):
        with TestClient(app, follow_redirects=False,
                        client=(f"10.0.2.{number}", 1000)) as guesser:
            assert log_in(guesser, USERNAME, "wrong").status_code == 401
    with TestClient(app, follow_redirects=False, client=("10.0.3.1", 1000)) as stranger:
        refused = log_in(stranger, USERNAME, PASSWORD)  # even the right password
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        assert "Too many attempts" in refused.text
        assert auth.SESSION_COOKIE not in refused.cookies
        assert log_in(stranger, "another-name", "wrong").status_code == 401
    with TestClient(app, follow_redirects=False, client=("10.0.1.1", 1000)) as known:
        assert log_in(known).status_code == 303  # a known-good address is not locked out


def test_login_failures_are_limited_per_address(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False, client=("10.0.0.7", 1000)) as http:
        for number in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity):
            assert log_in(http, f"name-{number}", "wrong").status_code == 401
        assert log_in(http, USERNAME, PASSWORD).status_code == 429
    with TestClient(app, follow_redirects=False, client=("10.0.0.8", 1000)) as other:
        assert log_in(other).status_code == 303


def test_forwarded_for_counts_only_behind_a_trusted_proxy(
        tmp_path: Path, server: fakeredis.FakeServer) -> None:
    settings = admin_settings(tmp_path, ADMIN_TRUSTED_PROXIES="10.0.0.1")
    app, _ = build_app(settings, server)
    # Through the proxy each client has its own bucket...
    with TestClient(app, follow_redirects=False, client=("10.0.0.1", 1000)) as proxy:
        for number in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity):
            proxy.headers["X-Forwarded-For"] = f"192.0.2.{number}"
            assert log_in(proxy, f"n{number}", "wrong").status_code == 401
        proxy.headers["X-Forwarded-For"] = "192.0.2.200"
        assert log_in(proxy).status_code == 303
    # ...while a direct client cannot pick its address with the header.
    with TestClient(app, follow_redirects=False, client=("10.0.0.9", 1000)) as direct:
        for number in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity):
            direct.headers["X-Forwarded-For"] = f"198.51.100.{number}"
            assert log_in(direct, f"m{number}", "wrong").status_code == 401
        assert log_in(direct).status_code == 429


def test_login_without_its_csrf_token_is_refused(http: TestClient) -> None:
    http.get("/admin/login")
    response = http.post("/admin/login", data={"username": USERNAME, "password": PASSWORD})
    assert response.status_code == 403
    response = http.post("/admin/login", data={"username": USERNAME, "password": PASSWORD,
                                               "csrf_token": "guessed"})
    assert response.status_code == 403
    assert auth.SESSION_COOKIE not in response.cookies


def test_state_changing_requests_without_the_csrf_token_are_refused(
        app: FastAPI, logged_in: TestClient, csrf: str) -> None:
    posts = [path for method, path in admin_routes(app) if method == "POST"]
    for path in posts:
        for kwargs in ({}, {"data": {"csrf_token": "wrong"}},
                       {"headers": {auth.CSRF_HEADER: "wrong"}},
                       {"data": {"csrf_token": ""}}):
            response = logged_in.post(path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 403, (path, kwargs, response.status_code)
    # The session survived all that: the right token still works.
    assert logged_in.post("/admin/logout", headers={auth.CSRF_HEADER: csrf}).status_code == 303


def test_another_sessions_csrf_token_is_refused(app: FastAPI, logged_in: TestClient,
                                                csrf: str) -> None:
    with TestClient(app, follow_redirects=False) as other:
        log_in(other)
        other_token = form_token(other.get("/admin/settings").text)
    assert other_token != csrf
    response = logged_in.post("/admin/logout", data={"csrf_token": other_token})
    assert response.status_code == 403


def set_cookie_header(response: object, name: str) -> str:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    (found,) = [header for header in headers if header.startswith(name + "=")]
    return str(found)


def test_the_session_cookie_is_httponly_samesite_and_scoped(http: TestClient) -> None:
    cookie = set_cookie_header(log_in(http), auth.SESSION_COOKIE).lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/admin" in cookie
    assert "secure" not in [part.strip() for part in cookie.split(";")[1:]]  # plain HTTP here
    assert "max-age=" in cookie


def test_the_session_cookie_is_secure_over_https(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as https:
        cookie = set_cookie_header(log_in(https), auth.SESSION_COOKIE).lower()
    assert "; secure" in cookie and "httponly" in cookie


def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(
        tmp_path: Path, server: fakeredis.FakeServer) -> None:
    settings = admin_settings(tmp_path, ADMIN_TRUSTED_PROXIES="10.0.0.1")
    app, _ = build_app(settings, server)
    with TestClient(app, follow_redirects=False, client=("10.0.0.1", 1),
                    headers={"X-Forwarded-Proto": "https"}) as proxied:
        page = proxied.get("/admin/login")
        login_cookie = set_cookie_header(page, auth.LOGIN_COOKIE)
        assert "; secure" in login_cookie.lower()
        # httpx keeps a Secure cookie from a plain-HTTP request: hand it back as the browser
        # (talking HTTPS to the proxy) would.
        answer = proxied.post(
            "/admin/login", headers={"Cookie": login_cookie.split(";")[0]},
            data={"csrf_token": form_token(page.text), "username": USERNAME,
                  "password": PASSWORD})
        assert "; secure" in set_cookie_header(answer, auth.SESSION_COOKIE).lower()
    with TestClient(app, follow_redirects=False, client=("10.0.0.2", 1),
                    headers={"X-Forwarded-Proto": "https"}) as direct:
        assert "; secure" not in set_cookie_header(log_in(direct), auth.SESSION_COOKIE).lower()


def test_security_headers_on_every_admin_response(http: TestClient) -> None:
    for path in ("/admin/login", "/admin", "/admin/api/dashboard", "/admin/static/admin.css",
                 "/admin/nowhere"):
        response = http.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


def test_pages_carry_no_inline_script_or_style(logged_in: TestClient) -> None:
    for path in ("/admin/login", "/admin", "/admin/workers", "/admin/settings", "/admin/audit",
                 "/admin/conversations", "/admin/moderation", "/admin/persona", "/admin/users"):
        html = logged_in.get(path).text
        assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == [], path
        assert "<style" not in html and " style=" not in html, path
        assert re.search(r"\son[a-z]+=", html) is None, path


@pytest.mark.parametrize("password", ["", "   "])
def test_the_panel_stays_off_without_a_password(tmp_path: Path, server: fakeredis.FakeServer,
                                                password: str) -> None:
    app, _ = build_app(admin_settings(tmp_path, ADMIN_PASSWORD=password), server)
    with TestClient(app, follow_redirects=False) as http:
        page = http.get("/admin/login")
        assert "The admin panel is off" in page.text and 'name="password"' not in page.text
        assert http.post("/admin/login", data={"username": USERNAME, "password": password}
                         ).status_code == 503
        assert http.get("/admin").status_code == 503


def test_a_placeholder_password_is_refused_outside_development(tmp_path: Path) -> None:
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match="ADMIN_PASSWORD"):
        admin_settings(tmp_path, ADMIN_PASSWORD="changeme", ASSISTANT_ENV="production")
    settings = admin_settings(tmp_path, ADMIN_PASSWORD="changeme", ASSISTANT_ENV="development")
    assert auth.password_problem(settings) is None


def test_an_empty_session_secret_gets_a_random_one(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    first = auth.session_signer(admin_settings(tmp_path, ADMIN_SESSION_SECRET=""))
    second = auth.session_signer(admin_settings(tmp_path, ADMIN_SESSION_SECRET=""))
    assert "ADMIN_SESSION_SECRET is empty" in caplog.text
    assert first.sign("x") != second.sign("x")


def test_a_successful_login_clears_earlier_failures(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as http:
        for _ in range(3):
            for _ in range(auth.LOGIN_FAILURES_PER_ADDRESS.capacity - 1):
                assert log_in(http, USERNAME, "wrong").status_code == 401
            assert log_in(http).status_code == 303
            http.cookies.clear()


def test_the_panel_never_writes_data_as_html() -> None:
    """A guard on the sources: no ``|safe`` in templates, no ``innerHTML`` in our scripts."""
    from integrations.web.admin.core import STATIC_DIR, TEMPLATES_DIR

    for template in TEMPLATES_DIR.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert "|safe" not in text.replace(" ", ""), template.name
        assert "autoescape false" not in text, template.name
    for script in STATIC_DIR.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (script.name, sink)


def test_redis_down_is_a_clear_503_not_a_crash(tmp_path: Path) -> None:
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    app, _ = build_app(admin_settings(tmp_path), fakeredis.FakeServer())
    down = redis_lib.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    app.state.web.client = down
    with TestClient(app, follow_redirects=False) as http:
        http.cookies.set(auth.SESSION_COOKIE, app.state.admin.signer.sign("x").decode(),
                         path="/admin")
        page = http.get("/admin")
        assert page.status_code == 503 and "Redis is unavailable" in page.text
        assert http.get("/admin/api/dashboard").status_code == 503
        assert log_in(http).status_code == 503


def test_changing_the_password_ends_earlier_sessions(tmp_path: Path,
                                                     server: fakeredis.FakeServer) -> None:
    before, _ = build_app(admin_settings(tmp_path), server)
    with TestClient(before, follow_redirects=False) as http:
        log_in(http)
        cookie = http.cookies.get(auth.SESSION_COOKIE) or ""
        assert http.get("/admin/api/dashboard").status_code == 200
    # The same Redis and session secret; a restart with a new password.
    after, _ = build_app(admin_settings(tmp_path, ADMIN_PASSWORD="a brand new password"),
                         server)
    with TestClient(after, follow_redirects=False) as http:
        http.cookies.set(auth.SESSION_COOKIE, cookie, path="/admin")
        assert http.get("/admin/api/dashboard").status_code == 401
